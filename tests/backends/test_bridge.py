"""Tests for the asyncio loop-thread bridge (`unipool.backends._bridge`)."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import trio

from unipool.backends import _bridge
from unipool.backends._bridge import LoopThread, shared_loop

T = TypeVar("T")


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread("test-loop")
    yield loop_thread
    loop_thread.stop()


def trio_run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return trio.run(fn, *args)


async def echo(*args: Any) -> tuple[Any, ...]:
    await asyncio.sleep(0)
    return args


async def fail(ex: BaseException) -> None:
    await asyncio.sleep(0)
    raise ex


async def boom() -> None:
    raise ValueError("boom")  # a new exception: one passed in as an argument makes a cycle


class Slow:
    """A coroutine function that sleeps, then records its cleanup."""

    def __init__(self, cleanup: float = 0.05) -> None:
        self.cleanup = cleanup
        self.started = threading.Event()
        self.cleaned = threading.Event()

    async def __call__(self, seconds: float = 10.0) -> str:
        self.started.set()
        try:
            await asyncio.sleep(seconds)
            return "slept"
        finally:
            await asyncio.shield(asyncio.sleep(self.cleanup))  # cleanup that itself awaits
            self.cleaned.set()


# results and exceptions


def test_result_and_args_pass_through(lt: LoopThread) -> None:
    assert lt.call(echo, 1, "a") == (1, "a")
    assert trio_run(lt.acall, echo, 2, None) == (2, None)


def test_exception_is_the_same_object(lt: LoopThread) -> None:
    ex = ValueError("boom")
    with pytest.raises(ValueError) as info:
        lt.call(fail, ex)
    assert info.value is ex
    with pytest.raises(ValueError) as info:
        trio_run(lt.acall, fail, ex)
    assert info.value is ex


def test_fn_raising_before_awaiting(lt: LoopThread) -> None:
    def not_async() -> Awaitable[None]:
        raise KeyError("sync")

    with pytest.raises(KeyError, match="sync"):
        lt.call(not_async)
    with pytest.raises(KeyError, match="sync"):
        trio_run(lt.acall, not_async)


def test_awaitable_that_is_not_a_coroutine(lt: LoopThread) -> None:
    def future() -> asyncio.Future[int]:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(7)
        return fut

    assert lt.call(future) == 7


def test_coroutine_raising_cancelled_error_itself(lt: LoopThread) -> None:
    with pytest.raises(asyncio.CancelledError):
        lt.call(fail, asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        trio_run(lt.acall, fail, asyncio.CancelledError())


def _thread_of(lt: LoopThread) -> threading.Thread | None:
    return lt._thread


def test_lazy_start_and_restart(lt: LoopThread) -> None:
    assert _thread_of(lt) is None
    loop = lt.loop
    thread = _thread_of(lt)
    assert thread is not None and thread.daemon and thread.is_alive()
    assert lt.call(echo, 1) == (1,)
    lt.stop()
    assert not thread.is_alive() and loop.is_closed()
    assert lt.call(echo, 2) == (2,)
    assert lt.loop is not loop


def test_stop_cancels_pending_work(lt: LoopThread) -> None:
    slow = Slow()
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            lt.call(slow)
        except BaseException as ex:
            errors.append(ex)

    thread = threading.Thread(target=caller)
    thread.start()
    assert slow.started.wait(5)
    lt.stop()
    thread.join(5)
    assert slow.cleaned.is_set()
    assert len(errors) == 1 and isinstance(errors[0], asyncio.CancelledError)


# concurrency


def test_many_threads(lt: LoopThread) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(200):
                assert lt.call(echo, n, i) == (n, i)
        except BaseException as ex:
            errors.append(ex)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_many_trio_tasks(lt: LoopThread) -> None:
    results: list[tuple[Any, ...]] = []

    async def worker(n: int) -> None:
        results.extend([await lt.acall(echo, n, i) for i in range(50)])

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(worker, n)

    trio.run(main)
    assert sorted(results) == [(n, i) for n in range(100) for i in range(50)]


def test_calls_handed_over_together_wake_the_loop_once(lt: LoopThread) -> None:
    """100 trio tasks hand a call over in one go: the loop thread is woken (a write to its
    self-pipe) once per batch, not once per call, and every task gets its own result."""
    loop = lt.loop
    wakeups = 0
    real = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return real(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    results: list[tuple[Any, ...]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(_collect, results, lt.acall(echo, n))

    trio.run(main)
    assert sorted(results) == [(n,) for n in range(100)]
    assert wakeups < 50, wakeups


async def _collect(results: list[Any], call: Awaitable[Any]) -> None:
    results.append(await call)


def test_a_hand_over_interrupted_leaves_the_next_ones_working(lt: LoopThread) -> None:
    """An interrupt inside the hand-over (its wake-up of the loop): that call raises it, its
    job never runs, and the next calls are served."""
    loop = lt.loop
    real = loop.call_soon_threadsafe
    ran: list[int] = []

    async def record(n: int) -> int:
        ran.append(n)
        return n

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        loop.call_soon_threadsafe = real  # type: ignore[method-assign]
        raise KeyboardInterrupt

    loop.call_soon_threadsafe = interrupted  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyboardInterrupt):
        lt.call(record, 1, timeout=1)
    assert [lt.call(record, n, timeout=1) for n in (2, 3)] == [2, 3]
    assert ran == [2, 3]


# giving up: timeout, KeyboardInterrupt, trio cancellation


def test_timeout_cancels_and_waits_for_cleanup(lt: LoopThread) -> None:
    slow = Slow()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        lt.call(slow, timeout=0.05)
    assert slow.cleaned.is_set()
    assert 0.09 <= time.monotonic() - t0 < 5
    assert lt.call(echo, "still") == ("still",)


def test_timeout_result_if_task_finishes_anyway(lt: LoopThread) -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "finished anyway"
        return "slept"

    assert lt.call(stubborn, timeout=0.05) == "finished anyway"


def test_timeout_infinite(lt: LoopThread) -> None:
    assert lt.call(echo, 1, timeout=math.inf) == (1,)
    assert lt.call(echo, 2, timeout=threading.TIMEOUT_MAX) == (2,)


def test_timeout_zero_and_negative(lt: LoopThread) -> None:
    slow = Slow(cleanup=0)
    for timeout in (0, -1):
        with pytest.raises(TimeoutError):
            lt.call(slow, timeout=timeout)
    assert slow.cleaned.is_set() or not slow.started.is_set()  # maybe cancelled before it ran


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_keyboard_interrupt_cancels_and_waits(lt: LoopThread, sigint: None) -> None:
    slow = Slow()
    main = threading.get_ident()

    def interrupt() -> None:
        slow.started.wait(5)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        lt.call(slow)
    assert slow.cleaned.is_set()


def test_trio_cancellation_cancels_and_waits(lt: LoopThread) -> None:
    slow = Slow()

    async def main() -> None:
        with trio.move_on_after(0.05) as scope:
            try:
                await lt.acall(slow)
            except trio.Cancelled:
                assert slow.cleaned.is_set()
                raise
        assert scope.cancelled_caught
        assert slow.cleaned.is_set()
        assert await lt.acall(echo, "still") == ("still",)

    trio.run(main)


def test_trio_cancellation_result_if_task_finishes_anyway(lt: LoopThread) -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "finished anyway"
        return "slept"

    async def main() -> None:
        with trio.move_on_after(0.05) as scope:
            assert await lt.acall(stubborn) == "finished anyway"
            await trio.lowlevel.checkpoint()
            pytest.fail("the cancellation is still pending")  # pragma: no cover
        assert scope.cancelled_caught

    trio.run(main)


def test_trio_already_cancelled_scope(lt: LoopThread) -> None:
    slow = Slow(cleanup=0)

    async def main() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await lt.acall(slow)
        assert scope.cancelled_caught

    trio.run(main)
    assert slow.cleaned.is_set() or not slow.started.is_set()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_trio_keyboard_interrupt_cancels_and_waits(lt: LoopThread, sigint: None) -> None:
    slow = Slow()
    main = threading.get_ident()

    def interrupt() -> None:
        slow.started.wait(5)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        trio_run(lt.acall, slow)
    assert slow.cleaned.is_set()


def test_abandon_before_start_was_queued(lt: LoopThread) -> None:
    job = _bridge._ThreadJob(echo, ())
    job.loop = lt.loop  # as if an interrupt came between this and queueing `start`
    job.abandon()
    assert job.finished and job.task is None


def _garbage_after(fn: Callable[[], object]) -> int:
    gc.collect()
    gc.disable()
    try:
        fn()
        return gc.collect()
    finally:
        gc.enable()


def test_no_reference_cycles_per_call(lt: LoopThread) -> None:
    def calls() -> None:  # no pytest.raises: its ExceptionInfo makes cycles of its own
        for _ in range(20):
            try:
                lt.call(boom)
            except ValueError:
                pass
            try:
                lt.call(Slow(cleanup=0), timeout=0)
            except TimeoutError:
                pass

    async def acalls(n: int) -> None:
        for _ in range(n):
            try:
                await lt.acall(boom)
            except ValueError:
                pass
            with trio.move_on_after(0):
                await lt.acall(Slow(cleanup=0))

    lt.call(echo)
    assert _garbage_after(calls) == 0
    baseline = _garbage_after(lambda: trio.run(acalls, 0))  # trio.run's own
    assert _garbage_after(lambda: trio.run(acalls, 20)) <= baseline + 5


# misuse, shared instance, fork, exit


def test_call_from_the_loop_thread_raises(lt: LoopThread) -> None:
    async def reenter() -> None:
        assert lt.in_loop_thread()
        lt.call(echo)

    assert not lt.in_loop_thread()
    with pytest.raises(RuntimeError, match="deadlock"):
        lt.call(reenter)
    with pytest.raises(RuntimeError, match="loop thread"):
        lt.call(_stop_from_inside, lt)


async def _stop_from_inside(lt: LoopThread) -> None:
    lt.stop()


def test_shared_loop_is_shared() -> None:
    assert shared_loop() is shared_loop()
    assert shared_loop().call(echo, 3) == (3,)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="os.fork on Linux only")
def test_fork_child_gets_a_new_loop_thread() -> None:
    parent = shared_loop()
    parent_loop = parent.loop
    assert parent.call(echo, 1) == (1,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "multi-threaded fork"
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            child = shared_loop()
            ok = child is not parent and child.call(echo, 2) == (2,)
            ok = ok and child.loop is not parent_loop and parent.call(echo, 3) == (3,)
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.call(echo, 4) == (4,)


def test_exit_stops_the_loop_cleanly(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import asyncio, threading
        from unipool.backends._bridge import shared_loop

        async def spawned():
            await asyncio.sleep(0.05)
            print("spawned done", flush=True)

        async def pending():
            try:
                await asyncio.sleep(60)
            finally:
                await asyncio.sleep(0.01)
                print("cleaned up", flush=True)
                asyncio.get_running_loop().create_task(spawned())  # like asyncpg's cancel

        async def short():
            await asyncio.sleep(0.1)
            print("short done", flush=True)

        def call(fn):
            try:
                loop.call(fn)
            except asyncio.CancelledError:
                print("caller saw CancelledError", flush=True)

        loop = shared_loop()
        threading.Thread(target=call, args=(pending,), daemon=True).start()
        threading.Thread(target=call, args=(short,), daemon=True).start()
        loop.call(asyncio.sleep, 0.02)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("short done\ncleaned up\n")  # grace, then cancellation
    assert "spawned done" in proc.stdout  # tasks spawned by cleanups may finish
    assert proc.stderr == ""
    assert _bridge.EXIT_GRACE < 5


# a real driver: asyncpg


@pytest.fixture(scope="module")
def pg(dsn: str) -> Iterator[tuple[LoopThread, Any]]:
    import asyncpg

    loop_thread = LoopThread("test-asyncpg")
    try:
        conn = loop_thread.call(asyncpg.connect, dsn, timeout=5)
    except BaseException:
        loop_thread.stop()
        raise
    yield loop_thread, conn
    loop_thread.call(conn.close)
    loop_thread.stop()


def test_asyncpg_from_threads(pg: tuple[LoopThread, Any]) -> None:
    loop_thread, conn = pg
    lock = threading.Lock()  # one connection: one query at a time
    results: list[int] = []

    def worker() -> None:
        for _ in range(20):
            with lock:
                results.append(loop_thread.call(conn.fetchval, "select 1"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1] * 160


def test_asyncpg_from_trio(pg: tuple[LoopThread, Any]) -> None:
    loop_thread, conn = pg

    async def main() -> list[int]:
        return [await loop_thread.acall(conn.fetchval, "select 1") for _ in range(50)]

    assert trio.run(main) == [1] * 50


def _backend_state(loop_thread: LoopThread, dsn: str, pid: int) -> str | None:
    import asyncpg

    async def state() -> str | None:
        mon = await asyncpg.connect(dsn)
        try:
            sql = "select state from pg_stat_activity where pid = $1"
            value: str | None = await mon.fetchval(sql, pid)
            return value
        finally:
            await mon.close()

    return loop_thread.call(state)


def _wait_idle(loop_thread: LoopThread, dsn: str, pid: int) -> str | None:
    deadline = time.monotonic() + 3
    state = _backend_state(loop_thread, dsn, pid)
    while state != "idle" and time.monotonic() < deadline:
        time.sleep(0.02)
        state = _backend_state(loop_thread, dsn, pid)
    return state


def test_asyncpg_timeout_cancels_on_server(pg: tuple[LoopThread, Any], dsn: str) -> None:
    loop_thread, conn = pg
    pid = conn.get_server_pid()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        loop_thread.call(conn.execute, "select pg_sleep(5)", timeout=0.2)
    assert time.monotonic() - t0 < 2
    assert _wait_idle(loop_thread, dsn, pid) == "idle"
    assert loop_thread.call(conn.fetchval, "select 1") == 1


def test_asyncpg_trio_cancellation_cancels_on_server(pg: tuple[LoopThread, Any], dsn: str) -> None:
    loop_thread, conn = pg
    pid = conn.get_server_pid()

    async def main() -> None:
        with trio.move_on_after(0.2) as scope:
            await loop_thread.acall(conn.execute, "select pg_sleep(5)")
        assert scope.cancelled_caught

    t0 = time.monotonic()
    trio.run(main)
    assert time.monotonic() - t0 < 2
    assert _wait_idle(loop_thread, dsn, pid) == "idle"
    assert trio_run(loop_thread.acall, conn.fetchval, "select 1") == 1


def test_trio_context_does_not_leak_onto_the_loop() -> None:
    """A job started from trio runs in a fresh context: anyio and sniffio see asyncio."""
    import sniffio

    lt = LoopThread(name="unipool-test-context")

    async def library() -> str:
        return sniffio.current_async_library()

    async def main() -> str:
        return await lt.acall(library)

    try:
        assert trio.run(main) == "asyncio"
    finally:
        lt.stop()


class _Inner:
    """A driver connection that says it is clean and records its resets."""

    raw = None

    def __init__(self) -> None:
        self.resets: list[bool] = []

    def is_clean(self) -> bool:
        return True

    async def execute(self, sql: str, args: object) -> str:
        return "OK"

    async def reset(self, dirty: bool) -> bool:
        self.resets.append(dirty)
        return True


def test_an_interrupted_call_leaves_the_bridge_unsure_until_a_full_reset() -> None:
    """The driver may still be settling after an interrupted call (asyncpg resyncing after
    a cancel): its own idea of the session cannot be trusted until a reset ran there."""
    from unipool.backends._bridged import SyncBridge

    class Runner:
        def call(self, fn: Any, *args: Any) -> Any:
            if fn.__name__ == "execute" and args[0] == "interrupted":
                raise KeyboardInterrupt
            return asyncio.run(fn(*args))

    inner = _Inner()
    bridge = SyncBridge(inner, Runner(), lambda: None)  # type: ignore[arg-type]
    assert bridge.execute("select 1", ()) == "OK" and bridge.is_clean()
    with pytest.raises(KeyboardInterrupt):
        bridge.execute("interrupted", ())
    assert not bridge.is_clean()
    assert bridge.reset(False) is True and inner.resets == [True]  # a full reset
    assert bridge.is_clean()
