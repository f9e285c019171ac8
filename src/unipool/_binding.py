"""Which world a pool is bound to: the running event loop, what to say when a pool is
used from another one (or from blocking code), and ``async with`` for whatever opens
with a task group of its own (a pool, a cluster of pools)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

import sniffio

from ._errors import PoolClosed, UsageError

Mode = Literal["sync", "asyncio", "trio"]
_get_running_loop = asyncio._get_running_loop


def current_loop() -> tuple[Literal["asyncio", "trio"], object]:
    """The running async library and its loop (an asyncio loop, or a trio token).

    Raises:
        UsageError: no event loop runs here, or one unipool does not serve.
    """
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise UsageError("no running event loop: use the blocking API") from None
    if library == "asyncio":
        return "asyncio", asyncio.get_running_loop()
    if library == "trio":
        import trio

        return "trio", trio.lowlevel.current_trio_token()
    raise UsageError(f"unsupported async library {library!r}: use asyncio or trio")


def loop_clock(mode: Literal["asyncio", "trio"], loop: object) -> Callable[[], float]:
    """The clock of the running loop (``loop`` as :func:`current_loop` gives it): on an
    asyncio loop whose ``time()`` is asyncio's own, ``time.monotonic`` itself, the same
    clock without a Python call around it."""
    if mode == "trio":
        import trio

        return trio.current_time
    clock: Callable[[], float] = loop.time  # type: ignore[attr-defined]
    if getattr(clock, "__func__", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return clock


def on_loop(mode: Mode | None, loop: object) -> bool:
    """Whether the running event loop is ``loop`` (of ``mode``)."""
    if mode == "asyncio":
        return _get_running_loop() is loop
    try:
        import trio

        return trio.lowlevel.current_trio_token() is loop
    except RuntimeError:
        return False


def in_event_loop() -> bool:
    """Whether an event loop runs in this thread (a blocking call would block it)."""
    return _get_running_loop() is not None or sniffio.thread_local.name is not None


def async_misuse(name: str, closed: bool, mode: Mode | None) -> Exception:
    """The error for async use of pool ``name`` where it cannot serve it."""
    if closed:
        return PoolClosed(f"pool {name!r} is closed; create a new one")
    if mode == "sync":
        return UsageError(
            f"pool {name!r} was opened for blocking use; use 'with pool.acquire()' "
            "and the methods without the a- prefix, or a separate pool"
        )
    return UsageError(
        f"pool {name!r} is bound to another event loop ({mode}); create one pool per event loop"
    )


_S = TypeVar("_S", bound="OpensOnEnter")
_T = TypeVar("_T", bound="OwnsTaskGroup")


class OpensOnEnter:
    """``with x:`` opens ``x`` for blocking use and closes it on leaving."""

    def open(self, wait: bool = True, timeout: float | None = None) -> None:
        raise NotImplementedError

    def close(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class OwnsTaskGroup:
    """``async with x:`` opens a task group for ``x``'s background work, ``aopen()`` s it
    there, and on leaving ``aclose()`` s it, then ends the task group."""

    _task_group_cm: Any = None

    async def aopen(
        self, wait: bool = True, timeout: float | None = None, task_group: Any = None
    ) -> None:
        raise NotImplementedError

    async def aclose(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    async def __aenter__(self: _T) -> _T:
        import anyio

        cm = anyio.create_task_group()
        task_group = await cm.__aenter__()
        try:
            await self.aopen(task_group=task_group)
        except BaseException as exc:
            task_group.cancel_scope.cancel()
            await cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._task_group_cm = cm
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cm, self._task_group_cm = self._task_group_cm, None
        try:
            await self.aclose()
        finally:
            if cm is not None:
                cm.cancel_scope.cancel()
                await cm.__aexit__(None, None, None)
