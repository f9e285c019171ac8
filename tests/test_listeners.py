"""Listeners (DESIGN §12): the core's events, delivered once, on every backend and mode."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import unipool
from tests._modes import until
from tests.conftest import Admin, PoolFactory


class Recorder:
    """Notes every event it is told of."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.pools: set[int] = set()
        self._lock = threading.Lock()

    def _note(self, pool: unipool.Pool, event: str, value: Any = None) -> None:
        with self._lock:
            self.pools.add(id(pool))
            self.events.append((event, value))

    def on_connect(self, pool: unipool.Pool, seconds: float) -> None:
        self._note(pool, "connect", seconds)

    def on_connect_error(self, pool: unipool.Pool, error: BaseException) -> None:
        self._note(pool, "connect_error", error)

    def on_acquire(self, pool: unipool.Pool, wait_seconds: float) -> None:
        self._note(pool, "acquire", wait_seconds)

    def on_release(self, pool: unipool.Pool, use_seconds: float) -> None:
        self._note(pool, "release", use_seconds)

    def on_timeout(self, pool: unipool.Pool) -> None:
        self._note(pool, "timeout")

    def on_close_connection(self, pool: unipool.Pool, cause: str) -> None:
        self._note(pool, "close_connection", cause)

    def named(self, event: str) -> list[Any]:
        with self._lock:
            return [value for name, value in self.events if name == event]


async def test_every_event_reaches_a_listener(make_pool: PoolFactory, dsn: str) -> None:
    recorder = Recorder()
    async with make_pool(min_size=1, max_size=1, listeners=[recorder]) as pool:
        await until(lambda: len(recorder.named("connect")) == 1)
        async with pool.acquire() as conn:
            await conn.fetchval("select 1")
            with pytest.raises(unipool.PoolTimeout):
                async with pool.acquire(timeout=0.05):
                    pass
        await pool.expire_connections()  # the idle connection is replaced
        await until(lambda: len(recorder.named("close_connection")) == 1)
        await until(lambda: len(recorder.named("connect")) == 2)
    await until(lambda: len(recorder.named("close_connection")) == 2)

    assert recorder.pools == {id(pool.pool)}, "each event names its pool"
    assert all(0 <= s < 10 for s in recorder.named("connect"))
    (waited,) = recorder.named("acquire")
    (used,) = recorder.named("release")
    assert 0 <= waited < 1 and 0 <= used < 5
    assert recorder.named("timeout") == [None]
    assert recorder.named("close_connection") == ["expired", "closed"]
    assert recorder.named("connect_error") == []
    stats = pool.stats()
    assert (stats.acquires, stats.acquire_timeouts, stats.connects) == (1, 1, 2)


async def test_a_connect_error_reaches_a_listener(make_pool: PoolFactory, dsn: str) -> None:
    recorder = Recorder()
    bad = dsn.rsplit("/", 1)[0] + "/unipool_no_such_database"
    async with make_pool(dsn_=bad, min_size=0, max_size=1, wait=False) as pool:
        pool.pool.add_listener(recorder)
        with pytest.raises(unipool.ConnectError):
            async with pool.acquire(timeout=5):
                pass
    (error,) = recorder.named("connect_error")
    assert isinstance(error, unipool.ConnectError)


async def test_a_connection_lost_in_use_is_closed_as_lost(
    make_pool: PoolFactory, admin: Admin
) -> None:
    recorder = Recorder()
    async with make_pool(min_size=1, max_size=1, listeners=[recorder]) as pool:
        with pytest.raises(unipool.ConnectionLost):
            async with pool.acquire() as conn:
                admin.kill(await conn.fetchval("select pg_backend_pid()"))
                await conn.fetchval("select 1")
        await until(lambda: recorder.named("close_connection") == ["lost"])
        assert await pool.fetchval("select 1") == 1
        assert pool.stats().recycled["broken"] == 1  # counted with the broken ones


async def test_a_failing_listener_never_reaches_the_borrower(
    make_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def on_acquire(self, pool: unipool.Pool, wait_seconds: float) -> None:
            raise RuntimeError("listener bug")

    recorder = Recorder()
    with caplog.at_level(logging.DEBUG, logger="unipool"):
        async with make_pool(min_size=1, max_size=1, listeners=[Broken(), recorder]) as pool:
            for _ in range(3):
                assert await pool.fetchval("select 1") == 1
    assert len(recorder.named("acquire")) == 3, "the next listener still runs"
    failures = [r for r in caplog.records if "listener bug" in (r.exc_text or "")]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "on_acquire" in failures[0].getMessage()


async def test_removed_listener_hears_nothing(make_pool: PoolFactory) -> None:
    recorder = Recorder()
    async with make_pool(min_size=1, max_size=1) as pool:
        pool.pool.add_listener(recorder)
        await pool.fetchval("select 1")
        pool.pool.remove_listener(recorder)
        await pool.fetchval("select 1")
        with pytest.raises(ValueError, match="not a listener"):
            pool.pool.remove_listener(recorder)
    assert len(recorder.named("acquire")) == 1 and len(recorder.named("release")) == 1


def test_bad_listeners_are_refused() -> None:
    class Nothing:
        pass

    class Async:
        async def on_acquire(self, pool: unipool.Pool, wait_seconds: float) -> None:
            pass

    with pytest.raises(TypeError, match="at least one of these methods: on_connect"):
        unipool.connect(None, listeners=[Nothing()])
    with pytest.raises(TypeError, match="on_acquire is async"):
        unipool.connect(None, listeners=[Async()])
    with pytest.raises(TypeError, match="listeners must be a list"):
        unipool.connect(None, listeners=Recorder())
    pool = unipool.connect(None)
    with pytest.raises(TypeError, match="at least one"):
        pool.add_listener(Nothing())
