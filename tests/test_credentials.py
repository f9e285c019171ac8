"""Credentials that rotate: ``password`` (or ``connect_kwargs``) as a callable, called for
every new connection, sync or async, on every backend and mode."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import unipool
from tests._modes import open_pool
from unipool.testing import TempServer

ROLE = "rotating"


@pytest.fixture(scope="module")
def server() -> Iterator[TempServer]:
    with TempServer(password=uuid.uuid4().hex) as server:
        yield server


def _set_password(server: TempServer, password: str) -> None:
    local = f"host={server.socket_dir} port={server.port} user=postgres dbname=postgres"
    with psycopg.connect(local, autocommit=True) as conn:  # unix socket: trusted
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (ROLE,)).fetchone()
        verb = "alter" if exists else "create"
        conn.execute(
            sql.SQL(verb + " role {} login password {}").format(
                sql.Identifier(ROLE), sql.Literal(password)
            )
        )


def _answer(mode: str, value: Callable[[], Any]) -> Callable[[], Any]:
    """A callable answering ``value()``: a coroutine function in the async modes."""
    if mode == "sync":
        return value

    @functools.wraps(value)
    async def answer() -> Any:
        return value()

    return answer


async def test_a_rotated_password_keeps_the_pool_serving(
    server: TempServer, mode: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = [f"first-{uuid.uuid4().hex}", f"second-{uuid.uuid4().hex}"]
    current = [secrets[0]]
    calls = 0

    def password() -> str:
        nonlocal calls
        calls += 1
        return current[0]

    _set_password(server, secrets[0])
    dsn = server.dsn(user=ROLE)  # no password in the DSN
    async with open_pool(
        mode, dsn, backend, min_size=1, max_size=1, password=_answer(mode, password)
    ) as pool:
        assert await pool.fetchval("select current_user") == ROLE
        _set_password(server, secrets[1])  # the server's password changes...
        current[0] = secrets[1]  # ... and the secrets manager's with it
        await pool.expire_connections()  # every connection is replaced: new logins
        assert await pool.fetchval("select current_user") == ROLE
        stats = pool.stats()
        assert stats.connects == 2 and stats.connect_errors == 0
    assert calls == 2  # once per new connection
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(secret in logged for secret in secrets)


async def test_a_failing_password_callable_is_a_connect_error(
    server: TempServer, mode: str, backend: str
) -> None:
    secret = f"leak-{uuid.uuid4().hex}"

    def broken() -> str:
        raise RuntimeError(f"vault unreachable, token {secret}")

    dsn = server.dsn(user=ROLE)
    async with open_pool(
        mode, dsn, backend, min_size=0, max_size=1, wait=False, password=_answer(mode, broken)
    ) as pool:
        with pytest.raises(unipool.PoolTimeout) as info:
            async with pool.acquire(timeout=0.5):
                pass
    error = info.value.__cause__
    assert isinstance(error, unipool.ConnectError)
    assert "password callable" in str(error) and "broken" in str(error)
    assert secret not in str(error) and secret not in str(info.value)
    assert isinstance(error.__cause__, RuntimeError)  # the callable's own error


async def test_connect_kwargs_as_a_callable(server: TempServer, mode: str, backend: str) -> None:
    secret = f"kw-{uuid.uuid4().hex}"
    _set_password(server, secret)
    answers = 0

    def kwargs() -> dict[str, Any]:
        nonlocal answers
        answers += 1
        return {"password": secret, "server_settings": {"application_name": f"rot-{answers}"}}

    async with open_pool(
        mode, server.dsn(user=ROLE), backend, min_size=1, max_size=1,
        connect_kwargs=_answer(mode, kwargs),
    ) as pool:  # fmt: skip
        assert await pool.fetchval("show application_name") == "rot-1"


def test_bad_credentials_options_are_refused() -> None:
    with pytest.raises(TypeError, match="password must be a str or a callable"):
        unipool.connect(None, password=42)
    with pytest.raises(TypeError, match="connect_kwargs must be a mapping or a callable"):
        unipool.connect(None, connect_kwargs=[1])


def test_an_async_callable_in_a_blocking_pool_says_so(
    server: TempServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def token() -> str:
        return "x"

    pool = unipool.connect(server.dsn(user=ROLE), password=token, min_size=1)
    with caplog.at_level(logging.WARNING), pytest.raises(unipool.ConnectError, match="is async"):
        pool.open(wait=True, timeout=1)
