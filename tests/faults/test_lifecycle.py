"""Connection lifecycle under stress: dirty returns (12), lifetime jitter (15), a wall-clock
jump (18), the wrong event loop (20)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import trio

import unipool
from tests._modes import in_thread, until
from tests.conftest import Admin, PoolFactory
from tests.faults.tools import LONG, backends_of, named
from unipool.testing import TempServer

# -- 12: dirty return ----------------------------------------------------------------------
# tests/test_pool.py covers SET, search_path, SET ROLE, temp tables, advisory locks, LISTEN
# and an open transaction; these are the dirty states it leaves out.


_STATE = "select state from pg_stat_activity where pid = %s"


async def _state_of(admin: Admin, pid: int) -> str:
    """The server's view of backend ``pid`` right after its release."""
    return str(await in_thread(admin.value, _STATE, pid))


async def test_dirty_return_failed_transaction_and_held_cursor(
    make_pool: PoolFactory, admin: Admin
) -> None:
    async with make_pool(max_size=1) as pool:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("select pg_backend_pid()")
            await conn.execute("begin")
            await conn.execute("declare held cursor with hold for select 1")
            await conn.execute("commit")
            await conn.execute("begin")
            await conn.execute("set local work_mem = '7MB'")
            with pytest.raises(unipool.DivisionByZero):
                await conn.execute("select 1/0")
        assert await _state_of(admin, pid) == "idle"  # not "idle in transaction (aborted)"
        async with pool.acquire() as conn:
            assert await conn.fetchval("select pg_backend_pid()") == pid
            assert await conn.fetchval("select count(*) from pg_cursors where name = 'held'") == 0
            assert await conn.fetchval("select txid_current_if_assigned()") is None
            assert await conn.fetchval(
                "select setting = reset_val from pg_settings where name = 'work_mem'"
            )


@pytest.fixture
def copy_table(admin: Admin) -> Iterator[str]:
    table = f"unipool_copy_{uuid.uuid4().hex[:8]}"
    admin.value(f"create table {table} (id int primary key)")
    yield table
    admin.value(f"drop table {table}")


async def test_dirty_return_mid_copy(make_pool: PoolFactory, admin: Admin, copy_table: str) -> None:
    """A COPY whose source fails half-way leaves nothing behind: no rows, no open COPY."""

    def records() -> Iterator[tuple[int]]:
        yield from ((i,) for i in range(1000))
        raise RuntimeError("the source broke mid-COPY")

    async with make_pool(max_size=1) as pool:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("select pg_backend_pid()")
            with pytest.raises((RuntimeError, unipool.Error)):
                await conn.copy_records_to_table(copy_table, records=records())
        # The server may still be busy aborting the COPY (asyncpg does not wait for it);
        # whatever it does next is to end it: idle if the connection was kept, gone if not.
        await until(lambda: admin.value(_STATE, pid) in ("idle", None))
        async with pool.acquire() as conn:
            assert await conn.fetchval("select txid_current_if_assigned()") is None
            assert await conn.fetchval(f"select count(*) from {copy_table}") == 0
            await conn.copy_records_to_table(copy_table, records=[(1,), (2,)])
            assert await conn.fetchval(f"select count(*) from {copy_table}") == 2
        stats = pool.stats()
        assert stats.size == 1 and stats.connects in (1, 2)  # reset, or replaced


# -- 15: lifetime jitter -------------------------------------------------------------------


async def test_lifetime_jitter(
    make_pool: PoolFactory, server: TempServer, mode: str, backend: str, name: str
) -> None:
    """Scenario 15: connections made together are replaced at spread-out times, and none
    older than ``max_lifetime`` is ever handed out (on a server of its own: 100 connections
    in the long form)."""
    n, lifetime = (100, 60.0) if LONG else (20, 1.0)
    dsn = server.dsn()
    oldest = 0.0
    options = named(name, min_size=n, max_size=n, max_lifetime=lifetime)
    async with make_pool(dsn_=dsn, **options) as pool:
        first = {pid for pid, _ in await in_thread(backends_of, dsn, name)}
        assert len(first) == n

        async def borrower(end: float) -> None:
            nonlocal oldest
            while time.monotonic() < end:
                async with pool.acquire() as conn:
                    age = await conn.fetchval(
                        "select extract(epoch from clock_timestamp() - backend_start)::float8"
                        " from pg_stat_activity where pid = pg_backend_pid()"
                    )
                    oldest = max(oldest, age)
                await anyio.sleep(0.01)

        stop = threading.Event()
        lived: dict[int, float] = {}
        watcher = threading.Thread(target=_watch_lifetimes, args=(dsn, name, first, stop, lived))
        watcher.start()
        try:
            end = time.monotonic() + lifetime * 1.3
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(borrower, end)
            await until(lambda: pool.stats().recycled["max_lifetime"] >= n, timeout=lifetime)
        finally:
            stop.set()
            await in_thread(watcher.join, 10)
        starts = await in_thread(_backend_starts, dsn, name)
    replacements = sorted(t for pid, t in starts if pid not in first)
    spread = max(lived.values()) - min(lived.values())
    print(
        f"lifetime {backend}/{mode}: {len(replacements)} replaced; the first {len(lived)} "
        f"lived {min(lived.values()):.3f}-{max(lived.values()):.3f} s; oldest handed out "
        f"{oldest:.3f} s (lifetime {lifetime:g} s)"
    )
    assert len(replacements) >= n and len(lived) == n
    # each lives its own share of max_lifetime: with the jitter 0.09-0.16 s apart here;
    # without it 0.03-0.05 s on the async faces (the blocking face's closes spread them
    # more); the replacements' start times spread as much with it as without
    assert spread >= 0.05 * lifetime
    assert oldest <= lifetime + 0.1


