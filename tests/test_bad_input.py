"""Bad input fails fast, with a distinct error, and without a retry storm: every backend, mode.

The table these tests hold the pool to is in docs/errors.md. Servers that refuse, hang up
or never answer are sockets of this test on 127.0.0.1; a wrong password has its test in
test_outage.py (it needs a server with passwords).
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import unipool
from tests._modes import in_thread, open_pool
from unipool._core.policy import BACKOFF_FACTOR, BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_SPREAD
from unipool._dsn import parse_dsn

SECRET = "hunter22"


# -- at unipool.connect(): no I/O, a ValueError naming the problem -------------------------

MALFORMED = [
    (f"mysql://u:{SECRET}@h/d", "unknown scheme 'mysql'"),
    (f"postgresql://u:{SECRET}@h:54x2/d", "invalid port '54x2'"),
    (f"host=h user=u password='{SECRET}", "unterminated quoted value"),
    (f"postgresql://u:{SECRET}@h/d?sslmode=sometimes", "sslmode 'sometimes' is not one of"),
    (f"postgresql://u:{SECRET}@h/d?keepalives_idle=1m", "keepalives_idle must be a whole number"),
    (f"host=h password={SECRET} connect_timeout=soon", "connect_timeout must be a whole number"),
    (
        f"postgresql://u:{SECRET}@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
        "sslmode=verify-full needs the certificate of the server's authority, and the "
        "sslrootcert file '/nonexistent/ca.crt' does not exist",
    ),
]


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and the members of exception groups, recursively."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += getattr(current, "exceptions", ())


def texts(error: BaseException) -> list[str]:
    return [text for e in chain(error) for text in (str(e), repr(e))]


@pytest.mark.parametrize(("dsn", "message"), MALFORMED)
def test_malformed_dsn_is_refused_at_connect(backend: str, dsn: str, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        unipool.connect(dsn, backend=backend)
    assert time.monotonic() - start < 0.5
    assert message in str(info.value)
    assert "DSN" in str(info.value)
    for text in texts(info.value):
        assert SECRET not in text


#: DSN parameters each backend cannot honour: refused at connect() by these backends only.
#: (asyncpg sends parameters it does not know to the server, as settings.)
REFUSED = {
    "frobnicate=1": {"psycopg", "psqlpy"},
    "gssencmode=require": {"asyncpg", "psqlpy"},
    "require_auth=scram-sha-256": {"asyncpg", "psqlpy"},
    "sslcert=/etc/client.crt": {"psqlpy"},
    "passfile=/etc/pgpass": {"psqlpy"},
}


@pytest.mark.parametrize(("param", "refused_by"), REFUSED.items())
def test_parameters_a_backend_cannot_honour_are_refused_at_connect(
    backend: str, param: str, refused_by: set[str]
) -> None:
    dsn = f"postgresql://u:{SECRET}@h/d?{param}"
    if backend not in refused_by:
        unipool.connect(dsn, backend=backend)  # no I/O: nothing fails yet
        return
    with pytest.raises(ValueError) as info:
        unipool.connect(dsn, backend=backend)
    key = param.partition("=")[0]
    assert re.search(rf"'{key}\b", str(info.value)), str(info.value)
    for text in texts(info.value):
        assert SECRET not in text


_DRIVERS = {"psycopg": "psycopg", "asyncpg": "asyncpg", "psqlpy": "psqlpy"}


def test_a_driver_not_installed_names_the_extra(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, _DRIVERS[backend], None)  # find_spec() -> None
    with pytest.raises(ValueError) as info:
        unipool.connect("postgresql://h/d", backend=backend)
    assert f'pip install "unipool[{backend}]"' in str(info.value)
    assert "not installed" in str(info.value)


def test_a_driver_that_does_not_import_names_the_extra(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"unipool.backends.{backend}"
    real_import = builtins.__import__

    def broken(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == _DRIVERS[backend]:
            raise ImportError(f"libfoo.so: cannot open shared object file ({name})")
        return real_import(name, *args, **kwargs)

    for name in [n for n in sys.modules if n == module or n.startswith(f"{module}.")]:
        monkeypatch.delitem(sys.modules, name)  # a package's modules import the driver too
    monkeypatch.setattr(builtins, "__import__", broken)
    try:
        with pytest.raises(ValueError) as info:
            unipool.connect("postgresql://h/d", backend=backend)
    finally:
        monkeypatch.undo()
        importlib.import_module(module)
    assert f'pip install "unipool[{backend}]"' in str(info.value)
    assert "libfoo.so" in str(info.value)


def test_an_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown backend 'pg8000'; known backends: 'psycopg'"):
        unipool.connect("postgresql://h/d", backend="pg8000")


# -- servers that are not there, or do not answer ------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Listener:
    """A TCP server on 127.0.0.1 misbehaving in one way; counts the connections it sees.

    ``hang_up``: accepts each connection and closes it at once (a server going away).
    ``silent``: accepts and never says a word. ``blackhole``: a full accept queue, so the
    kernel drops every new SYN and the client never even connects.
    """

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        if behaviour == "blackhole":
            self.sock.listen(0)
            for _ in range(3):  # fill the accept queue (backlog 0 holds 1) and then some
                filler = socket.socket()
                filler.setblocking(False)
                try:
                    filler.connect(("127.0.0.1", self.port))
                except BlockingIOError:
                    pass
                self._held.append(filler)
            self._thread = None
        else:
            self.sock.listen(64)
            self.sock.settimeout(0.05)
            self._thread = threading.Thread(target=self._serve, daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(time.monotonic())
            if self.behaviour == "silent":
                self._held.append(conn)
            else:
                conn.close()

    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test?sslmode=disable"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for sock in self._held:
            sock.close()
        self.sock.close()


@pytest.fixture
def listener(request: pytest.FixtureRequest) -> Iterator[Listener]:
    server = Listener(request.param)
    yield server
    server.close()


async def _open_wait(pool: unipool.Pool, mode: str, timeout: float) -> None:
    if mode == "sync":
        await in_thread(pool.open, wait=True, timeout=timeout)
    else:
        await pool.aopen(wait=True, timeout=timeout)


async def _close(pool: unipool.Pool, mode: str) -> None:
    if mode == "sync":
        await in_thread(pool.close)
    else:
        await pool.aclose()


async def test_refused_port_acquire_times_out_with_the_connect_error(
    mode: str, backend: str
) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{_free_port()}/test"
    async with open_pool(mode, dsn, backend, wait=False, acquire_timeout=0.3) as pool:
        start = time.monotonic()
        with pytest.raises(unipool.PoolTimeout) as info:
            async with pool.acquire():
                pass
        assert 0.25 < time.monotonic() - start < 1.5
        cause = info.value.__cause__
        assert isinstance(cause, unipool.ConnectError)
        assert cause.sqlstate == "08001"
        assert "refused" in str(cause).lower()
        assert cause.dsn == dsn  # redacted, but there is no password to hide
        assert isinstance(cause.__cause__, Exception)  # the driver's own error


async def test_refused_port_open_wait_raises_the_connect_error(mode: str, backend: str) -> None:
    pool = unipool.connect(f"postgresql://postgres@127.0.0.1:{_free_port()}/test", backend=backend)
    try:
        start = time.monotonic()
        with pytest.raises(unipool.ConnectError) as info:
            await _open_wait(pool, mode, timeout=0.3)
        # It keeps trying until its timeout (the server may be starting), then says why.
        assert 0.25 < time.monotonic() - start < 1.5
        assert info.value.sqlstate == "08001"
        assert "refused" in str(info.value).lower()
        assert isinstance(info.value.__cause__, Exception)  # the driver's own error
    finally:
        await _close(pool, mode)


#: libpq (so psycopg) rounds connect_timeout up to whole seconds, and to 2 at the least.
CONNECT_TIMEOUT_FLOOR = {"psycopg": 2.0}


@pytest.mark.parametrize("listener", ["blackhole", "silent"], indirect=True)
async def test_a_server_that_never_answers_times_out(
    mode: str, backend: str, listener: Listener
) -> None:
    connect_timeout = 0.3
    effective = max(connect_timeout, CONNECT_TIMEOUT_FLOOR.get(backend, 0.0))
    options: dict[str, Any] = {"connect_timeout": connect_timeout}
    async with open_pool(
        mode, listener.dsn(), backend, wait=False, acquire_timeout=effective + 0.6, **options
    ) as pool:
        start = time.monotonic()
        with pytest.raises(unipool.PoolTimeout) as info:
            async with pool.acquire():
                pass
        assert time.monotonic() - start < effective + 1.5
    cause = info.value.__cause__
    assert isinstance(cause, unipool.ConnectError)
    assert cause.sqlstate == "08001"
    assert re.search(r"time(d)? ?out", str(cause), re.I), str(cause)
    if listener.behaviour == "silent":
        assert listener.accepted  # the TCP connection was made: the startup timed out


def most_attempts(window: float, at_once: int) -> int:
    """The most connection attempts the backoff schedule allows within ``window`` seconds.

    ``at_once`` attempts start together (min_size); then, while failing, one at a time,
    each at least the current delay (50 ms doubling up to 2 s, less the random spread)
    after the previous failure.
    """
    attempts, at, delay = at_once, 0.0, BACKOFF_INITIAL
    while True:
        at += delay * (1 - BACKOFF_SPREAD)
        if at > window:
            return attempts
        attempts += 1
        delay = min(delay * BACKOFF_FACTOR, BACKOFF_MAX)


@pytest.mark.parametrize("listener", ["hang_up"], indirect=True)
async def test_no_retry_storm_while_the_server_hangs_up(
    mode: str, backend: str, listener: Listener
) -> None:
    window = 1.5
    async with open_pool(
        mode, listener.dsn(), backend, wait=False, min_size=2, max_size=10, acquire_timeout=window
    ) as pool:
        with pytest.raises((unipool.PoolTimeout, unipool.ConnectError)) as info:
            async with pool.acquire():
                pass
        ended = time.monotonic()
    attempts = [t for t in listener.accepted if t <= ended]
    # PoolTimeout caused by the ConnectError, or, once connecting has failed for
    # OUTAGE_AFTER (1 s), the ConnectError of the attempt that failed last
    error = info.value.__cause__ if isinstance(info.value, unipool.PoolTimeout) else info.value
    assert isinstance(error, unipool.ConnectError)
    assert error.sqlstate == "08001"
    # It keeps trying, but no faster than the backoff: 7 attempts at most, not hundreds.
    assert 3 <= len(attempts) <= most_attempts(ended - attempts[0], at_once=2), attempts
    assert pool.stats().connect_errors >= len(attempts) - 1


def test_most_attempts() -> None:
    # 0, 45 ms, 135 ms, 315 ms, 675 ms, 1.395 s, 2.835 s ... at the earliest.
    assert most_attempts(0.0, 1) == 1
    assert most_attempts(0.1, 1) == 2
    assert most_attempts(1.5, 1) == 6
    assert most_attempts(1.5, 2) == 7


# -- a server that refuses us: at once ------------------------------------------------------


def _missing_database(dsn: str) -> str:
    info = parse_dsn(dsn)
    return dataclasses.replace(info, dbname="unipool_no_such_database").to_uri()


async def test_missing_database_fails_at_once(dsn: str, mode: str, backend: str) -> None:
    missing = _missing_database(dsn)
    pool = unipool.connect(missing, backend=backend, acquire_timeout=10)
    try:
        start = time.monotonic()
        with pytest.raises(unipool.ConnectError) as info:
            await _open_wait(pool, mode, timeout=10)
        assert time.monotonic() - start < 2.0  # not the 10 s of the timeout
        assert info.value.sqlstate == "3D000"
        assert "unipool_no_such_database" in str(info.value)
    finally:
        await _close(pool, mode)
    async with open_pool(mode, missing, backend, wait=False, acquire_timeout=10) as lazy:
        start = time.monotonic()
        with pytest.raises(unipool.ConnectError) as info:  # not PoolTimeout, and at once
            async with lazy.acquire():
                pass
        assert time.monotonic() - start < 2.0
        assert info.value.sqlstate == "3D000"


async def test_unknown_role_fails_at_once(dsn: str, mode: str, backend: str) -> None:
    stranger = dataclasses.replace(parse_dsn(dsn), user="unipool_no_such_role").to_uri()
    async with open_pool(mode, stranger, backend, wait=False, acquire_timeout=10) as pool:
        start = time.monotonic()
        with pytest.raises(unipool.ConnectError) as info:
            async with pool.acquire():
                pass
        assert time.monotonic() - start < 2.0
        assert info.value.sqlstate == "28000"


def test_bad_tcp_option_in_connect_kwargs_is_refused_at_connect(backend: str) -> None:
    with pytest.raises(ValueError, match="keepalives_idle must be a whole number >= 0"):
        unipool.connect(
            "postgresql://h/d", backend=backend, connect_kwargs={"keepalives_idle": "soon"}
        )
