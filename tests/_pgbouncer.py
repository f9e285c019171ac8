"""A throwaway PgBouncer in front of a server, for tests (POSIX only).

`PgBouncer` writes a configuration into a fresh temporary directory, starts
``pgbouncer`` on a free port of 127.0.0.1 (as the unprivileged account the
throwaway servers use when the tests run as root: PgBouncer refuses to run as
root), waits until it accepts connections, and on leaving the ``with`` block
stops it and deletes the directory. Every login is trusted, as on a
`TempServer` without a password.

`RenamingProxy` models what Debian's PgBouncer (1.18) cannot show: the renaming of
prepared statements by PgBouncer 1.21 and later.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from unipool._pgbin import unprivileged_account
from unipool._tempserver import _accepts_tcp, _free_port

_HOST = "127.0.0.1"
_PLACES = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer")


def find_pgbouncer() -> str | None:
    """The ``pgbouncer`` executable: ``$UNIPOOL_PGBOUNCER``, on ``PATH``, or in an sbin."""
    given = os.environ.get("UNIPOOL_PGBOUNCER")
    if given:
        return given
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((p for p in _PLACES if os.access(p, os.X_OK)), None)


class PgBouncer:
    """PgBouncer on a free port, serving database ``dbname`` of the server at ``port``.

    ``settings`` go into the ``[pgbouncer]`` section after the defaults
    (``pool_mode = transaction``, ``default_pool_size = 3``, ...).
    """

    def __init__(
        self,
        server_port: int,
        dbname: str = "test",
        settings: Mapping[str, str] | None = None,
        executable: str | None = None,
    ) -> None:
        found = executable or find_pgbouncer()
        if found is None:
            raise RuntimeError("pgbouncer is not installed")
        self._executable = found
        self._server_port = server_port
        self._dbname = dbname
        self._settings = {
            "pool_mode": "transaction",
            "default_pool_size": "3",
            "min_pool_size": "0",
            "reserve_pool_size": "0",
            "max_client_conn": "500",
            "auth_type": "trust",
            "ignore_startup_parameters": "extra_float_digits,options",
            "server_check_delay": "30",
            "log_connections": "0",
            "log_disconnections": "0",
            **(settings or {}),
        }
        self._run_as = unprivileged_account()
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port PgBouncer listens on."""
        if self._port is None:
            raise RuntimeError("PgBouncer has not been started")
        return self._port

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise RuntimeError("PgBouncer has not been started")
        return self._dir / "pgbouncer.log"

    def dsn(self, user: str = "postgres") -> str:
        """A libpq URI for the served database through PgBouncer."""
        return f"postgresql://{user}@{_HOST}:{self.port}/{self._dbname}"

    def start(self) -> None:
        """Start PgBouncer and wait until it accepts connections."""
        directory = Path(tempfile.mkdtemp(prefix="unipool-pgbouncer-", dir="/tmp"))
        self._dir = directory
        try:
            os.chmod(directory, 0o755)
            (directory / "userlist.txt").write_text('"postgres" ""\n', encoding="ascii")
            if self._run_as is not None:
                os.chown(directory, self._run_as.uid, self._run_as.gid)
            for attempt in range(3):  # another process may take the free port first
                self._port = _free_port()
                self._write_config()
                if self._launch():
                    return
                if attempt == 2 or "in use" not in self._log_tail():
                    raise RuntimeError("pgbouncer did not start" + self._log_tail())
        except BaseException:
            self.cleanup()
            raise

    def _write_config(self) -> None:
        directory = self._dir
        assert directory is not None
        settings = {
            "listen_addr": _HOST,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_file": str(directory / "userlist.txt"),
            "logfile": str(directory / "pgbouncer.log"),
            **self._settings,
        }
        lines = [
            "[databases]",
            f"{self._dbname} = host={_HOST} port={self._server_port} dbname={self._dbname}",
            "[pgbouncer]",
            *(f"{key} = {value}" for key, value in settings.items()),
        ]
        (directory / "pgbouncer.ini").write_text("\n".join(lines) + "\n", encoding="ascii")

    def _launch(self) -> bool:
        """Run pgbouncer; True once it accepts connections, False if it exited."""
        directory = self._dir
        assert directory is not None
        user = group = None
        if self._run_as is not None:
            user, group = self._run_as.uid, self._run_as.gid
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self._proc = subprocess.Popen(
            [self._executable, str(directory / "pgbouncer.ini")],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
        deadline = time.monotonic() + 10.0
        while not _accepts_tcp(self.port):
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if time.monotonic() > deadline:
                raise RuntimeError("pgbouncer does not accept connections" + self._log_tail())
            time.sleep(0.01)  # a process elsewhere: nothing to await
        return True

    def stop(self) -> None:
        """Stop PgBouncer (immediate shutdown; a no-op if it does not run)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def cleanup(self) -> None:
        """Stop PgBouncer and delete its directory."""
        try:
            self.stop()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self._port = None

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _log_tail(self, lines: int = 20) -> str:
        if self._dir is None:
            return ""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            tail = "\n".join(text.splitlines()[-lines:])
            if tail:
                return f"\n--- tail of {self.log_path} ---\n{tail}"
        return ""


_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104
_STATEMENT_PREFIX = b"PGBOUNCER_"


class RenamingProxy:
    """A TCP proxy to a server that renames clients' named prepared statements, as
    PgBouncer 1.21 and later does with ``max_prepared_statements`` > 0.

    Only the renaming is modelled: each client connection gets a server connection
    of its own, so a statement the client prepares is there when it executes it, and an
    SQL ``DEALLOCATE`` of the name the client gave finds nothing.
    """

    def __init__(self, server_host: str, server_port: int) -> None:
        self._server = (server_host, server_port)
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        assert self._listener is not None
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def host(self) -> str:
        return _HOST

    def __enter__(self) -> RenamingProxy:
        self._listener = socket.create_server((_HOST, 0))
        self._spawn(self._accept, self._listener)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            sockets = [s for s in (self._listener, *self._sockets) if s is not None]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._server)
            with self._lock:
                self._sockets += [client, server]
            self._spawn(self._to_server, client, server)
            self._spawn(self._to_client, server, client)

    @staticmethod
    def _to_client(server: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)

    @classmethod
    def _to_server(cls, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError, EOFError):
            while True:  # untyped packets: TLS or GSS requests (answered by one byte), startup
                head = _read(client, 8)
                length, code = struct.unpack("!ii", head)
                server.sendall(head + _read(client, length - 8))
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    break
            while True:
                kind = _read(client, 1)
                (length,) = struct.unpack("!i", _read(client, 4))
                body = cls._renamed(kind, _read(client, length - 4))
                server.sendall(kind + struct.pack("!i", len(body) + 4) + body)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    @staticmethod
    def _renamed(kind: bytes, body: bytes) -> bytes:
        """A Parse, Bind, Describe or Close message with the statement's name changed."""

        def rename(name: bytes) -> bytes:
            return _STATEMENT_PREFIX + name if name else name

        if kind == b"P":
            name, rest = body.split(b"\0", 1)
            return rename(name) + b"\0" + rest
        if kind == b"B":
            portal, name, rest = body.split(b"\0", 2)
            return portal + b"\0" + rename(name) + b"\0" + rest
        if kind in (b"D", b"C") and body[:1] == b"S":
            return b"S" + rename(body[1:-1]) + b"\0"
        return body


def _read(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes; EOFError if the peer closed first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
