"""A server that stops answering mid-conversation: checks, resets and close stay bounded (5)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

import unipool
from tests._modes import open_pool, until
from tests.faults.conftest import via
from tests.faults.proxy import FaultProxy
from unipool._core import policy

SLACK = 0.5


@pytest.fixture
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks, resets and closes given 0.5 s instead of 5 s."""
    monkeypatch.setattr(policy, "CHECK_TIMEOUT", 0.5)
    monkeypatch.setattr(policy, "CLOSE_TIMEOUT", 0.5)


async def test_checks_on_a_frozen_network_end_with_the_acquire(
    proxy: FaultProxy, dsn: str, mode: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two idle connections, both frozen: the watchdog's cut ends the check (5 s at most)
    when the acquire's own 1 s are up, with the async modes' backstop (the cancel scope,
    ``CUT_GRACE`` later) moved out of reach; no second check starts; the pool refills
    after the thaw."""
    monkeypatch.setattr(policy, "CUT_GRACE", 10.0)
    options: dict[str, Any] = {"min_size": 2, "max_size": 2, "check": 0.05, "connect_timeout": 1}
    async with open_pool(mode, via(proxy, dsn), backend, **options) as pool:
        assert await pool.fetchval("select 1") == 1
        await until(lambda: pool.stats().idle == 2)
        await anyio.sleep(0.1)  # idle past `check`: the next hand-out pings
        proxy.freeze()
        start = time.monotonic()
        with pytest.raises(unipool.PoolTimeout):
            async with pool.acquire(timeout=1.0):  # the check may take all of it
                pass
        assert time.monotonic() - start <= 1.0 + SLACK  # not 2 x 5 s, not 1.0 + 10 s
        assert pool.stats().connections_lost >= 1  # the check gave the frozen one up
        proxy.thaw()
        await until(lambda: pool.stats().idle == 2, timeout=10)
        assert await pool.fetchval("select 1") == 1


async def test_a_dirty_release_into_a_frozen_network_returns_in_time(
    short_bounds: None, proxy: FaultProxy, dsn: str, mode: str, backend: str
) -> None:
    async with open_pool(mode, via(proxy, dsn), backend, min_size=1, max_size=1) as pool:
        conn = await pool.getconn()
        await conn.execute("set application_name = 'dirty'")  # the release must reset
        proxy.freeze()
        start = time.monotonic()
        await pool.release(conn)
        assert time.monotonic() - start <= 0.5 + SLACK
        assert pool.stats().in_use == 0
        proxy.thaw()
        async with pool.acquire(timeout=10) as again:
            assert await again.fetchval("show application_name") != "dirty"


async def test_close_returns_in_time_when_the_server_freezes(
    proxy: FaultProxy, dsn: str, mode: str, backend: str
) -> None:
    async with open_pool(mode, via(proxy, dsn), backend, min_size=3, max_size=3) as pool:
        held = await pool.getconn()
        proxy.freeze()
        start = time.monotonic()
        await pool.close(timeout=1.0)
        assert time.monotonic() - start <= 1.0 + SLACK
        assert pool.pool.get_size() == 0
        del held
        proxy.thaw()


async def test_a_borrower_stuck_on_a_frozen_network_is_woken_by_close(
    proxy: FaultProxy, dsn: str, mode: str, backend: str
) -> None:
    """close() terminates a connection whose borrower waits on a silent server: the
    borrower gets ConnectionLost when close() gives up, instead of waiting forever."""
    if mode == "sync":
        pytest.skip("a blocked thread is woken by the socket cut, not by a task switch")
    async with open_pool(mode, via(proxy, dsn), backend, min_size=1, max_size=1) as pool:
        conn = await pool.getconn()
        proxy.freeze()
        woken = anyio.Event()
        errors: list[BaseException] = []

        async def stuck() -> None:
            try:
                await conn.fetchval("select 1")
            except unipool.Error as exc:  # frozen: it can only fail
                errors.append(exc)
            woken.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stuck)
            await anyio.sleep(0.1)  # the query is on its way to the frozen server
            start = time.monotonic()
            await pool.close(timeout=0.3)
            with anyio.fail_after(0.3 + SLACK):
                await woken.wait()
        assert time.monotonic() - start <= 0.3 + SLACK
        assert [type(e) for e in errors] == [unipool.ConnectionLost], errors
        proxy.thaw()
