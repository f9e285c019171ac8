"""A throwaway PostgreSQL server for tests, the demo and benchmarks (POSIX only).

Public as `unipool.testing` (see docs/testing.md).

``TempServer`` runs ``initdb`` into a fresh temporary directory, starts the server on a free
TCP port of 127.0.0.1 with durability turned off for speed, and deletes everything again on
``cleanup()``, on leaving a ``with`` block, or when the Python process exits. With ``ssl=True``
it serves TLS with a certificate for ``localhost`` and ``127.0.0.1`` from a certificate
authority of its own (made with the ``openssl`` command), so clients can verify it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from ._pgbin import (
    ServerBinariesNotFound,
    find_pg_bindir,
    runnable_bindir,
    supports_ssl,
    unprivileged_account,
)

__all__ = [
    "CertificateAuthority",
    "ServerBinariesNotFound",
    "StopMode",
    "TempServer",
    "find_pg_bindir",
]

StopMode = Literal["smart", "fast", "immediate"]

_HOST = "127.0.0.1"
_SUPERUSER = "postgres"
_LOG_NAME = "postgresql.log"
_DEFAULT_SETTINGS: dict[str, str] = {
    "listen_addresses": _HOST,
    "max_connections": "300",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "jit": "off",
    "logging_collector": "off",
    "log_destination": "stderr",
    "log_min_messages": "warning",
    "log_min_error_statement": "error",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "lc_messages": "C",
    "timezone": "UTC",
}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")


def _free_port() -> int:
    """A free port below the system's ephemeral range: no outgoing connection can take
    it as its local port while the server is stopped (a restart could not bind it)."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 16384), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((_HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        found: int = sock.getsockname()[1]
        return found


