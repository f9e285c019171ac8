"""The psqlpy pump: psqlpy driven from plain threads and from trio, without asyncio."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import socket
import threading
import time
import types
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any, TypeVar

import psqlpy
import pytest
import trio

from unipool.backends.psqlpy import _pump
from unipool.backends.psqlpy._pump import (
    TESTED_PSQLPY,
    check_pump,
    pump_sync,
    pump_trio,
    pump_works,
)

T = TypeVar("T")


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return trio.run(fn, *args)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port nobody listens on (bound, so nobody else takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def release(future: Any) -> None:
    """What pyo3's ``release_waiter`` does."""
    if not future.done():
        future.set_result(None)


@types.coroutine
def _wake_from_thread(
    result: T, wakes: int = 1, then: Callable[[Any], object] | None = None
) -> Generator[Any, None, T]:
    """Wait the way a psqlpy coroutine does, woken ``wakes`` times from another thread."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def wake() -> None:
        time.sleep(0.001)
        for _ in range(wakes):
            loop.call_soon_threadsafe(release, future)
        if then is not None:
            try:
                then(loop)
            except AttributeError:
                pass

    threading.Thread(target=wake).start()
    yield from future
    return result


async def fake_op(result: T, wakes: int = 1, then: Callable[[Any], object] | None = None) -> T:
    return await _wake_from_thread(result, wakes, then)


# -- the canary ----------------------------------------------------------------------------


def test_canary_pump_drives_installed_psqlpy() -> None:
    version = importlib.metadata.version("psqlpy")
    check_pump()
    assert pump_works()
    assert ".".join(version.split(".")[:2]) in TESTED_PSQLPY, (
        f"psqlpy {version} is not in TESTED_PSQLPY {TESTED_PSQLPY}: re-verify the psqlpy pump "
        f"(unipool.backends.psqlpy._pump.PUMP_RELIES_ON) against it, then add it"
    )


def test_canary_detects_an_asyncio_only_psqlpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pump, "_set_running_loop", lambda loop: None)
    problem = _pump._problem.__wrapped__()
    assert problem is not None
    assert "cannot drive psqlpy" in problem
    assert "no running event loop" in problem


def test_canary_rejects_an_untested_psqlpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pump, "TESTED_PSQLPY", ("0.0",))
    problem = _pump._problem.__wrapped__()
    assert problem is not None
    assert "re-verify" in problem
    assert "its self-test passes" in problem


# -- the pump itself, without a server ------------------------------------------------------


def test_sync_wakes_duplicate_and_no_loop_left_behind() -> None:
    def in_thread(out: list[object]) -> None:
        # a new thread: no asyncio loop of any kind here
        out.append(pump_sync(fake_op("a", wakes=3)))
        out.append(asyncio._get_running_loop())

    out: list[object] = []
    thread = threading.Thread(target=in_thread, args=(out,))
    thread.start()
    thread.join()
    assert out == ["a", None]


def test_trio_wakes_and_restores_no_loop() -> None:
    async def main() -> list[object]:
        results = [await pump_trio(fake_op(i, wakes=2)) for i in range(3)]
        return [*results, asyncio._get_running_loop()]

    assert run(main) == [0, 1, 2, None]


def test_unsupported_loop_use_during_poll_is_loud() -> None:
    async def uses_loop_time() -> float:
        return asyncio.get_running_loop().time()

    with pytest.raises(RuntimeError, match=r"loop\.time.*re-verify"):
        pump_sync(uses_loop_time())
    with pytest.raises(RuntimeError, match=r"loop\.time"):
        run(pump_trio, uses_loop_time())


def test_unsupported_loop_use_from_other_thread_is_loud_not_a_hang() -> None:
    def call_later(loop: Any) -> None:
        loop.call_later(0, print)

    with pytest.raises(RuntimeError, match=r"loop\.call_later"):
        pump_sync(fake_op(1, wakes=0, then=call_later))
    with pytest.raises(RuntimeError, match=r"loop\.call_later"):
        run(pump_trio, fake_op(1, wakes=0, then=call_later))


def test_unexpected_yield_is_loud() -> None:
    @types.coroutine
    def yields_foreign() -> Generator[Any, None, None]:
        yield 42

    async def coro() -> None:
        await yields_foreign()

    with pytest.raises(RuntimeError, match="expected one of its own futures"):
        pump_sync(coro())


def test_pump_sync_refuses_a_running_asyncio_loop() -> None:
    async def main() -> None:
        coro = fake_op(1)
        with pytest.raises(RuntimeError, match="asyncio loop running"):
            pump_sync(coro)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # not left un-awaited

    asyncio.run(main())


def test_trio_cancelled_before_start_does_not_start() -> None:
    async def main() -> None:
        coro = fake_op(1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await pump_trio(coro)
        assert scope.cancelled_caught
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED

    run(main)


async def _soon(fn: Callable[..., object], *args: Any) -> None:
    await trio.sleep(0.05)
    fn(*args)


def test_trio_abort_stops_waiting() -> None:
    """abort(), from another thread or another task: the coroutine, never woken, is
    closed and its error raised at once."""

    async def main(from_thread: bool) -> None:
        coro = fake_op(1, wakes=0)
        pump = _pump._TrioPump()
        error = ConnectionError("cut")
        async with trio.open_nursery() as nursery:
            if from_thread:
                threading.Timer(0.05, pump.abort, (error,)).start()
            else:
                nursery.start_soon(_soon, pump.abort, error)
            with trio.fail_after(2), pytest.raises(ConnectionError) as info:
                await pump_trio(coro, pump)
        assert info.value is error
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED

    run(main, True)
    run(main, False)


def test_trio_abort_before_or_after_the_run() -> None:
    """Aborted before it runs, a pump fails at once; after, the abort reaches nobody."""

    async def main() -> _pump._TrioPump:
        early = _pump._TrioPump()
        early.abort(ConnectionError("cut"))
        coro = fake_op(1)
        with pytest.raises(ConnectionError):
            await pump_trio(coro, early)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        done = _pump._TrioPump()
        assert await pump_trio(fake_op(2), done) == 2
        done.abort(ConnectionError("late"))
        assert await pump_trio(fake_op(3, wakes=2)) == 3  # not woken by the late abort
        await trio.sleep(0.01)
        return done

    done = run(main)
    done.abort(ConnectionError("after the run"))  # trio is gone: nothing to wake


# -- against a server -------------------------------------------------------------------------


def _sync_worker(dsn: str, n: int) -> None:
    conn = pump_sync(psqlpy.connect(dsn=dsn))
    try:
        pump_sync(conn.execute("create temporary table t (i int)"))
        for i in range(n):
            assert pump_sync(conn.fetch_val("select $1::int + 1", [i])) == i + 1
            pump_sync(conn.execute("insert into t values ($1)", [i]))
        rows = pump_sync(conn.fetch("select i from t order by i")).result()
        assert rows == [{"i": i} for i in range(n)]
    finally:
        conn.close()


def test_sync_from_8_threads(dsn: str) -> None:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            _sync_worker(dsn, 50)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_trio_from_20_tasks(dsn: str) -> None:
    async def worker(n: int) -> None:
        conn = await pump_trio(psqlpy.connect(dsn=dsn))
        try:
            await pump_trio(conn.execute("create temporary table t (i int)"))
            for i in range(n):
                assert await pump_trio(conn.fetch_val("select $1::int * 2", [i])) == 2 * i
                await pump_trio(conn.execute("insert into t values ($1)", [i]))
            rows = (await pump_trio(conn.fetch("select i from t order by i"))).result()
            assert rows == [{"i": i} for i in range(n)]
        finally:
            conn.close()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(worker, 30)

    run(main)


def test_trio_tasks_share_one_connection(dsn: str) -> None:
    async def main() -> None:
        conn = await pump_trio(psqlpy.connect(dsn=dsn))
        try:
            results: list[int] = []

            async def query(i: int) -> None:
                results.append(await pump_trio(conn.fetch_val("select $1::int", [i])))

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(query, i)
            assert sorted(results) == list(range(20))
        finally:
            conn.close()

    run(main)


def test_errors_are_psqlpys(dsn: str, closed_port: int) -> None:
    refused = f"postgresql://postgres@127.0.0.1:{closed_port}/test"
    with pytest.raises(psqlpy.Error, match="refused"):
        pump_sync(psqlpy.connect(dsn=refused))
    with pytest.raises(psqlpy.Error, match="refused"):
        run(pump_trio, psqlpy.connect(dsn=refused))
    conn = pump_sync(psqlpy.connect(dsn=dsn))
    try:
        with pytest.raises(psqlpy.Error, match="syntax error"):
            pump_sync(conn.execute("selec 1"))
        with pytest.raises(psqlpy.Error, match="division by zero"):
            run(pump_trio, conn.fetch_val("select 1 / 0"))
        assert pump_sync(conn.fetch_val("select 'still usable'")) == "still usable"
    finally:
        conn.close()


def test_trio_guest_on_asyncio_keeps_the_host_loop(dsn: str) -> None:
    """In trio guest mode the thread's running asyncio loop is put back after each poll."""

    async def trio_main() -> tuple[int, bool]:
        host = asyncio._get_running_loop()
        assert host is not None
        conn = await pump_trio(psqlpy.connect(dsn=dsn))
        try:
            value = await pump_trio(conn.fetch_val("select 5"))
        finally:
            conn.close()
        return value, asyncio._get_running_loop() is host

    async def main() -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        return (await done).unwrap()  # type: ignore[no-any-return]

    assert asyncio.run(main()) == (5, True)


