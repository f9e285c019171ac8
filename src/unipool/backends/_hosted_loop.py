"""An asyncio event loop hosted in a trio run: asyncpg under trio on trio's own thread.

Reaching asyncpg from trio through the shared loop thread (`_bridge`) costs two wake-ups
across threads per call, and both threads then contend for the GIL: every system call
either makes lets the other take it, and the caller waits to get it back. Here instead
each trio run gets an asyncio loop of its own that is never run in the usual way: a
system task of the run drives it, one iteration at a time, whenever it has work (ready
callbacks, a due timer, or I/O on its selector, which trio waits for as for any file
descriptor). A trio task hands a coroutine over by creating its task on that loop and
parks until the task is done; all of it happens in trio's thread, without a system call.

It relies on CPython's private event-loop API (``_run_once``, ``_ready``,
``_scheduled``, ``_stopping``, ``_selector``, ``asyncio._set_running_loop``), checked by
`can_host`; where that fails (another loop implementation, Windows' proactor loop)
callers use the loop thread instead. When the run ends, the loop's remaining tasks are
cancelled and the loop closed: connections opened on it are unusable from then on, as a
pool bound to the run is.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sniffio

from ._trio_local import KiProtected, run_local

if TYPE_CHECKING:
    import trio

__all__ = ["HostedLoop", "can_host", "hosted_loop"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: Iterations of the loop in a row while it has callbacks ready (a task's step, then the
#: callbacks its end schedules), before trio's tasks get their turn.
_ROUNDS: Final = 3
#: Seconds the tasks left when the run ends (a cut's cancel request, say) get to finish,
#: then as long again once cancelled; trio's thread waits for them (the run is over).
_END_GRACE: Final = 1.0
_set_running_loop: Final = asyncio._set_running_loop
_get_running_loop: Final = asyncio._get_running_loop
_LOOP_API: Final = ("_run_once", "_ready", "_scheduled", "_stopping", "_selector",
                    "_asyncgen_firstiter_hook", "_asyncgen_finalizer_hook")  # fmt: skip


def can_host() -> bool:
    """Whether this interpreter's asyncio selector loop can be driven from trio."""
    loop = asyncio.SelectorEventLoop()
    try:
        return all(hasattr(loop, name) for name in _LOOP_API) and callable(
            getattr(loop._selector, "fileno", None)  # type: ignore[attr-defined]
        )
    finally:
        loop.close()


