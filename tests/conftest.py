"""Test fixtures: a PostgreSQL server, and the mode x backend parametrization.

The server is ``UNIPOOL_TEST_DSN`` if set, else the local one on
127.0.0.1:5432 if it answers, else a throwaway server started for the
session. Tests that stop, restart or break a server use their own
(``own_server``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg
import pytest
from hypothesis import settings

from tests._modes import MODES, ModePool, open_pool
from unipool._pgbin import supports_ssl
from unipool.testing import ServerBinariesNotFound, TempServer, find_pg_bindir

# The property tests explore the same examples every run, so that a run of the suite is
# as good as the last; to explore more while changing the core, load hypothesis's
# "default" profile here instead, and give ``--hypothesis-seed``.
settings.register_profile("unipool", derandomize=True)
settings.load_profile("unipool")

BACKENDS = ("psycopg", "asyncpg", "psqlpy")
_DRIVERS = {"psycopg": "psycopg", "asyncpg": "asyncpg", "psqlpy": "psqlpy"}
_LOCAL = "postgresql://postgres@127.0.0.1:5432/test"


def _local_server_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            pass
        with psycopg.connect(_LOCAL, connect_timeout=2):
            return True
    except (OSError, psycopg.Error):
        return False


@pytest.fixture(scope="session")
def session_server() -> Iterator[TempServer | None]:
    """The throwaway server started for the session, or None when ``UNIPOOL_TEST_DSN`` is
    set or the local server answers."""
    if os.environ.get("UNIPOOL_TEST_DSN") or _local_server_answers():
        yield None
    else:
        with TempServer() as server:
            yield server


@pytest.fixture(scope="session")
def dsn(session_server: TempServer | None) -> str:
    """A DSN of a server the tests may use but not break."""
    if session_server is not None:
        return session_server.dsn(dbname="test")
    return os.environ.get("UNIPOOL_TEST_DSN") or _LOCAL


def no_tls_server() -> str | None:
    """Why a throwaway server cannot serve TLS here, if it cannot."""
    if shutil.which("openssl") is None:
        return "the openssl command is needed to make certificates"
    try:
        bindir = find_pg_bindir()
    except ServerBinariesNotFound as exc:
        return str(exc)
    if not supports_ssl(bindir):
        return f"the PostgreSQL server in {bindir} is built without TLS"
    return None


@pytest.fixture
def sigint() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt in this test, whatever the process inherited (a job
    a shell starts in the background ignores SIGINT); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def own_server() -> Iterator[TempServer]:
    """A throwaway server of this test's own, to stop, restart or break."""
    with TempServer() as server:
        yield server


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(mode: str) -> str:
    return "trio" if mode == "trio" else "asyncio"


def installed(names: tuple[str, ...]) -> list[str]:
    """The backends among ``names`` whose driver is importable."""
    return [n for n in names if importlib.util.find_spec(_DRIVERS[n]) is not None]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if importlib.util.find_spec(_DRIVERS[name]) is None:
        pytest.skip(f"the {name} driver is not installed")
    return name


PoolFactory = Callable[..., AbstractAsyncContextManager[ModePool]]


@pytest.fixture
def make_pool(mode: str, backend: str, dsn: str) -> PoolFactory:
    """``async with make_pool(**options) as pool:``, in this test's mode and backend."""

    def factory(*, dsn_: str | None = None, **options: Any) -> Any:
        return open_pool(mode, dsn_ or dsn, backend, **options)

    return factory


class Admin:
    """A side connection for looking at and breaking the server."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def value(self, sql: str, *args: Any) -> Any:
        cur = self.conn.execute(sql, args or None)
        row = cur.fetchone() if cur.description else None
        return None if row is None else row[0]

    def kill(self, pid: int) -> None:
        """Terminate backend ``pid`` and wait until it is gone."""
        self.value("select pg_terminate_backend(%s, 5000)", pid)

    def backends(self, application_name: str) -> int:
        return int(
            self.value(
                "select count(*) from pg_stat_activity where application_name = %s",
                application_name,
            )
        )


@pytest.fixture
def admin(dsn: str) -> Iterator[Admin]:
    a = Admin(dsn)
    yield a
    a.conn.close()
