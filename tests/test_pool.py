"""Pool behaviour on a real server, on every backend and in every mode."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pytest

import unipool
from tests._modes import ModePool, in_thread, until
from tests.conftest import Admin, PoolFactory


def _waiting_is(pool: ModePool, n: int) -> bool:
    return pool.stats().waiting == n


def _app() -> dict[str, object]:
    """connect_kwargs giving the pool's connections a name of their own."""
    name = f"unipool-test-{uuid.uuid4().hex[:8]}"
    return {"connect_kwargs": {"server_settings": {"application_name": name}}, "name": name}


async def test_session_state_never_leaks(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1) as pool:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("select pg_backend_pid()")
            await conn.execute("set search_path to pg_catalog")
            await conn.execute("set statement_timeout = 12345")
            await conn.execute("create temp table leak (x int)")
            await conn.fetchval("select pg_advisory_lock(42)")
            await conn.execute("listen leak_channel")
            await conn.execute("begin")
            await conn.fetchval("select txid_current()")
        async with pool.acquire() as conn:
            assert await conn.fetchval("select pg_backend_pid()") == pid
            assert await conn.fetchval("show search_path") == '"$user", public'
            assert await conn.fetchval("show statement_timeout") == "0"
            assert await conn.fetchval("select to_regclass('pg_temp.leak')") is None
            assert (
                await conn.fetchval(
                    "select count(*) from pg_locks where locktype = 'advisory'"
                    " and pid = pg_backend_pid()"
                )
                == 0
            )
            assert await conn.fetchval("select count(*) from pg_listening_channels()") == 0
            assert await conn.fetchval("select txid_current_if_assigned()") is None


#: Session state set by the second statement of a string: (statement, probe, clean value).
_SECOND_STATEMENTS = {
    "search_path": ("set search_path to pg_catalog", "show search_path", '"$user", public'),
    "setting": ("set statement_timeout = '777s'", "show statement_timeout", "0"),
    "temp table": ("create temp table leak (x int)", "select to_regclass('pg_temp.leak')", None),
    "listen": ("listen leak_channel", "select count(*) from pg_listening_channels()", 0),
    "transaction": ("begin", "select txid_current_if_assigned()", None),
}


@pytest.mark.parametrize("change", list(_SECOND_STATEMENTS))
async def test_state_set_by_a_second_statement_never_leaks(
    make_pool: PoolFactory, change: str
) -> None:
    """The pool cannot tell what the rest of a multi-statement string did: it resets."""
    sql, probe, clean = _SECOND_STATEMENTS[change]
    async with make_pool(max_size=1, check=None) as pool:
        async with pool.acquire() as conn:
            await conn.execute(f"SELECT 1; {sql}")
            if change == "transaction":
                await conn.fetchval("select txid_current()")
        assert await pool.fetchval(probe) == clean


async def test_a_transaction_opened_through_raw_never_leaks(
    make_pool: PoolFactory, mode: str, backend: str
) -> None:
    """What is done through ``conn.raw`` is unknown to the pool: the reset rolls back a
    transaction it may have left open. Wherever the test can use the driver's own
    connection: every backend on asyncio, psycopg everywhere (docs/raw.md)."""
    if mode != "asyncio" and backend != "psycopg":
        pytest.skip(f"{backend}'s own connection lives on another loop in {mode} mode")
    async with make_pool(max_size=1, check=None) as pool:
        async with pool.acquire() as conn:
            raw = conn.conn.raw
            if mode == "sync":
                await in_thread(raw.execute, "BEGIN")  # a psycopg.Connection
            else:
                await raw.execute("BEGIN")
            await conn.fetchval("select txid_current()")
        assert await pool.fetchval("select txid_current_if_assigned()") is None
        async with pool.acquire() as conn:
            await conn.execute("create temp table t_raw (x int)")  # a transaction of its own
        assert await pool.fetchval("select to_regclass('pg_temp.t_raw')") is None