def _activity(conn: Any, pid: int) -> tuple[str, str] | None:
    rows = pump_sync(
        conn.fetch("select state, query from pg_stat_activity where pid = $1", [pid])
    ).result()
    return (rows[0]["state"], rows[0]["query"]) if rows else None


def test_trio_cancel_stops_waiting_but_not_the_server(dsn: str) -> None:
    """Cancelled: pump_trio returns at once, but the query runs on: the adapter must cancel it."""
    conn = pump_sync(psqlpy.connect(dsn=dsn))
    other = pump_sync(psqlpy.connect(dsn=dsn))
    try:
        pid = pump_sync(conn.fetch_val("select pg_backend_pid()"))

        async def main() -> float:
            start = time.monotonic()
            with trio.move_on_after(0.2) as scope:
                await pump_trio(conn.execute("select pg_sleep(5)"))
            assert scope.cancelled_caught
            return time.monotonic() - start

        assert run(main) < 1.0
        assert _activity(other, pid) == ("active", "select pg_sleep(5)")
        assert pump_sync(other.fetch_val("select pg_cancel_backend($1)", [pid])) is True
        start = time.monotonic()
        assert run(pump_trio, conn.fetch_val("select 'usable again'")) == "usable again"
        assert time.monotonic() - start < 1.0
        assert _activity(other, pid) == ("idle", "select 'usable again'")
    finally:
        conn.close()
        other.close()


