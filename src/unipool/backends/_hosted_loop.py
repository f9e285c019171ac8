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
import contextvars
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sniffio

if TYPE_CHECKING:
    import trio

__all__ = ["HostedLoop", "can_host", "hosted_loop"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: Iterations of the loop in a row while it has callbacks ready (a task's step, then the
#: callbacks its end schedules), before trio's tasks get their turn.
_ROUNDS: Final = 3
#: Iterations given to a closing loop's cancelled tasks to finish.
_CLOSING_ITERATIONS: Final = 5
_set_running_loop: Final = asyncio._set_running_loop
_get_running_loop: Final = asyncio._get_running_loop


def can_host() -> bool:
    """Whether this interpreter's default asyncio loop can be driven from trio."""
    loop = asyncio.new_event_loop()
    try:
        selector = getattr(loop, "_selector", None)
        return (
            all(hasattr(loop, name) for name in ("_run_once", "_ready", "_scheduled", "_stopping"))
            and selector is not None
            and callable(getattr(selector, "fileno", None))
        )
    finally:
        loop.close()


class HostedLoop:
    """One asyncio loop, driven by a system task of one trio run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._fd = self.loop._selector.fileno()  # type: ignore[attr-defined]
        self._waiting: trio.CancelScope | None = None  # the driver, parked
        self.closed = False

    # -- the driver (a system task of the trio run) -------------------------

    def _iterate(self, rounds: int = 1) -> None:
        """Up to ``rounds`` iterations of the loop (while it has callbacks ready), in
        trio's thread, without waiting for I/O."""
        loop: Any = self.loop
        library = sniffio.thread_local.name
        sniffio.thread_local.name = None  # code on the loop is asyncio's, not trio's
        _set_running_loop(loop)
        loop._stopping = True  # makes its selector's wait a poll (timeout 0)
        try:
            loop._run_once()
            for _ in range(rounds - 1):
                if not loop._ready:
                    break
                loop._run_once()
        finally:
            loop._stopping = False
            _set_running_loop(None)
            sniffio.thread_local.name = library

    async def drive(self) -> None:
        """Run the loop whenever it has work, until the trio run ends."""
        import trio

        loop: Any = self.loop
        try:
            while True:
                try:
                    self._iterate(_ROUNDS)
                except Exception:  # pragma: no cover - the loop handles callbacks' errors
                    logger.exception("hosted asyncio loop iteration failed")
                if loop._ready:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    continue
                deadline = math.inf
                if loop._scheduled:
                    delay = loop._scheduled[0].when() - loop.time()
                    deadline = trio.current_time() + max(delay, 0.0)
                with trio.CancelScope(deadline=deadline) as waiting:
                    self._waiting = waiting
                    await trio.lowlevel.wait_readable(self._fd)
                self._waiting = None
        finally:
            self._waiting = None
            self._close()

    def _wake(self) -> None:
        """In trio: have the driver look at the loop now (it may be parked)."""
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()

    def _close(self) -> None:
        """The run is over: cancel what is left on the loop, let it finish, close."""
        self.closed = True
        loop = self.loop
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        for _ in range(_CLOSING_ITERATIONS):
            if not any(not task.done() for task in tasks):
                break
            self._iterate()
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: nobody is left to take it
        loop.close()

    # -- calls from trio tasks ----------------------------------------------

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the loop from a trio task of this run; return or raise its
        outcome. On trio cancellation the task on the loop is cancelled and waited for,
        then `trio.Cancelled` propagates (unless the task finished anyway: its outcome is
        the caller's)."""
        run = _acall_protected or _protect_acall()
        result: T = await run(self, fn, args)
        return result


async def _acall(
    hosted: HostedLoop, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
) -> Any:
    import trio

    if hosted.closed:
        raise RuntimeError("this trio run's asyncio loop is closed")
    # A fresh context, as on the loop thread: the trio task's must not leak onto the loop.
    task: asyncio.Future[Any] = contextvars.Context().run(
        asyncio.ensure_future, fn(*args), loop=hosted.loop
    )
    caller = trio.lowlevel.current_task()
    raise_cancel: list[Callable[[], Any]] = []
    task.add_done_callback(lambda _: trio.lowlevel.reschedule(caller))
    hosted._wake()

    def abort(cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
        raise_cancel.append(cancel)
        task.cancel()
        hosted._wake()
        return trio.lowlevel.Abort.FAILED

    await trio.lowlevel.wait_task_rescheduled(abort)
    if raise_cancel and task.cancelled():
        raise_cancel[0]()
    return task.result()


_acall_protected: Callable[..., Awaitable[Any]] | None = None


def _protect_acall() -> Callable[..., Awaitable[Any]]:
    """`_acall` with trio's KeyboardInterrupt protection: an interrupt comes through
    `abort`, which cancels the task on the loop (trio is imported on first use)."""
    global _acall_protected
    import trio

    _acall_protected = trio.lowlevel.enable_ki_protection(_acall)
    return _acall_protected


_hosted: trio.lowlevel.RunVar[HostedLoop] | None = None
_making = threading.Lock()


def hosted_loop() -> HostedLoop:
    """This trio run's hosted loop, made and started on first use; call it in trio."""
    import trio

    global _hosted
    if _hosted is None:
        with _making:  # trio runs in other threads may get here at the same time
            if _hosted is None:
                _hosted = trio.lowlevel.RunVar("unipool_hosted_loop")
    try:
        return _hosted.get()
    except LookupError:
        hosted = HostedLoop()
        trio.lowlevel.spawn_system_task(hosted.drive, name="unipool-hosted-asyncio-loop")
        _hosted.set(hosted)
        return hosted
