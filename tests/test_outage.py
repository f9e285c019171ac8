"""A server that goes away, refuses us, or comes back: on a throwaway server."""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import anyio
import psycopg
import pytest
from psycopg import sql

import unipool
from tests._modes import open_pool
from tests.test_bad_input import Listener
from unipool._dsn import ConnInfo, parse_dsn
from unipool.testing import TempServer

SECRET = "s3cr3t-Pa55word"


async def test_restart_is_survived(own_server: TempServer, mode: str, backend: str) -> None:
    async with open_pool(mode, own_server.dsn(), backend, min_size=3, max_size=3) as pool:
        assert await pool.fetchval("select 1") == 1
        await anyio.to_thread.run_sync(own_server.restart)
        for _ in range(10):
            assert await pool.fetchval("select 1") == 1
        assert pool.stats().connections_lost >= 1


async def test_acquire_times_out_with_the_connect_error_as_cause(
    own_server: TempServer, mode: str, backend: str
) -> None:
    async with open_pool(mode, own_server.dsn(), backend, min_size=1, max_size=2) as pool:
        assert await pool.fetchval("select 1") == 1
        await anyio.to_thread.run_sync(own_server.stop)
        with pytest.raises(unipool.PoolTimeout) as info:
            for _ in range(3):  # the idle connection is found dead first
                async with pool.acquire(timeout=0.5) as conn:
                    await conn.fetchval("select 1")
        assert isinstance(info.value.__cause__, unipool.ConnectError)
        await anyio.to_thread.run_sync(own_server.start)
        with anyio.fail_after(10):
            while True:
                try:
                    assert await pool.fetchval("select 1") == 1
                    break
                except unipool.PoolTimeout:
                    pass
        assert pool.stats().connect_errors >= 1


#: A second role, whose password needs quoting in key=value form and encoding in a URI.
APP = "app"
APP_SECRET = "Sp3c!al/Pa55:w@rd 'q"


@pytest.fixture(scope="module")
def password_server() -> Iterator[TempServer]:
    with TempServer(password=SECRET) as server:
        local = f"host={server.socket_dir} port={server.port} user=postgres dbname=postgres"
        with psycopg.connect(local, autocommit=True) as conn:  # unix socket: trusted
            conn.execute(
                sql.SQL("create role {} login password {}").format(
                    sql.Identifier(APP), sql.Literal(APP_SECRET)
                )
            )
        yield server


async def _open(pool: unipool.Pool, mode: str) -> None:
    if mode == "sync":
        await anyio.to_thread.run_sync(pool.open)
    else:
        await pool.aopen()


async def test_wrong_password_fails_fast(
    password_server: TempServer, mode: str, backend: str
) -> None:
    dsn = password_server.dsn(password="Wr0ng-" + SECRET)
    pool = unipool.connect(dsn, backend=backend, acquire_timeout=5)
    start = anyio.current_time()
    with pytest.raises(unipool.ConnectError) as info:
        await _open(pool, mode)
    assert anyio.current_time() - start < 2.0
    assert info.value.sqlstate == "28P01"
    assert pool.get_size() == 0
    await _close(pool, mode)
    # Acquiring from a pool that was not opened first: the ConnectError at once too, not a
    # PoolTimeout after acquire_timeout.
    async with open_pool(mode, dsn, backend, wait=False, acquire_timeout=5) as lazy:
        start = anyio.current_time()
        with pytest.raises(unipool.ConnectError) as info:
            async with lazy.acquire():
                pass
        assert anyio.current_time() - start < 2.0
        assert info.value.sqlstate == "28P01"


async def _close(pool: unipool.Pool, mode: str) -> None:
    if mode == "sync":
        await anyio.to_thread.run_sync(pool.close)
    else:
        await pool.aclose()


async def test_right_password_works(password_server: TempServer, mode: str, backend: str) -> None:
    dsn = password_server.dsn(password=SECRET)
    async with open_pool(mode, dsn, backend) as pool:
        assert await pool.fetchval("select 1") == 1


# -- no password anywhere ---------------------------------------------------------------------


