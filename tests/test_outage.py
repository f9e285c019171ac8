"""A server that goes away, refuses us, or comes back: on a throwaway server."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

import unipool
from tests._modes import open_pool
from unipool._tempserver import TempServer

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


@pytest.fixture(scope="module")
def password_server() -> Iterator[TempServer]:
    with TempServer(password=SECRET) as server:
        yield server


async def test_wrong_password_fails_fast_and_never_shows_it(
    password_server: TempServer, mode: str, backend: str
) -> None:
    wrong = "Wr0ng-" + SECRET
    dsn = password_server.dsn(password=wrong)
    pool = unipool.connect(dsn, backend=backend, acquire_timeout=5)
    assert wrong not in repr(pool)
    start = anyio.current_time()
    with pytest.raises(unipool.ConnectError) as info:
        if mode == "sync":
            await anyio.to_thread.run_sync(pool.open)
        else:
            await pool.aopen()
    assert anyio.current_time() - start < 2.0
    assert info.value.sqlstate == "28P01"
    for text in (str(info.value), repr(info.value), repr(pool), str(info.value.__cause__)):
        assert wrong not in text and SECRET not in text
    assert pool.get_size() == 0


async def test_right_password_works(password_server: TempServer, mode: str, backend: str) -> None:
    dsn = password_server.dsn(password=SECRET)
    async with open_pool(mode, dsn, backend) as pool:
        assert await pool.fetchval("select 1") == 1
        assert SECRET not in repr(pool.pool)
