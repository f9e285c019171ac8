"""Failover: the server the pool writes to is demoted; with target_session_attrs=read-write
the pool moves to the other host after one refused write (scenario 13)."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import psycopg
import pytest

import unipool
from tests._modes import open_pool, until
from unipool.testing import TempServer


def _set_read_only(server: TempServer, on: bool) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        if on:
            conn.execute("alter system set default_transaction_read_only = on")
        else:
            conn.execute("alter system reset default_transaction_read_only")
        conn.execute("select pg_reload_conf()")


def _writable_first(primary: TempServer, standby: TempServer) -> str:
    """``primary`` takes writes and ``standby`` does not; a DSN naming both that wants
    a server taking writes."""
    _set_read_only(primary, False)
    _set_read_only(standby, True)
    return (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
        "/postgres?target_session_attrs=read-write"
    )


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[TempServer, TempServer]]:
    with TempServer() as first, TempServer() as second:
        for server in (first, second):
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                conn.execute("create table t (x int)")
        yield first, second


async def test_a_demoted_primary_is_left_after_one_refused_write(
    servers: tuple[TempServer, TempServer], mode: str, backend: str
) -> None:
    primary, standby = servers
    dsn = _writable_first(primary, standby)
    async with open_pool(mode, dsn, backend, min_size=3, max_size=3) as pool:
        assert await pool.fetchval("select inet_server_port()") == primary.port
        _set_read_only(primary, True)  # demoted: existing sessions turn read-only too
        _set_read_only(standby, False)  # promoted
        refused = 0
        with anyio.fail_after(10):
            while True:
                try:
                    await pool.execute("insert into t values (1)")
                    break
                except unipool.ReadOnlySQLTransaction:
                    refused += 1
        assert refused == 1  # the other connections were checked before use
        for _ in range(5):
            await pool.execute("insert into t values (2)")
        assert await pool.fetchval("select inet_server_port()") == standby.port
        assert pool.stats().recycled["read_only"] == 1
        await until(lambda: pool.stats().size == 3)  # refilled, on the new primary


async def test_a_refused_write_caught_by_the_borrower_still_retires_the_connection(
    servers: tuple[TempServer, TempServer], mode: str, backend: str
) -> None:
    primary, standby = servers
    dsn = _writable_first(primary, standby)
    async with open_pool(mode, dsn, backend, min_size=1, max_size=1) as pool:
        assert await pool.fetchval("select inet_server_port()") == primary.port
        _set_read_only(primary, True)
        _set_read_only(standby, False)
        async with pool.acquire() as conn:
            with pytest.raises(unipool.ReadOnlySQLTransaction):
                await conn.execute("insert into t values (1)")
            # caught: the borrow goes on, and ends without an error
        assert pool.stats().recycled["read_only"] == 1
        await pool.execute("insert into t values (2)")  # the next borrower: the new primary
        assert await pool.fetchval("select inet_server_port()") == standby.port