def _watch_lifetimes(
    dsn: str, name: str, pids: set[int], stop: threading.Event, lived: dict[int, float]
) -> None:
    """Until ``stop``: how long each of ``pids`` has lived, by the server's clock, as of the
    last look that saw it (every 5 ms)."""
    admin = Admin(dsn)
    try:
        while not stop.is_set():
            rows = admin.conn.execute(
                "select pid, extract(epoch from clock_timestamp() - backend_start)::float8"
                " from pg_stat_activity where application_name = %s",
                (name,),
            ).fetchall()
            lived.update((int(pid), float(age)) for pid, age in rows if pid in pids)
            time.sleep(0.005)
    finally:
        admin.conn.close()


def _backend_starts(dsn: str, name: str) -> list[tuple[int, float]]:
    admin = Admin(dsn)
    try:
        rows = admin.conn.execute(
            "select pid, extract(epoch from backend_start)::float8 from pg_stat_activity"
            " where application_name = %s",
            (name,),
        ).fetchall()
    finally:
        admin.conn.close()
    return [(int(pid), float(t)) for pid, t in rows]


# -- 18: clock jump ------------------------------------------------------------------------


async def test_wall_clock_jump_changes_nothing(
    make_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario 18: the wall clock steps an hour forward, then back: no connection expires or
    idles out, and timeouts keep their length (the pool reads a monotonic clock only)."""
    real_time, real_ns = time.time, time.time_ns
    options = {"min_size": 2, "max_size": 2, "max_lifetime": 1800.0, "max_idle": 60.0}
    async with make_pool(**options) as pool:
        held = [await pool.getconn(), await pool.getconn()]
        pids = {await c.fetchval("select pg_backend_pid()") for c in held}
        for conn in held:
            await pool.release(conn)
        for step, pause in ((3600.0, 1.1), (-3600.0, 0.2)):
            monkeypatch.setattr(time, "time", lambda s=step: real_time() + s)
            monkeypatch.setattr(time, "time_ns", lambda s=step: real_ns() + int(s * 1e9))
            await anyio.sleep(pause)  # the first covers a housekeeping round (1 s apart)
            held = [await pool.getconn(), await pool.getconn()]
            assert {await c.fetchval("select pg_backend_pid()") for c in held} == pids
            start = time.monotonic()
            with pytest.raises(unipool.PoolTimeout):
                async with pool.acquire(timeout=0.3):
                    pass
            assert 0.3 <= time.monotonic() - start < 0.3 + 0.15
            for conn in held:
                await pool.release(conn)
        stats = pool.stats()
        assert stats.connects == 2 and sum(stats.recycled.values()) == 0


# -- 20: wrong loop --------------------------------------------------------------------------


def _in_other_loop(library: str, fn: Any) -> BaseException | None:
    """Run ``fn()`` (a coroutine function) in a new event loop of ``library`` in this thread;
    the exception it raised, or None."""

    async def main() -> BaseException | None:
        try:
            await fn()
        except BaseException as exc:
            return exc
        return None

    if library == "asyncio":
        return asyncio.run(main())
    return trio.run(main)


@pytest.mark.parametrize("other", ["asyncio", "trio"])
async def test_wrong_loop(make_pool: PoolFactory, mode: str, other: str) -> None:
    """Scenario 20: a pool bound to one event loop refuses, at once, to serve another."""
    if mode == "sync":
        pytest.skip("a blocking pool is bound to no loop (test_pool.py checks the mode binding)")
    async with make_pool(max_size=1) as pool:
        raw: unipool.Pool = pool.pool
        for call in (
            lambda: raw.afetchval("select 1"),
            lambda: raw.agetconn(),
            lambda: raw.aopen(),
        ):
            start = time.monotonic()
            with anyio.fail_after(5):
                error = await in_thread(_in_other_loop, other, call)
            assert isinstance(error, unipool.UsageError), error
            assert "loop" in str(error)
            assert time.monotonic() - start < 1.0
        assert await pool.fetchval("select 1") == 1  # still fine on its own loop
        assert pool.stats().in_use == 0


async def test_pool_outlives_its_loop(dsn: str, backend: str, mode: str) -> None:
    """Scenario 20: a pool whose event loop has ended refuses the next one instead of hanging."""
    if mode == "sync":
        pytest.skip("a blocking pool is bound to no loop")
    pool = unipool.connect(dsn, backend=backend, min_size=0, max_size=1)

    async def use() -> None:
        assert await pool.afetchval("select 1") == 1
        await pool.aexpire_connections()  # none left open on a loop about to end

    assert await in_thread(_in_other_loop, mode, use) is None  # opened there, never closed
    assert pool.get_size() == 0
    with anyio.fail_after(5):
        with pytest.raises(unipool.UsageError, match="loop"):
            await pool.afetchval("select 1")
    pool.terminate()


async def test_terminate_after_the_loop_ended(dsn: str, mode: str, backend: str) -> None:
    """A pool left open when its event loop ended terminates quietly: no error, no socket
    or transport left to the garbage collector."""
    if mode == "sync":
        pytest.skip("a blocking pool is bound to no loop")
    pool = unipool.connect(dsn, backend=backend, max_size=1)

    async def use() -> None:
        assert await pool.afetchval("select 1") == 1

    def run() -> None:
        if mode == "asyncio":
            asyncio.run(use())
        else:
            trio.run(use)

    await in_thread(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool.terminate()  # its connections are dropped: the collector finds what they left
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
