"""A loop thread: asyncio-only drivers serving blocking code and trio.

One asyncio event loop runs on a daemon thread.  A blocking caller hands a
coroutine function over with `LoopThread.call`, a trio task with
`LoopThread.acall`.  The hand-off is lean: the loop creates the task, and the
task's done-callback wakes the caller (a pre-acquired `threading.Lock` it
blocks on, or ``trio.lowlevel.reschedule`` in trio).  Both ways go in batches:
one ``call_soon_threadsafe`` wakes the loop for every job handed over
meanwhile, one ``run_sync_soon`` wakes trio for every job finished meanwhile
(``_trio_wakes``).  No `concurrent.futures`, no anyio portal.

A caller that gives up (timeout, KeyboardInterrupt, trio cancellation)
cancels the task on the loop and waits until it has finished, so what it was
doing is complete or cleaned up before the caller goes on.  If the task
finishes anyway (it had completed, or swallowed the cancellation), its
outcome is the caller's.

The loop is stopped at interpreter exit, after a short grace for pending
tasks.  After `os.fork` a child starts new loop threads on demand.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from ._trio_local import KiProtected
from ._trio_wakes import trio_wakes

if TYPE_CHECKING:
    import trio

__all__ = ["EXIT_GRACE", "LoopThread", "shared_loop"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: Seconds pending tasks get to finish at interpreter exit before they are cancelled.
EXIT_GRACE: Final = 0.5
#: Seconds cancelled tasks get to finish when a loop thread stops.
CANCEL_WAIT: Final = 5.0

_IN_LOOP = "called from the loop thread's own loop: this would deadlock"


class _Job(Generic[T]):
    """One coroutine run on the loop; `start` and `cancel` run on the loop."""

    __slots__ = ("args", "error", "finished", "fn", "loop", "task")

    def __init__(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.loop: asyncio.AbstractEventLoop | None = None  # set when submitted
        self.task: asyncio.Future[T] | None = None
        self.error: BaseException | None = None
        self.finished = False  # set on the loop, once: the outcome is ready

    def start(self) -> None:
        if self.finished:  # its caller gave up before it started: nothing to run
            return
        try:
            self.task = task = asyncio.ensure_future(self.fn(*self.args))
        except BaseException as ex:  # fn raised before it could be awaited
            self.error = ex
            self._finish(None)
        else:
            task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Future[T] | None) -> None:
        if not self.finished:
            self.finished = True
            self.done(task)

    def done(self, task: asyncio.Future[T] | None) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        """On the loop: stop the job; nothing to do once it has finished (its outcome may
        even have been taken already)."""
        if self.finished:
            return
        if self.task is not None:
            self.task.cancel()
        else:  # an interrupt came before `start` was queued
            self.error = asyncio.CancelledError()
            self._finish(None)

    def cancelled(self) -> bool:
        """True if the task ended by cancellation."""
        return self.task is not None and self.task.cancelled()

    def result(self) -> T:
        """The task's result, or raise its exception; once (dropped: no reference cycle)."""
        task, error = self.task, self.error
        self.task = self.error = None
        try:
            if task is None:
                assert error is not None
                raise error
            return task.result()
        finally:
            del task, error