async def test_failed_transaction_is_rolled_back(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.execute("begin")
            with pytest.raises(unipool.DivisionByZero):
                await conn.execute("select 1/0")
        assert await pool.fetchval("select 1") == 1


async def test_role_change_is_reset(make_pool: PoolFactory, admin: Admin) -> None:
    role = f"unipool_role_{uuid.uuid4().hex[:6]}"
    admin.value(f"create role {role}")
    try:
        async with make_pool(max_size=1) as pool:
            async with pool.acquire() as conn:
                user = await conn.fetchval("select current_user")
                await conn.execute(f"set role {role}")
                assert await conn.fetchval("select current_user") == role
            assert await pool.fetchval("select current_user") == user
    finally:
        admin.value(f"drop role {role}")


async def test_clean_release_costs_no_round_trip(make_pool: PoolFactory, admin: Admin) -> None:
    """The reset sends nothing after a clean borrow, and one statement after a dirty one."""

    def last_statement(pid: int) -> str:
        return str(admin.value("select query from pg_stat_activity where pid = %s", pid))

    async with make_pool(max_size=1, check=None) as pool:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("select pg_backend_pid()")
            await conn.fetchval("select 42 -- clean borrow")
        assert "clean borrow" in last_statement(pid)
        async with pool.acquire() as conn:
            await conn.execute("set application_name = 'dirty'")
        assert "RESET ALL" in last_statement(pid)
        async with pool.acquire() as conn:
            assert await conn.fetchval("show application_name") != "dirty"
        assert pool.stats().idle == 1


async def test_killed_connection_is_never_handed_out(make_pool: PoolFactory, admin: Admin) -> None:
    async with make_pool(max_size=2, min_size=2) as pool:
        async with pool.acquire() as a, pool.acquire() as b:
            pids = {
                await a.fetchval("select pg_backend_pid()"),
                await b.fetchval("select pg_backend_pid()"),
            }
        for pid in pids:
            admin.kill(pid)
        # "A connection that died while idle for longer than the check threshold is never
        # handed out": wait past it (psqlpy's, 50 ms: it cannot see a dead socket locally).
        await anyio.sleep(0.1)
        for _ in range(4):
            async with pool.acquire() as conn:
                assert await conn.fetchval("select pg_backend_pid()") not in pids
        assert pool.stats().connections_lost == 2


async def test_connection_killed_while_borrowed_fails_once(
    make_pool: PoolFactory, admin: Admin
) -> None:
    async with make_pool(max_size=1) as pool:
        with pytest.raises(unipool.ConnectionLost):
            async with pool.acquire() as conn:
                admin.kill(await conn.fetchval("select pg_backend_pid()"))
                await conn.fetchval("select 1")
        assert await pool.fetchval("select 1") == 1
        stats = pool.stats()
        assert stats.connections_lost == 1 and stats.recycled["broken"] == 1


async def test_waiter_times_out_and_takes_nothing(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1) as pool:
        async with pool.acquire():
            with pytest.raises(unipool.PoolTimeout) as info:
                async with pool.acquire(timeout=0.1):
                    pass
            assert isinstance(info.value, TimeoutError)
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.waiting, stats.acquire_timeouts) == (1, 1, 0, 1)
        assert await pool.fetchval("select 1") == 1


async def test_cancelled_waiter_takes_nothing(make_pool: PoolFactory, mode: str) -> None:
    if mode == "sync":
        pytest.skip("threads cannot be cancelled; timeouts cover the blocking face")
    async with make_pool(max_size=1) as pool:
        conn = await pool.getconn()
        with anyio.move_on_after(0.1):
            async with pool.acquire():
                pytest.fail("a cancelled waiter got a connection")
        await pool.release(conn)
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.waiting, stats.in_use) == (1, 1, 0, 0)


async def test_cancelled_borrower_returns_its_connection(
    make_pool: PoolFactory, mode: str, admin: Admin
) -> None:
    if mode == "sync":
        pytest.skip("threads cannot be cancelled")
    marker = uuid.uuid4().hex
    async with make_pool(max_size=1) as pool:
        with anyio.move_on_after(0.2):
            async with pool.acquire() as conn:
                await conn.execute("begin")
                await conn.fetchval(f"select pg_sleep(5) -- {marker}")
        assert await pool.fetchval("select 1") == 1
        running = admin.value(
            "select count(*) from pg_stat_activity where state = 'active' and query like %s",
            f"%{marker}%",
        )
        assert running == 0
        stats = pool.stats()
        assert stats.in_use == 0 and stats.size == 1