def _ephemeral_low() -> int:
    """The first port of the range outgoing connections get theirs from."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152  # IANA's dynamic range: macOS, BSD, Windows


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _conf_line(name: str, value: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid setting name: {name!r}")
    if "\n" in value or "\r" in value:
        raise ValueError(f"setting {name!r} has a line break in its value")
    quoted = value.replace("\\", "\\\\").replace("'", "''")
    return f"{name} = '{quoted}'\n"


_SERVER_NAMES = ("DNS:localhost", f"IP:{_HOST}")


@dataclass(frozen=True)
class CertificateAuthority:
    """A throwaway certificate authority: its certificate (``cert``) and private key."""

    cert: Path
    key: Path

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], name: str = "unipool test CA"
    ) -> CertificateAuthority:
        """Make a new authority in *directory* (``<name>.crt`` and ``.key``, P-256, 2 days).

        Args:
            directory: An existing directory for the two files.
            name: The authority's common name; the files are named after it.

        Returns:
            The new authority.

        Raises:
            RuntimeError: The ``openssl`` command is missing or fails.
        """
        folder = Path(directory)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
        cert, key = folder / f"{stem}.crt", folder / f"{stem}.key"
        _openssl(
            "req", "-x509", "-new", "-nodes", *_EC_KEY, "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        os.chmod(key, 0o600)
        return cls(cert, key)

    def issue(
        self, directory: str | os.PathLike[str], names: Sequence[str] = _SERVER_NAMES
    ) -> tuple[Path, Path]:
        """Issue a server certificate, valid for 2 days.

        Args:
            directory: Where ``server.crt`` and ``server.key`` are written.
            names: Its subject alternative names (``DNS:...``, ``IP:...``); the first one is
                also its common name. By default ``localhost`` and ``127.0.0.1``.

        Returns:
            The paths of the certificate and of its private key.

        Raises:
            RuntimeError: The ``openssl`` command is missing or fails.
        """
        folder = Path(directory)
        cert, key, request = folder / "server.crt", folder / "server.key", folder / "server.csr"
        extensions = folder / "server.ext"
        extensions.write_text(
            f"subjectAltName={','.join(names)}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n",
            encoding="ascii",
        )
        common_name = names[0].partition(":")[2]
        _openssl(
            "req", "-new", "-nodes", *_EC_KEY, "-keyout", str(key), "-out", str(request),
            "-subj", f"/CN={common_name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
            "-extfile", str(extensions), "-out", str(cert),
        )  # fmt: skip
        request.unlink()
        extensions.unlink()
        os.chmod(key, 0o600)
        return cert, key


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make TLS certificates")
    proc = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()[-2000:]}")


_live: set[TempServer] = set()
_live_pid = os.getpid()


@atexit.register
def _stop_all() -> None:
    if os.getpid() != _live_pid:  # a forked child must not stop its parent's servers
        return
    for server in list(_live):
        with contextlib.suppress(Exception):
            server._cleanup("immediate")


class TempServer:
    """A throwaway PostgreSQL server in a temporary directory, superuser ``postgres``.

    It listens on a free port of 127.0.0.1 and has a database ``test``; nothing exists
    before `start()` (or entering a ``with`` block), and `cleanup()` (or leaving it, or the
    end of the process) deletes everything. Run as root, the server runs as the ``postgres``
    (else ``nobody``) account, since PostgreSQL refuses root.

    Args:
        password: Without it every login is trusted; with it, TCP logins need it (SCRAM),
            while unix-socket logins stay trusted.
        settings: Lines for ``postgresql.conf``, after the defaults (durability off, 300
            connections, UTC, messages in English).
        bindir: The directory of ``initdb``, ``pg_ctl`` and ``postgres``; by default
            `find_pg_bindir` looks for it at the first start.
        ssl: Accept TLS (and plain) connections, with a certificate for ``localhost`` and
            ``127.0.0.1`` from an authority of its own, whose certificate is
            `ssl_root_cert` (libpq's ``sslrootcert``).

    Raises:
        ValueError: A setting's name is not a valid name or its value holds a line break.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        settings: Mapping[str, str] | None = None,
        bindir: str | os.PathLike[str] | None = None,
        ssl: bool = False,
    ) -> None:
        self._password = password
        self._ssl = ssl
        self._settings = dict(_DEFAULT_SETTINGS)
        self._settings.update(settings or {})
        for name, value in self._settings.items():
            _conf_line(name, value)  # validate early
        self._bindir_arg = bindir
        self._bindir: Path | None = None
        self._exec_bindir: Path | None = None
        self._run_as = unprivileged_account()
        self._dir: Path | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        return f"<TempServer port={self._port} dir={self._dir}>"

    # -- properties --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return _HOST

    @property
    def password(self) -> str | None:
        """The superuser's password, or None when every login is trusted."""
        return self._password

    @property
    def ssl(self) -> bool:
        """Whether the server accepts TLS connections."""
        return self._ssl

    @property
    def ssl_root_cert(self) -> Path:
        """The certificate of the authority that issued the server's (``sslrootcert``)."""
        if not self._ssl:
            raise RuntimeError("the server was not made with ssl=True")
        return self.directory / "tls" / "ca.crt"

    @property
    def port(self) -> int:
        """The TCP port, fixed at the first `start()`.

        Raises:
            RuntimeError: The server has not been started.
        """
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def directory(self) -> Path:
        """The temporary directory (data directory, unix sockets, log).

        Raises:
            RuntimeError: The server has not been started.
        """
        if self._dir is None:
            raise RuntimeError("the server has not been started")
        return self._dir

    @property
    def data_dir(self) -> Path:
        """The data directory."""
        return self.directory / "data"

    @property
    def socket_dir(self) -> str:
        """The directory of the unix-domain sockets (usable as a libpq ``host``)."""
        return str(self.directory)

    @property
    def log_path(self) -> Path:
        """The server log file."""
        return self.directory / _LOG_NAME

    @property
    def bindir(self) -> Path:
        """The directory of the PostgreSQL binaries, found at the first use.

        Run as root, when the server's account cannot reach it (a virtual environment in a
        directory only root may enter), the server runs from a readable copy of it.

        Raises:
            ServerBinariesNotFound: No binaries were found (see `find_pg_bindir`).
        """
        if self._bindir is None:
            self._bindir = find_pg_bindir(self._bindir_arg)
        return self._bindir

    def dsn(
        self, user: str = _SUPERUSER, password: str | None = None, dbname: str = "postgres"
    ) -> str:
        """Return a libpq URI for a TCP connection.

        Args:
            user: The role to log in as.
            password: Its password, put into the URI (quoted) when given.
            dbname: The database; ``test`` is made for you, ``postgres`` always exists.

        Returns:
            ``postgresql://user[:password]@127.0.0.1:port/dbname``.

        Raises:
            RuntimeError: The server has not been started.
        """
        auth = urllib.parse.quote(user, safe="")
        if password is not None:
            auth += ":" + urllib.parse.quote(password, safe="")
        db = urllib.parse.quote(dbname, safe="")
        return f"postgresql://{auth}@{_HOST}:{self.port}/{db}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster if needed, start it and wait until it accepts connections.

        A no-op while it runs; after `stop()` it starts again on the same port and data.

        Raises:
            ServerBinariesNotFound: No binaries were found that the server could run.
            RuntimeError: ``initdb`` or the server failed (the message ends with the tail of
                the server log).
        """
        if self.is_running():
            return
        if self._dir is None:
            self._create()
        retries = 3 if self._port is None else 1
        for attempt in range(retries):
            if self._port is None:
                self._port = _free_port()
                self._append_conf({"port": str(self._port)})
            try:
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_path))
                break
            except RuntimeError as exc:
                # Another process may have taken the port between probing and binding.
                if attempt + 1 == retries or "already in use" not in str(exc):
                    raise
                self._port = None
        self._wait_tcp()

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server (a no-op if it is not running).

        Args:
            mode: ``pg_ctl``'s shutdown mode: ``smart`` waits for clients to leave, ``fast``
                disconnects them, ``immediate`` kills the server (as a crash would).

        Raises:
            RuntimeError: ``pg_ctl stop`` failed.
        """
        if self.is_running():
            self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop and start again, on the same port with the same data.

        Args:
            mode: The shutdown mode, as for `stop()`.

        Raises:
            RuntimeError: Stopping or starting failed.
        """
        self.stop(mode)
        self.start()

    def is_running(self) -> bool:
        """Return whether a server runs on this data directory."""
        if self._dir is None or not (self.data_dir / "postmaster.pid").exists():
            return False
        proc = self._run([str(self._bin() / "pg_ctl"), "status", "-D", str(self.data_dir)])
        return proc.returncode == 0

    def cleanup(self) -> None:
        """Stop the server if it runs and delete the temporary directory (idempotent)."""
        self._cleanup("fast")

    def __enter__(self) -> TempServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- internals ---------------------------------------------------------------------------

    def _bin(self) -> Path:
        """`bindir`, or a copy the server's account can run (see `runnable_bindir`)."""
        if self._exec_bindir is None:
            self._exec_bindir = runnable_bindir(self.bindir, self._run_as)
        return self._exec_bindir

    def _cleanup(self, mode: StopMode) -> None:
        try:
            self.stop(mode)
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self._port = None
            _live.discard(self)

    def _create(self) -> None:
        bindir = self._bin()  # fail before creating anything if there are no binaries
        base = "/tmp" if self._run_as is not None and os.path.isdir("/tmp") else None
        directory = Path(tempfile.mkdtemp(prefix="unipool-pg-", dir=base))
        self._dir = directory
        _live.add(self)
        try:
            os.chmod(directory, 0o755)
            if self._run_as is not None:
                os.chown(directory, self._run_as.uid, self._run_as.gid)
            self._initdb(bindir)
            self._append_conf({**self._settings, "unix_socket_directories": str(directory)})
            if self._ssl:
                if not supports_ssl(bindir):
                    raise RuntimeError(
                        f"the PostgreSQL server in {bindir} is built without TLS: "
                        "ssl=True needs one built with it (the system's, for instance)"
                    )
                self._append_conf(self._make_certificates())
            self._single_user(bindir, "CREATE DATABASE test;\n")
        except BaseException:
            self._cleanup("immediate")
            raise

    def _initdb(self, bindir: Path) -> None:
        args = [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", _SUPERUSER]
        args += ["-E", "UTF8", "--no-locale", "--no-sync"]
        if self._password is None:
            self._check([*args, "-A", "trust"], "initdb")
            return
        pwfile = self.directory / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self._password + "\n")
            if self._run_as is not None:
                os.chown(pwfile, self._run_as.uid, self._run_as.gid)
            auth = ["--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={pwfile}"]
            self._check([*args, *auth], "initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def _make_certificates(self) -> dict[str, str]:
        """Make the authority and the server's certificate; return the settings using them."""
        folder = self.directory / "tls"
        folder.mkdir(mode=0o755)
        authority = CertificateAuthority.create(folder, "ca")
        cert, key = authority.issue(folder)
        authority.key.unlink()  # nothing more is ever issued
        if self._run_as is not None:
            os.chown(key, self._run_as.uid, self._run_as.gid)
        for path in (authority.cert, cert):
            os.chmod(path, 0o644)
        return {"ssl": "on", "ssl_cert_file": str(cert), "ssl_key_file": str(key)}

    def _single_user(self, bindir: Path, sql: str) -> None:
        args = [str(bindir / "postgres"), "--single", "-D", str(self.data_dir), "postgres"]
        proc = self._run(args, stdin=sql)
        if proc.returncode != 0 or re.search(r"\b(ERROR|FATAL|PANIC):", proc.stderr):
            raise RuntimeError(f"single-user {sql.strip()!r} failed:\n{proc.stderr.strip()}")

    def _append_conf(self, settings: Mapping[str, str]) -> None:
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write("\n# unipool TempServer\n")
            f.writelines(_conf_line(name, value) for name, value in settings.items())

    def _pg_ctl(self, *args: str) -> None:
        cmd = [str(self._bin() / "pg_ctl"), args[0], "-D", str(self.data_dir), *args[1:]]
        self._check(cmd, f"pg_ctl {args[0]}", new_session=args[0] == "start")

    def _wait_tcp(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not _accepts_tcp(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server does not accept TCP connections on port {self.port}" + self._log_tail()
                )
            time.sleep(0.02)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if self._run_as is not None:
            env["HOME"] = str(self.directory)
        return env

    def _run(
        self, args: Sequence[str], *, stdin: str | None = None, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        user: int | None = None
        group: int | None = None
        extra_groups: list[int] | None = None
        if self._run_as is not None:
            user, group, extra_groups = self._run_as.uid, self._run_as.gid, []
        try:
            return subprocess.run(
                args,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                cwd=self.directory,
                env=self._env(),
                timeout=120,
                start_new_session=new_session,
                check=False,
                user=user,
                group=group,
                extra_groups=extra_groups,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(
                f"running {Path(args[0]).name} failed: {exc}" + self._log_tail()
            ) from exc

    def _check(self, args: Sequence[str], what: str, *, new_session: bool = False) -> None:
        proc = self._run(args, new_session=new_session)
        if proc.returncode != 0:
            output = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
            raise RuntimeError(
                f"{what} failed with exit code {proc.returncode}: {output}" + self._log_tail()
            )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- tail of {self.log_path} ---\n{tail}" if tail else ""
