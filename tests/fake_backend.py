"""A scripted fake Backend: no server, every phase of a connection's life scripted.

Each phase (connect, check = ``ping``, reset, close) follows a script: one
:class:`Step` for every call, or a sequence of steps taken in turn, the last
one repeating. The steps:

* ``Ok``: succeeds (after a checkpoint, like any I/O);
* ``Err``: fails, with :class:`unipool.ConnectError` for connect and
  :class:`unipool.ConnectionLost` otherwise (the connection is then broken);
* ``Slow``: sleeps ``slow`` seconds (1 s by default), then succeeds;
* ``Never``: never returns (``anyio.sleep_forever()``) until cancelled.

The backend counts what it did, so that leaks show: ``opened`` and ``closed``
connections (``live`` = opened - closed; a ``terminate()`` counts as closing),
``connecting`` and ``closing`` calls under way, ``hung_closes`` (close calls
interrupted before they finished) and ``terminated`` connections.

Every query (``execute``...) takes ``query_time`` seconds and leaves the
session dirty (``is_clean()`` is False), so a borrowed connection goes
through the reset phase when it comes back.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from unipool import ConnectError, ConnectionLost
from unipool._record import Record
from unipool.backends.base import ConnectParams, Runtime


class Step(enum.Enum):
    """What one call of a phase does."""

    OK = "Ok"
    ERR = "Err"
    SLOW = "Slow"
    NEVER = "Never"

    def __repr__(self) -> str:
        return self.value


Ok = Step.OK
Err = Step.ERR
Slow = Step.SLOW
Never = Step.NEVER
STEPS = (Ok, Err, Slow, Never)

Script = Step | Sequence[Step]


class _Phase:
    """The steps of one phase, taken in turn; the last one repeats."""

    def __init__(self, script: Script) -> None:
        self.steps: tuple[Step, ...] = (script,) if isinstance(script, Step) else tuple(script)
        if not self.steps:
            raise ValueError("a script needs at least one step")
        self.calls = 0

    def next(self) -> Step:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        return step


class FakeBackend:
    """A Backend whose connections follow scripts; see the module docstring."""

    name = "fake"

    def __init__(
        self,
        connect: Script = Ok,
        check: Script = Ok,
        reset: Script = Ok,
        close: Script = Ok,
        *,
        slow: float = 1.0,
        query_time: float = 0.0,
    ) -> None:
        self.phases = {
            "connect": _Phase(connect),
            "check": _Phase(check),
            "reset": _Phase(reset),
            "close": _Phase(close),
        }
        self.slow = slow
        self.query_time = query_time
        self.connections: list[_FakeConn] = []
        self.opened = 0
        self.closed = 0
        self.terminated = 0
        self.connecting = 0
        self.closing = 0
        self.hung_closes = 0
        self.queries = 0
        self.connect_errors = 0
        #: Set it to release blocking (sync) calls stuck in a ``Never`` step.
        self.unblock = threading.Event()

    @property
    def live(self) -> int:
        """Connections opened and not closed (nor terminated) yet."""
        return self.opened - self.closed

    def __repr__(self) -> str:
        scripts = ", ".join(f"{k}={v.steps!r}" for k, v in self.phases.items())
        return (
            f"<FakeBackend {scripts} opened={self.opened} closed={self.closed} "
            f"terminated={self.terminated} connecting={self.connecting} closing={self.closing}>"
        )

    # -- the Backend protocol ------------------------------------------------------

    def connect_sync(self, params: ConnectParams) -> FakeSyncConn:
        step = self.phases["connect"].next()
        self.connecting += 1
        try:
            self._block(step, self._connect_error)
        finally:
            self.connecting -= 1
        return FakeSyncConn(self)

    async def connect_async(self, params: ConnectParams, runtime: Runtime) -> FakeAsyncConn:
        step = self.phases["connect"].next()
        self.connecting += 1
        try:
            await self._perform(step, self._connect_error)
        finally:
            self.connecting -= 1
        return FakeAsyncConn(self)

    # -- carrying out steps --------------------------------------------------------

    def _connect_error(self) -> Exception:
        self.connect_errors += 1
        return ConnectError("connection refused (scripted)")

    async def _perform(self, step: Step, error: Any) -> None:
        if step is Ok:
            await anyio.lowlevel.checkpoint()
        elif step is Err:
            await anyio.lowlevel.checkpoint()
            raise error()
        elif step is Slow:
            await anyio.sleep(self.slow)
        else:
            await anyio.sleep_forever()

    def _block(self, step: Step, error: Any, cut: threading.Event | None = None) -> None:
        if step is Err:
            raise error()
        if step is Slow:
            time.sleep(self.slow)
        elif step is Never:  # until unblocked, or the connection is cut under the call
            while not self.unblock.wait(0.005):
                if cut is not None and cut.is_set():
                    raise ConnectionLost("the connection was cut (scripted)", sqlstate="08006")


class _FakeConn:
    """What both kinds of fake connection share: state and bookkeeping."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend
        self.id = len(backend.connections)
        self.raw = self
        self.broken = False
        self.dirty = False
        self.is_closed = False
        self.was_terminated = False
        self.cut = threading.Event()  # set by terminate(): wakes a blocking call
        backend.connections.append(self)
        backend.opened += 1

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "broken" if self.broken else "open"
        return f"<FakeConn {self.id} {state}{' dirty' if self.dirty else ''}>"

    def _mark_closed(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            self.backend.closed += 1

    def _lost(self, what: str) -> ConnectionLost:
        self.broken = True
        return ConnectionLost(f"{what} failed (scripted)", sqlstate="08006")

    def _use(self) -> None:
        if self.is_closed or self.broken:
            raise ConnectionLost("the connection is closed", sqlstate="08003")

    def _query_done(self) -> None:
        self.dirty = True
        self.backend.queries += 1

    def alive(self) -> bool:
        return not (self.broken or self.is_closed)

    def is_clean(self) -> bool:
        return not self.dirty

    def terminate(self) -> None:
        self.cut.set()
        if not self.is_closed:
            self.was_terminated = True
            self.backend.terminated += 1
            self._mark_closed()


class FakeAsyncConn(_FakeConn):
    """An AsyncConn following its backend's scripts."""

    async def _query(self) -> None:
        self._use()
        self.dirty = True  # even if interrupted, the query may have changed the session
        if self.backend.query_time:
            await anyio.sleep(self.backend.query_time)
        else:
            await anyio.lowlevel.checkpoint()
        self._use()
        self._query_done()

    async def execute(self, sql: str, args: Sequence[Any]) -> str:
        await self._query()
        return "OK"

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        await self._query()

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]:
        await self._query()
        return []

    async def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None:
        await self._query()
        return None

    async def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any:
        await self._query()
        return None

    async def copy_records(self, target: Any, records: Any) -> str:
        return "COPY 0"

    async def copy_in(self, target: Any, source: Any, options: dict[str, Any]) -> str:
        return "COPY 0"

    async def copy_out(self, target: Any, output: Any, options: dict[str, Any]) -> str:
        return "COPY 0"

    async def ping(self) -> None:
        self._use()
        await self.backend._perform(
            self.backend.phases["check"].next(), lambda: self._lost("check")
        )

    async def reset(self, dirty: bool) -> bool:
        self._use()
        await self.backend._perform(
            self.backend.phases["reset"].next(), lambda: self._lost("reset")
        )
        self.dirty = False
        return True

    async def close(self) -> None:
        if self.is_closed:
            return
        backend = self.backend
        step = backend.phases["close"].next()
        backend.closing += 1
        finished = False
        try:
            if step is Err:
                self._mark_closed()  # the socket is dropped all the same
            await backend._perform(step, lambda: self._lost("close"))
            finished = True
            self._mark_closed()
        finally:
            backend.closing -= 1
            if not finished and not self.is_closed:
                backend.hung_closes += 1