async def test_fifo_waiters(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1) as pool:
        order: list[int] = []
        held = await pool.getconn()

        async def waiter(i: int) -> None:
            async with pool.acquire():
                order.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(waiter, i)
                await until(partial(_waiting_is, pool, i + 1))
            await pool.release(held)
        assert order == [0, 1, 2, 3, 4]


async def test_too_many_waiters(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1, max_waiting=1) as pool:
        held = await pool.getconn()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.fetchval, "select 1")
            await until(partial(_waiting_is, pool, 1))
            with pytest.raises(unipool.TooManyWaiters):
                await pool.fetchval("select 1")
            await pool.release(held)


async def test_size_never_exceeds_max(make_pool: PoolFactory, admin: Admin) -> None:
    app = _app()
    name = str(app["name"])
    async with make_pool(max_size=3, min_size=0, **app) as pool:
        peak = 0

        async def worker() -> None:
            for _ in range(10):
                await pool.fetchval("select pg_sleep(0.002)")

        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(worker)
            for _ in range(20):
                peak = max(peak, admin.backends(name), pool.stats().size)
                await anyio.sleep(0.005)
        assert 1 <= peak <= 3
        assert pool.stats().size <= 3


async def test_hooks(make_pool: PoolFactory, mode: str) -> None:
    calls: list[str] = []
    hooks: dict[str, Callable[..., Any]]
    if mode == "sync":

        def init(conn: unipool.Connection) -> None:
            calls.append("init")
            conn.execute("select 1")

        def setup(conn: unipool.Connection) -> None:
            calls.append("setup")

        def reset(conn: unipool.Connection) -> None:
            calls.append("reset")

        hooks = {"init": init, "setup": setup, "reset": reset}
    else:

        async def ainit(conn: unipool.AsyncConnection) -> None:
            calls.append("init")
            await conn.execute("select 1")

        async def asetup(conn: unipool.AsyncConnection) -> None:
            calls.append("setup")

        async def areset(conn: unipool.AsyncConnection) -> None:
            calls.append("reset")

        hooks = {"init": ainit, "setup": asetup, "reset": areset}
    async with make_pool(max_size=1, min_size=1, **hooks) as pool:
        await pool.fetchval("select 1")
        await pool.fetchval("select 1")
    assert calls == ["init", "setup", "reset", "setup", "reset"]


def _hook(mode: str, body: Callable[[Any], Any]) -> Callable[..., Any]:
    """A hook for this mode running ``body(conn)`` (whose result is awaited in async modes)."""
    if mode == "sync":
        return body

    async def hook(conn: Any) -> None:
        await body(conn)

    return hook


async def test_hooks_may_run_queries(make_pool: PoolFactory, mode: str) -> None:
    seen: list[Any] = []

    def query(conn: Any) -> Any:
        return conn.fetchval("select 1")

    def remember(conn: Any) -> Any:
        result = conn.fetchval("select pg_backend_pid()")
        if mode == "sync":
            seen.append(result)
            return None

        async def note() -> None:
            seen.append(await result)

        return note()

    hooks = {
        "init": _hook(mode, query),
        "setup": _hook(mode, query),
        "reset": _hook(mode, remember),
    }
    async with make_pool(max_size=1, min_size=1, **hooks) as pool:
        for _ in range(3):
            assert await pool.fetchval("select 1") == 1
        stats = pool.stats()
    assert stats.connects == 1 and sum(stats.recycled.values()) == 0, stats
    assert len(seen) == 3 and len(set(seen)) == 1  # one connection, reset three times