class _ThreadJob(_Job[T]):
    """A job a blocking thread waits for on `lock`, released when `finished`."""

    __slots__ = ("lock",)

    def __init__(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> None:
        super().__init__(fn, args)
        self.lock = threading.Lock()
        self.lock.acquire()

    def done(self, task: asyncio.Future[T] | None) -> None:
        self.lock.release()

    def abandon(self) -> None:
        """Cancel the task (if submitted and not finished) and wait until it has finished."""
        if self.loop is None or self.finished:
            return
        try:
            self.loop.call_soon_threadsafe(self.cancel)
        except RuntimeError:  # the loop is closed: nothing runs there any more
            return
        self.lock.acquire()
        if self.task is not None and not self.task.cancelled():
            self.task.exception()  # retrieved: no "exception was never retrieved" log


class _TrioJob(_Job[T]):
    """A job a trio task is parked on; `abort` and `wake` run in trio."""

    __slots__ = ("raise_cancel", "trio_task", "wakes")

    def __init__(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> None:
        import trio

        super().__init__(fn, args)
        self.trio_task = trio.lowlevel.current_task()
        self.wakes = trio_wakes()
        self.raise_cancel: Callable[[], Any] | None = None

    def done(self, task: asyncio.Future[T] | None) -> None:
        self.wakes.add(self.wake)

    def wake(self) -> None:
        import outcome
        import trio

        if self.raise_cancel is not None and self.cancelled():
            get: Callable[[], Any] = self.raise_cancel
        else:
            get = self.result
        # the outcome is no local: its traceback reaches this frame, a reference cycle
        trio.lowlevel.reschedule(self.trio_task, outcome.capture(get))

    def abort(self, raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
        import trio

        self.raise_cancel = raise_cancel
        assert self.loop is not None
        try:
            self.loop.call_soon_threadsafe(self.cancel)
        except RuntimeError:  # the loop is closed: the task has finished
            pass
        return trio.lowlevel.Abort.FAILED


class LoopThread:
    """One asyncio event loop running on a daemon thread."""

    def __init__(self, name: str = "unipool-loop") -> None:
        self.name = name
        self._reset()
        _instances.add(self)

    def _reset(self) -> None:
        self._guard = threading.Lock()  # start, stop, and hand-offs to the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Future[float] | None = None
        self._ident: int | None = None
        self._starter: _Starter | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop; starts the thread if needed."""
        with self._guard:
            return self._loop or self._start()

    def in_loop_thread(self) -> bool:
        """True if called from the loop's own thread."""
        return threading.get_ident() == self._ident

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` on the loop from a blocking thread; return or raise its outcome.

        On timeout the task is cancelled and waited for, then `TimeoutError`
        is raised.  On KeyboardInterrupt (any BaseException while waiting)
        the task is cancelled and waited for, then the exception re-raised.
        """
        job = _ThreadJob(fn, args)
        timed_out = False
        try:
            self._submit(job)
            if not job.lock.acquire(True, _lock_timeout(timeout)):
                timed_out = True
                job.abandon()
        except BaseException:
            job.abandon()
            raise
        if timed_out and job.cancelled():
            raise TimeoutError(f"{_name(fn)} timed out after {timeout} s")
        return job.result()

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the loop from a trio task; return or raise its outcome.

        On trio cancellation the task is cancelled and waited for, then
        `trio.Cancelled` propagates.
        """
        result: T = await _acall_protected.fn(self, fn, args)
        return result

    def stop(self, grace: float = 0.0) -> None:
        """Stop the loop and join the thread; pending tasks get ``grace`` s, then are cancelled.

        The next use starts a new loop.
        """
        if self.in_loop_thread():
            raise RuntimeError("stop() called from the loop thread")
        with self._guard:
            loop, thread, stopping = self._loop, self._thread, self._stopping
            self._loop = self._thread = self._stopping = self._ident = None
            self._starter = None
        if loop is None or thread is None or stopping is None:
            return
        loop.call_soon_threadsafe(_set_result, stopping, grace)
        thread.join(grace + CANCEL_WAIT + 5.0)
        if thread.is_alive():  # pragma: no cover - a task stuck in a shielded wait
            logger.warning("loop thread %r did not stop in time", self.name)

    def _submit(self, job: _Job[Any]) -> None:
        """Hand ``job`` to the loop, starting it if needed."""
        if threading.get_ident() == self._ident:
            raise RuntimeError(_IN_LOOP)
        with self._guard:
            job.loop = self._loop or self._start()
            starter = self._starter
            assert starter is not None
            starter.submit(job)

    def _start(self) -> asyncio.AbstractEventLoop:
        """Start the loop thread; called with the guard held."""
        loop = asyncio.new_event_loop()
        stopping: asyncio.Future[float] = loop.create_future()
        thread = threading.Thread(target=_serve, args=(loop, stopping), name=self.name)
        thread.daemon = True
        thread.start()
        self._loop, self._thread, self._stopping, self._ident = loop, thread, stopping, thread.ident
        self._starter = _Starter(loop)
        return loop


class _Starter:
    """The jobs handed over to one loop, started in batches: one wake-up of the loop
    (``call_soon_threadsafe``, a write to its self-pipe) while a batch is pending, not
    one per job."""

    __slots__ = ("_jobs", "_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: deque[_Job[Any]] = deque()
        self._pending = False

    def submit(self, job: _Job[Any]) -> None:
        """Any thread but the loop's, under the loop thread's guard."""
        self._jobs.append(job)
        if not self._pending:
            self._pending = True
            try:
                # A fresh context: the caller's (a trio task's, say) must not leak onto the loop.
                self._loop.call_soon_threadsafe(self._start_all, context=contextvars.Context())
            except BaseException:  # the loop is closed, or an interrupt: the next one asks
                self._pending = False
                raise

    def _start_all(self) -> None:
        """On the loop: start every job handed over (cleared first: a job handed over
        meanwhile is either started here or schedules another call)."""
        self._pending = False
        jobs = self._jobs
        while jobs:
            jobs.popleft().start()


async def _acall(lt: LoopThread, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    """`LoopThread.acall`, run KeyboardInterrupt-protected: an interrupt comes through `abort`."""
    import trio

    job: _TrioJob[Any] = _TrioJob(fn, args)
    lt._submit(job)
    return await trio.lowlevel.wait_task_rescheduled(job.abort)


#: `_acall` with trio's KeyboardInterrupt protection.
_acall_protected = KiProtected(_acall)


def _lock_timeout(timeout: float | None) -> float:
    """``timeout`` as `threading.Lock.acquire` takes it."""
    if timeout is None or timeout >= threading.TIMEOUT_MAX:
        return -1
    return max(timeout, 0.0)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _set_result(fut: asyncio.Future[float], value: float) -> None:
    if not fut.done():
        fut.set_result(value)


def _serve(loop: asyncio.AbstractEventLoop, stopping: asyncio.Future[float]) -> None:
    """The loop thread: run until stopped, drain, close."""
    try:
        loop.run_until_complete(_drain(stopping))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


async def _drain(stopping: asyncio.Future[float]) -> None:
    """Wait for the stop signal, give tasks ``grace`` s, cancel them and wait for them.

    Tasks they spawn meanwhile (a driver's cancel request) may finish, up to `CANCEL_WAIT`.
    """
    grace = await stopping
    loop, me = asyncio.get_running_loop(), asyncio.current_task()
    if grace > 0 and (tasks := asyncio.all_tasks() - {me}):
        await asyncio.wait(tasks, timeout=grace)
    for task in asyncio.all_tasks() - {me}:
        task.cancel()
    deadline = loop.time() + CANCEL_WAIT
    while (tasks := asyncio.all_tasks() - {me}) and loop.time() < deadline:
        await asyncio.wait(tasks, timeout=deadline - loop.time())
    if tasks:  # pragma: no cover - a task ignoring cancellation
        logger.warning("%d task(s) still pending when the loop thread stopped", len(tasks))
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=1.0)


_instances: weakref.WeakSet[LoopThread] = weakref.WeakSet()
_shared: LoopThread | None = None
_shared_guard = threading.Lock()


def shared_loop() -> LoopThread:
    """The process-wide loop thread, created on first use; a new one in a child after fork."""
    global _shared
    shared = _shared
    if shared is None:
        with _shared_guard:
            if _shared is None:
                _shared = LoopThread()
            shared = _shared
    return shared


@atexit.register
def _stop_all() -> None:
    """Stop every running loop thread at interpreter exit."""
    for lt in list(_instances):
        lt.stop(EXIT_GRACE)


_orphans: list[asyncio.AbstractEventLoop] = []


def _after_fork_in_child() -> None:
    """The parent's loop threads do not exist here: forget them."""
    global _shared, _shared_guard
    _shared = None
    _shared_guard = threading.Lock()
    for lt in list(_instances):
        if lt._loop is not None:
            _orphans.append(lt._loop)  # never closed, never collected: no ResourceWarning
        lt._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