# -- speed --------------------------------------------------------------------------------


def test_measure_select_1(dsn: str) -> None:
    """µs per ``fetch_val('SELECT 1')``: pump_sync, pump_trio, native asyncio (run with -s)."""
    n = 2000
    conn = pump_sync(psqlpy.connect(dsn=dsn))
    try:
        for _ in range(50):
            pump_sync(conn.fetch_val("SELECT 1"))
        start = time.perf_counter()
        for _ in range(n):
            pump_sync(conn.fetch_val("SELECT 1"))
        sync_us = (time.perf_counter() - start) / n * 1e6

        async def on_trio() -> float:
            for _ in range(50):
                await pump_trio(conn.fetch_val("SELECT 1"))
            start = time.perf_counter()
            for _ in range(n):
                await pump_trio(conn.fetch_val("SELECT 1"))
            return (time.perf_counter() - start) / n * 1e6

        async def on_asyncio() -> float:
            for _ in range(50):
                await conn.fetch_val("SELECT 1")
            start = time.perf_counter()
            for _ in range(n):
                await conn.fetch_val("SELECT 1")
            return (time.perf_counter() - start) / n * 1e6

        trio_us = run(on_trio)
        asyncio_us = asyncio.run(on_asyncio())
    finally:
        conn.close()
    print(
        f"\nµs per SELECT 1 over {n}: pump_sync {sync_us:.0f}, pump_trio {trio_us:.0f}, "
        f"asyncio {asyncio_us:.0f}"
    )
    # only a gross regression fails: the machines are shared and timings noisy
    assert max(sync_us, trio_us, asyncio_us) < 5000