async def test_failing_hooks_are_logged_and_counted(
    make_pool: PoolFactory, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(conn: Any) -> Any:
        if mode == "sync":
            raise RuntimeError("hook bug")

        async def raise_() -> None:
            raise RuntimeError("hook bug")

        return raise_()

    async with make_pool(max_size=1, min_size=1, reset=_hook(mode, fail)) as pool:
        assert await pool.fetchval("select 1") == 1
        await until(lambda: pool.stats().recycled["hook"] == 1)
        assert await pool.fetchval("select 1") == 1  # on a new connection
    (record,) = [r for r in caplog.records if "hook bug" in r.getMessage()][:1]
    assert record.levelname == "WARNING" and "reset hook failed" in record.getMessage()
    caplog.clear()
    async with make_pool(max_size=1, min_size=0, setup=_hook(mode, fail)) as pool:
        with pytest.raises(RuntimeError, match="hook bug"):
            await pool.fetchval("select 1")
    assert any("setup hook failed" in r.getMessage() for r in caplog.records)
    caplog.clear()
    async with make_pool(max_size=1, min_size=0, init=_hook(mode, fail), wait=False) as pool:
        with pytest.raises(unipool.PoolTimeout) as info:
            async with pool.acquire(timeout=0.3):
                pass
        assert isinstance(info.value.__cause__, RuntimeError)  # the init hook's error
        assert pool.stats().recycled["hook"] >= 1
    assert any("init hook failed" in r.getMessage() for r in caplog.records)


async def test_max_queries_and_expire(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1, max_queries=3) as pool:
        pids = [await pool.fetchval("select pg_backend_pid()") for _ in range(4)]
        assert pids[0] == pids[1] == pids[2] != pids[3]
        assert pool.stats().recycled["max_queries"] == 1
        await pool.expire_connections()
        assert await pool.fetchval("select pg_backend_pid()") != pids[3]
        assert pool.stats().recycled["expired"] >= 1


async def test_close_waits_for_borrowers_then_terminates(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=2) as pool:
        conn = await pool.getconn()
        start = anyio.current_time()
        await pool.close(timeout=0.2)
        assert 0.15 < anyio.current_time() - start < 0.2 + 0.5  # the timeout, then the cut
        assert pool.stats().size == 0
        with pytest.raises(unipool.PoolClosed):
            await pool.fetchval("select 1")
        await pool.release(conn)


async def test_mode_binding(dsn: str, mode: str, backend: str) -> None:
    pool = unipool.connect(dsn, backend=backend)
    initial = pool.mode
    assert initial is None
    if mode == "sync":
        await in_thread(pool.fetchval, "select 1")
        assert pool.mode == "sync"
        with pytest.raises(unipool.UsageError, match="blocking"):
            await pool.afetchval("select 1")
        with pytest.raises(unipool.UsageError, match="event loop"):
            unipool.connect(dsn, backend=backend).fetchval("select 1")
        await in_thread(pool.close)
    else:
        assert await pool.afetchval("select 1") == 1
        assert pool.mode == mode
        with pytest.raises(unipool.UsageError, match="async"):
            await in_thread(pool.fetchval, "select 1")
        await pool.aclose()
    with pytest.raises(unipool.PoolClosed):
        await pool.afetchval("select 1")


async def test_closing_an_empty_pool_returns_at_once(make_pool: PoolFactory) -> None:
    async with make_pool(min_size=0, max_size=2) as pool:
        start = anyio.current_time()
        await pool.close(timeout=5.0)
        assert anyio.current_time() - start < 0.5


async def test_a_hand_out_found_dead_is_not_counted_as_an_acquire(
    make_pool: PoolFactory, admin: Admin, backend: str
) -> None:
    if backend == "psqlpy":
        pytest.skip("psqlpy cannot see a dead socket locally: with check=None it is handed out")
    async with make_pool(max_size=1, check=None) as pool:
        pid = await pool.fetchval("select pg_backend_pid()")
        admin.kill(pid)
        (slot,) = pool.pool._core.iter_slots()  # type: ignore[union-attr]
        await until(lambda: not slot.conn.alive())  # the server's goodbye has arrived
        assert await pool.fetchval("select pg_backend_pid()") != pid
        stats = pool.stats()
        assert stats.acquires == 2 and stats.connections_lost == 1