class HostedLoop:
    """One asyncio loop, driven by a system task of one trio run (made in that run).

    Its clock is trio's (``loop.time``), so asyncio's timers and trio's deadlines agree,
    under a test's ``MockClock`` too.
    """

    def __init__(self) -> None:
        import trio

        loop: Any = asyncio.SelectorEventLoop()
        loop.time = trio.lowlevel.current_clock().current_time
        self.loop: asyncio.AbstractEventLoop = loop
        self._fd: int = loop._selector.fileno()
        self._waiting: trio.CancelScope | None = None  # the driver, parked
        #: the trio task parked on each call's task, until the task is done
        self.callers: dict[asyncio.Future[Any], trio.lowlevel.Task] = {}
        self.closed = False

    # -- the driver (a system task of the trio run) -------------------------

    @contextlib.contextmanager
    def _as_asyncio(self) -> Iterator[None]:
        """Run the loop's code as asyncio's in trio's thread: the running loop, sniffio's
        answer and the async-generator hooks are the loop's, and restored after."""
        loop: Any = self.loop
        library = sniffio.thread_local.name
        previous = _get_running_loop()
        hooks = sys.get_asyncgen_hooks()
        sniffio.thread_local.name = None
        _set_running_loop(loop)
        sys.set_asyncgen_hooks(loop._asyncgen_firstiter_hook, loop._asyncgen_finalizer_hook)
        try:
            yield
        finally:
            sys.set_asyncgen_hooks(*hooks)
            _set_running_loop(previous)
            sniffio.thread_local.name = library

    def _iterate(self) -> None:
        """Up to `_ROUNDS` iterations of the loop (while it has callbacks ready), without
        waiting for I/O."""
        loop: Any = self.loop
        with self._as_asyncio():
            loop._stopping = True  # makes its selector's wait a poll (timeout 0)
            try:
                loop._run_once()
                for _ in range(_ROUNDS - 1):
                    if not loop._ready:
                        break
                    loop._run_once()
            finally:
                loop._stopping = False

    async def drive(self) -> None:
        """Run the loop whenever it has work, until the trio run ends."""
        import trio

        loop: Any = self.loop
        try:
            while True:
                self._iterate()
                if loop._ready:
                    await trio.lowlevel.checkpoint()
                    continue
                deadline = loop._scheduled[0].when() if loop._scheduled else math.inf
                with trio.CancelScope(deadline=deadline) as waiting:
                    self._waiting = waiting
                    await trio.lowlevel.wait_readable(self._fd)
                self._waiting = None
        finally:
            self._waiting = None
            self._close()

    def done(self, task: asyncio.Future[Any]) -> None:
        """On the loop: wake the trio task parked on ``task``."""
        import trio

        caller = self.callers.pop(task, None)
        if caller is not None:
            trio.lowlevel.reschedule(caller)

    def _wake(self) -> None:
        """In trio: have the driver look at the loop now (it may be parked)."""
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()

    def _close(self) -> None:
        """The run is over: let what is left on the loop finish (`_END_GRACE`), cancel
        the rest, close the loop, and fail any caller still parked."""
        import outcome
        import trio

        self.closed = True
        loop: Any = self.loop
        del loop.time  # trio's clock may stand still from now on: the loop's own again
        library = sniffio.thread_local.name
        previous = _get_running_loop()  # a host loop, where trio runs as its guest
        sniffio.thread_local.name = None
        _set_running_loop(None)
        try:
            loop.run_until_complete(_drain(_END_GRACE))
        except Exception:  # pragma: no cover - the loop handles its tasks' errors
            logger.exception("closing the hosted asyncio loop failed")
        finally:
            _set_running_loop(previous)
            sniffio.thread_local.name = library
            loop.close()
        error = RuntimeError("the trio run ended while the call ran on its asyncio loop")
        for caller in self.callers.values():
            trio.lowlevel.reschedule(caller, outcome.Error(error))
        self.callers.clear()

    # -- calls from trio tasks ----------------------------------------------

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the loop from a trio task of this run; return or raise its
        outcome. On trio cancellation the task on the loop is cancelled and waited for,
        then `trio.Cancelled` propagates (unless the task finished anyway: its outcome is
        the caller's)."""
        result: T = await _acall_protected.fn(self, fn, args)
        return result


async def _drain(grace: float) -> None:
    """On the closing loop: give its tasks ``grace`` s, cancel them, wait as long again."""
    me = asyncio.current_task()
    for _ in range(2):
        tasks = asyncio.all_tasks() - {me}
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
    for task in asyncio.all_tasks() - {me}:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: nobody is left to take it
    await asyncio.get_running_loop().shutdown_asyncgens()


async def _acall(
    hosted: HostedLoop, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
) -> Any:
    import trio

    if hosted.closed:
        raise RuntimeError("this trio run's asyncio loop is closed")
    # A fresh context, as on the loop thread: the trio task's must not leak onto the loop.
    task: asyncio.Future[Any] = contextvars.Context().run(
        hosted.loop.create_task, _on_loop(fn, args)
    )
    hosted.callers[task] = trio.lowlevel.current_task()
    task.add_done_callback(hosted.done)
    hosted._wake()
    raise_cancel: list[Callable[[], Any]] = []

    def abort(cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
        raise_cancel.append(cancel)
        task.cancel()
        hosted._wake()
        return trio.lowlevel.Abort.FAILED

    await trio.lowlevel.wait_task_rescheduled(abort)
    if raise_cancel and task.cancelled():
        raise_cancel[0]()
    return task.result()


async def _on_loop(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    """``fn(*args)``, called on the loop (as on the loop thread), not in the trio task."""
    return await fn(*args)


#: `_acall` with trio's KeyboardInterrupt protection: an interrupt comes through `abort`,
#: which cancels the task on the loop.
_acall_protected = KiProtected(_acall)


def hosted_loop() -> HostedLoop:
    """This trio run's hosted loop, made and started on first use; call it in trio."""
    return run_local("hosted_loop", _start)


def _start() -> HostedLoop:
    import trio

    hosted = HostedLoop()
    trio.lowlevel.spawn_system_task(hosted.drive, name="unipool-hosted-asyncio-loop")
    return hosted