class FakeSyncConn(_FakeConn):
    """A SyncConn following its backend's scripts (``Never`` waits for ``unblock``)."""

    def _query(self) -> None:
        self._use()
        self.dirty = True
        if self.backend.query_time:
            time.sleep(self.backend.query_time)
        self._query_done()

    def execute(self, sql: str, args: Sequence[Any]) -> str:
        self._query()
        return "OK"

    def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        self._query()

    def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]:
        self._query()
        return []

    def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None:
        self._query()
        return None

    def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any:
        self._query()
        return None

    def copy_records(self, target: Any, records: Any) -> str:
        return "COPY 0"

    def copy_in(self, target: Any, source: Any, options: dict[str, Any]) -> str:
        return "COPY 0"

    def copy_out(self, target: Any, output: Any, options: dict[str, Any]) -> str:
        return "COPY 0"

    def ping(self) -> None:
        self._use()
        step = self.backend.phases["check"].next()
        self.backend._block(step, lambda: self._lost("check"), self.cut)

    def reset(self, dirty: bool) -> bool:
        self._use()
        step = self.backend.phases["reset"].next()
        self.backend._block(step, lambda: self._lost("reset"), self.cut)
        self.dirty = False
        return True

    def close(self) -> None:
        if self.is_closed:
            return
        backend = self.backend
        step = backend.phases["close"].next()
        backend.closing += 1
        try:
            self._mark_closed()
            backend._block(step, lambda: ConnectionLost("close failed (scripted)"), self.cut)
        finally:
            backend.closing -= 1
