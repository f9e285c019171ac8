"""Carry an async driver connection into blocking code or trio through a runner.

asyncpg and psqlpy only offer coroutines. A *runner* runs one of their
coroutine functions to completion in the caller's world: `SyncRunner` for
blocking code, `AsyncRunner` for trio. The shared asyncio loop thread
(`_bridge.LoopThread`) is both; psqlpy's pumps are one each. The runner owns
timeouts and cancellation: when the caller gives up, the operation is
cancelled where it runs and waited for before the caller goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from .._errors import Error
from .._record import Record
from .base import AsyncConn, CopyTarget

T = TypeVar("T")


class SyncRunner(Protocol):
    """Runs a coroutine function to completion from a blocking thread."""

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """``fn(*args)``'s outcome; if the caller gives up, the call is stopped first."""
        ...


class AsyncRunner(Protocol):
    """Runs a coroutine function to completion from a trio task."""

    async def acall(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """``fn(*args)``'s outcome; if the task is cancelled, the call is stopped first."""
        ...


class SyncBridge:
    """A blocking connection over an async one, through a `SyncRunner`."""

    __slots__ = ("_kill", "_runner", "_unsure", "inner")

    def __init__(self, inner: AsyncConn, runner: SyncRunner, kill: Callable[[], None]) -> None:
        self.inner = inner
        self._runner = runner
        self._kill = kill
        self._unsure = False

    @property
    def raw(self) -> Any:
        """The driver's own connection (asked of the connection it bridges, every time)."""
        return self.inner.raw

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return self._runner.call(fn, *args)
        except BaseException as exc:
            self._unsure |= _unsure_after(exc)
            raise

    def execute(self, sql: str, args: Sequence[Any]) -> str:
        return self._call(self.inner.execute, sql, args)  # type: ignore[no-any-return]

    def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        self._call(self.inner.executemany, sql, args_seq)

    def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]:
        return self._call(self.inner.fetch, sql, args)  # type: ignore[no-any-return]

    def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None:
        return self._call(self.inner.fetchrow, sql, args)  # type: ignore[no-any-return]

    def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any:
        return self._call(self.inner.fetchval, sql, args, column)

    def copy_records(self, target: CopyTarget, records: Iterable[Sequence[Any]]) -> str:
        return self._call(self.inner.copy_records, target, records)  # type: ignore[no-any-return]

    def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str:
        return self._call(self.inner.copy_in, target, source, options)  # type: ignore[no-any-return]

    def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str:
        return self._call(self.inner.copy_out, target, output, options)  # type: ignore[no-any-return]

    def alive(self) -> bool:
        return self.inner.alive()

    def is_clean(self) -> bool:
        """Clean, unless a call was interrupted: then only a reset (on the driver's own
        side, after the interrupted call has settled) can tell."""
        return not self._unsure and self.inner.is_clean()

    def ping(self) -> None:
        self._call(self.inner.ping)

    def reset(self, dirty: bool) -> bool:
        clean: bool = self._call(self.inner.reset, dirty or self._unsure)
        self._unsure = not clean
        return clean

    def close(self) -> None:
        self._call(self.inner.close)

    def terminate(self) -> None:
        self._kill()

    def fileno(self) -> int | None:
        fileno = getattr(self.inner, "fileno", None)
        return None if fileno is None else fileno()


class AsyncBridge:
    """A trio connection over an async one that lives elsewhere, through an `AsyncRunner`."""

    __slots__ = ("_kill", "_runner", "_unsure", "inner")

    def __init__(self, inner: AsyncConn, runner: AsyncRunner, kill: Callable[[], None]) -> None:
        self.inner = inner
        self._runner = runner
        self._kill = kill
        self._unsure = False

    @property
    def raw(self) -> Any:
        """The driver's own connection (asked of the connection it bridges, every time)."""
        return self.inner.raw

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self._runner.acall(fn, *args)
        except BaseException as exc:
            self._unsure |= _unsure_after(exc)
            raise

    async def execute(self, sql: str, args: Sequence[Any]) -> str:
        return await self._call(self.inner.execute, sql, args)  # type: ignore[no-any-return]

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        await self._call(self.inner.executemany, sql, args_seq)

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]:
        return await self._call(self.inner.fetch, sql, args)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None:
        return await self._call(self.inner.fetchrow, sql, args)  # type: ignore[no-any-return]

    async def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any:
        return await self._call(self.inner.fetchval, sql, args, column)

    async def copy_records(self, target: CopyTarget, records: Any) -> str:
        return await self._call(self.inner.copy_records, target, records)  # type: ignore[no-any-return]

    async def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str:
        return await self._call(self.inner.copy_in, target, source, options)  # type: ignore[no-any-return]

    async def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str:
        return await self._call(self.inner.copy_out, target, output, options)  # type: ignore[no-any-return]

    def alive(self) -> bool:
        return self.inner.alive()

    def is_clean(self) -> bool:
        """Clean, unless a call was interrupted: then only a reset (on the driver's own
        side, after the interrupted call has settled) can tell."""
        return not self._unsure and self.inner.is_clean()

    async def ping(self) -> None:
        await self._call(self.inner.ping)

    async def reset(self, dirty: bool) -> bool:
        clean: bool = await self._call(self.inner.reset, dirty or self._unsure)
        self._unsure = not clean
        return clean

    async def close(self) -> None:
        await self._call(self.inner.close)

    def terminate(self) -> None:
        self._kill()

    def fileno(self) -> int | None:
        fileno = getattr(self.inner, "fileno", None)
        return None if fileno is None else fileno()


def _unsure_after(exc: BaseException) -> bool:
    """Whether a call that raised ``exc`` leaves the driver's view of the session in
    doubt: anything but a mapped error (a cancellation, an interrupt, a driver bug) may
    have stopped it while it was still settling its state."""
    return not isinstance(exc, Error)