@dataclasses.dataclass
class Form:
    """One way of giving the password: the DSN, connect_kwargs, the environment."""

    dsn: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def _conninfo_quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def forms(port: int, secret: str, app_secret: str) -> dict[str, Form]:
    """Every DSN form, for the two roles' passwords as given (right or wrong)."""
    host = f"127.0.0.1:{port}"
    encoded = quote(app_secret, safe="")
    down = _free_port()
    return {
        "uri": Form(f"postgresql://postgres:{secret}@{host}/test"),
        "uri, percent-encoded": Form(f"postgresql://{APP}:{encoded}@{host}/test"),
        "key=value": Form(
            f"host=127.0.0.1 port={port} user=postgres password={secret} dbname=test"
        ),
        "key=value, quoted": Form(
            f"host=127.0.0.1 port={port} user={APP} password={_conninfo_quoted(app_secret)} "
            "dbname=test"
        ),
        "multi-host uri": Form(f"postgresql://{APP}:{encoded}@127.0.0.1:{down},{host}/test"),
        "query parameter": Form(f"postgresql://{APP}@{host}/test?password={encoded}"),
        "connect_kwargs": Form(f"postgresql://{APP}@{host}/test", kwargs={"password": app_secret}),
        "PGPASSWORD": Form(f"postgresql://{APP}@{host}/test", env={"PGPASSWORD": app_secret}),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and exception group members, recursively."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) not in seen:
            seen.add(id(current))
            yield current
            todo += [e for e in (current.__cause__, current.__context__) if e is not None]
            todo += getattr(current, "exceptions", ())


def _leaks(text: str, secrets: list[str]) -> list[str]:
    spellings = {s for secret in secrets for s in (secret, quote(secret, safe=""), quote(secret))}
    spellings |= {_conninfo_quoted(secret)[1:-1] for secret in secrets}
    spellings |= {secret.replace("'", "\\'") for secret in secrets}
    return [s for s in spellings if s in text]


@pytest.mark.parametrize("scenario", ["works", "wrong password", "unreachable"])
async def test_no_password_anywhere(
    password_server: TempServer,
    mode: str,
    backend: str,
    scenario: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not in repr(pool), any exception in any chain, nor any log record of unipool's."""
    caplog.set_level(logging.DEBUG, logger="unipool")
    port = _free_port() if scenario == "unreachable" else password_server.port
    if scenario == "wrong password":
        secret, app_secret = "Wr0ng-" + SECRET, "Wr0ng/" + APP_SECRET
    else:
        secret, app_secret = SECRET, APP_SECRET
    secrets = [secret, app_secret, SECRET, APP_SECRET]
    texts: list[str] = []
    for name, form in forms(port, secret, app_secret).items():
        with monkeypatch.context() as env:
            for var, value in form.env.items():
                env.setenv(var, value)
            options: dict[str, Any] = {"connect_kwargs": form.kwargs, "acquire_timeout": 0.3}
            pool = unipool.connect(form.dsn, backend=backend, **options)
            texts += [f"{name}: repr {pool!r}", f"{name}: str {pool}"]
            try:
                async with open_pool(mode, form.dsn, backend, wait=False, **options) as opened:
                    texts.append(f"{name}: repr {opened.pool!r}")
                    if scenario == "works":
                        assert await opened.fetchval("select current_user") in ("postgres", APP)
                    else:
                        expected = (
                            unipool.ConnectError
                            if scenario == "wrong password"
                            else unipool.PoolTimeout
                        )
                        with pytest.raises(expected) as info:
                            async with opened.acquire():
                                pass
                        texts += [
                            f"{name}: {text}"
                            for error in _chain(info.value)
                            for text in (str(error), repr(error), str(getattr(error, "dsn", "")))
                        ]
                        texts.append(f"{name}: stats {opened.stats()!r}")
            except BaseException as exc:  # anything else raised must not show it either
                texts += [f"{name}: {e!r} {e}" for e in _chain(exc)]
                raise
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = [r for r in caplog.records if r.name.split(".")[0] == "unipool"]
    texts += [f"log: {formatter.format(record)}" for record in records]
    if scenario != "works":
        assert records, "a failing connection is logged"
    leaks = [(text, found) for text in texts if (found := _leaks(text, secrets))]
    assert not leaks


# -- every connect error names the server -----------------------------------------------------

#: The failures a connection attempt may meet, and the SQLSTATE each gives.
KINDS = {
    "refused": "08001",
    "timed out": "08001",
    "wrong password": "28P01",
    "missing role": "28000",
    "missing database": "3D000",
    "tls": "08001",
}
#: libpq (so psycopg) rounds connect_timeout up to whole seconds, and to 2 at the least.
_ATTEMPT = {"psycopg": 2.0}


@dataclasses.dataclass
class Target:
    """A DSN that fails one way, and the server, database and user its error must name."""

    dsn: str
    server: str
    dbname: str
    user: str


def _target(kind: str, suite_dsn: str, password_server: TempServer, silent_port: int) -> Target:
    suite = parse_dsn(suite_dsn, env={})
    host, port = suite.hosts[0]
    if kind in ("missing role", "missing database"):  # the suite's server, which trusts us
        user = "unipool_no_such_role" if kind == "missing role" else suite.user or "postgres"
        dbname = "unipool_no_such_database" if kind == "missing database" else "test"
    else:
        host, port, user, dbname = "127.0.0.1", password_server.port, APP, "test"
        if kind == "refused":
            port = _free_port()
        elif kind == "timed out":
            port = silent_port
    password = "Wr0ng/" + APP_SECRET if kind == "wrong password" else APP_SECRET
    params = {"sslmode": "require"} if kind == "tls" else {"sslmode": "disable"}
    info = ConnInfo(((host, port),), user, password, dbname, params)
    return Target(info.to_uri(), f"{host}:{port}", dbname, user)


async def _connect_error(mode: str, backend: str, dsn: str) -> unipool.ConnectError:
    """The ConnectError of a lazy pool's first acquire: raised, or the PoolTimeout's cause."""
    timeout = _ATTEMPT.get(backend, 0.3) + 0.7
    options: dict[str, Any] = {"connect_timeout": 0.3, "acquire_timeout": timeout}
    async with open_pool(mode, dsn, backend, wait=False, **options) as pool:
        with pytest.raises((unipool.ConnectError, unipool.PoolTimeout)) as info:
            async with pool.acquire():
                pass
    error = info.value if isinstance(info.value, unipool.ConnectError) else info.value.__cause__
    assert isinstance(error, unipool.ConnectError), repr(info.value)
    texts = [text for e in _chain(info.value) for text in (str(e), repr(e))]
    assert not [(text, found) for text in texts if (found := _leaks(text, [APP_SECRET]))]
    assert isinstance(error.__cause__, Exception)  # the driver's own error
    return error


@pytest.mark.parametrize("kind", KINDS)
async def test_connect_errors_name_the_server(
    password_server: TempServer, dsn: str, mode: str, backend: str, kind: str
) -> None:
    """Host and port, database and user, whatever the failure and the backend; no password."""
    silent = Listener("silent")
    try:
        target = _target(kind, dsn, password_server, silent.port)
        error = await _connect_error(mode, backend, target.dsn)
    finally:
        silent.close()
    assert error.sqlstate == KINDS[kind], str(error)
    named = f'server {target.server}, database "{target.dbname}", user "{target.user}": '
    for text in (str(error), repr(error), error.message):
        assert named in text, text
    assert error.dsn is not None and APP_SECRET not in error.dsn
    assert error.permanent is (kind not in ("refused", "timed out"))


async def test_connect_errors_name_each_host(
    password_server: TempServer, mode: str, backend: str
) -> None:
    """With several hosts, each is named; where the driver tells (psqlpy), which failed."""
    down = f"127.0.0.1:{_free_port()}"
    up = f"127.0.0.1:{password_server.port}"
    wrong = quote("Wr0ng/" + APP_SECRET, safe="")
    error = await _connect_error(mode, backend, f"postgresql://{APP}:{wrong}@{down},{up}/test")
    assert error.sqlstate == "28P01"
    hosts = (
        f"servers {down}, {up} (error from {up})"
        if backend == "psqlpy"
        else f"servers {down}, {up}"
    )
    assert f'{hosts}, database "test", user "{APP}": ' in str(error), str(error)
