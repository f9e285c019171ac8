"""Pool: one object, two faces.

A pool is opened either for blocking use or for async use, and stays bound to
that mode (and, for async, to that event loop) until it is closed. The first
use opens it lazily in the mode of that use.
"""

from __future__ import annotations

import os
import random
from typing import Any

from anyio.abc import TaskGroup

from ._binding import (
    Mode,
    OpensOnEnter,
    OwnsTaskGroup,
    async_misuse,
    current_loop,
    in_event_loop,
    loop_clock,
    on_loop,
)
from ._connection import AsyncConnection, Connection
from ._contexts import AcquireContext, PoolTransaction
from ._core import CoreConfig, PoolCore
from ._credentials import connect_params, wants_writable
from ._dsn import redact_dsn
from ._errors import PoolClosed, UsageError
from ._facades.async_ import AsyncFace
from ._facades.blocking import BlockingFace
from ._fork import track
from ._listeners import Listeners
from ._options import PoolOptions
from ._shortcuts import Shortcuts
from ._stats import PoolStats
from .backends.base import Backend

_CLOSE_TIMEOUT = 5.0


class Pool(Shortcuts, OpensOnEnter, OwnsTaskGroup):
    """A PostgreSQL connection pool, made by :func:`unipool.connect` (not directly).

    One object, two faces: the methods without a prefix are for blocking code, those
    with an ``a`` prefix (``aopen``, ``afetch``, ...) for asyncio or trio; ``acquire()``,
    ``transaction()`` and the rest serve both. The first use binds the pool to its mode
    (and event loop) until it is closed.
    """

    def __init__(
        self,
        dsn: str | None,
        backend: Backend,
        options: PoolOptions,
        given: frozenset[str] | None = None,
    ) -> None:
        self._dsn = dsn
        self._backend = backend
        self._options = options
        #: the option names the user passed; None: all (no backend defaults apply)
        self._given = given
        self._params = connect_params(dsn, options, {})
        self._config = self._core_config()
        self._listeners = Listeners(self, options.listeners)
        self._mode: Mode | None = None
        self._loop: object = None
        self._face: BlockingFace | AsyncFace | None = None
        self._core: PoolCore | None = None
        self._closed = False

    # -- identity ----------------------------------------------------------

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self._backend.name

    @property
    def mode(self) -> Mode | None:
        """``None`` before the pool opens, then ``"sync"``, ``"asyncio"`` or ``"trio"``."""
        return self._mode

    @property
    def name(self) -> str:
        """The pool's name, as shown in logs, ``repr`` and stats."""
        return self._options.name

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._mode or "not open"
        counts = ""
        if self._face is not None:
            s = self.stats()
            counts = f" size={s.size} idle={s.idle} waiting={s.waiting}"
        return (
            f"<unipool.Pool {self.name!r} {self.backend} {state}{counts} "
            f"dsn={redact_dsn(self._dsn)!r}>"
        )

    # -- binding -----------------------------------------------------------

    def _core_config(self) -> CoreConfig:
        o = self._options
        return CoreConfig(
            min_size=o.min_size,
            max_size=o.max_size,
            max_waiting=o.max_waiting,
            max_queries=o.max_queries,
            max_lifetime=o.max_lifetime,
            max_idle=o.max_idle,
            check_after=self._check_after(),
            reconnect_timeout=o.reconnect_timeout,
            leak_timeout=o.leak_timeout,
            name=o.name,
            writable=wants_writable(self._dsn),
            reset_hook=o.reset is not None,
        )

    def _new_core(self) -> PoolCore:
        self._core = PoolCore(self._config, random.Random())
        return self._core

    def _check_after(self) -> float | None:
        """``check``, or the backend's ``check_default`` if the user did not pass one."""
        check = self._options.check
        if self._given is None or "check" in self._given:
            return check
        default: float | None = getattr(self._backend, "check_default", check)
        return default

    def _sync(self) -> BlockingFace:
        face = self._face
        if face.__class__ is BlockingFace:
            return face
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed; create a new one")
        if self._mode is not None:
            raise UsageError(
                f"pool {self.name!r} was opened for async use ({self._mode}); use "
                "'async with pool.acquire()' and the a-prefixed methods, or a separate pool"
            )
        self.open(wait=False)
        return self._face  # type: ignore[return-value]

    def _serving(self) -> AsyncFace | None:
        """The async face, if it serves the running event loop."""
        face = self._face
        if face.__class__ is AsyncFace and on_loop(self._mode, self._loop):
            return face
        return None

    def _async(self) -> AsyncFace:
        face = self._serving()
        if face is not None:
            return face
        raise async_misuse(self.name, self._closed, self._mode)

    def _forget_connections(self, devnull: int) -> None:
        """In a forked child: point the inherited sockets at ``devnull``; reopen lazily."""
        core = self._core
        for slot in core.iter_slots() if core is not None else ():
            fileno = getattr(slot.conn, "fileno", None)
            fd = fileno() if fileno is not None else None
            if fd is not None:
                os.dup2(devnull, fd)
        self._face = self._core = self._mode = self._loop = None
        self._task_group_cm = None

    # -- blocking lifecycle ------------------------------------------------

    def open(self, wait: bool = True, timeout: float | None = None) -> None:
        """Open the pool for blocking use; with ``wait``, until ``min_size`` connections are open.

        Args:
            wait: Return only once ``min_size`` connections are open (or raise).
            timeout: Seconds to wait for them; ``None``: ``acquire_timeout``.

        Raises:
            ConnectError: with ``wait``, the server could not be reached or refused us.
            PoolTimeout: with ``wait``, ``min_size`` was not reached in ``timeout`` seconds.
            UsageError: the pool is in async use, or this thread runs an event loop.
            PoolClosed: the pool was closed.
        """
        if self._face is not None and self._mode == "sync":
            return
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed; create a new one")
        if self._mode is not None:
            raise (
                async_misuse(self.name, self._closed, self._mode)
                if self._mode == "sync"
                else UsageError(f"pool {self.name!r} is open for async use ({self._mode})")
            )
        if in_event_loop():
            raise UsageError(
                "blocking pool use inside a running event loop would block it: "
                "use 'async with pool' and the a-prefixed methods"
            )
        face = BlockingFace(
            self._new_core(), self._backend, self._params, self._options, self._listeners
        )
        self._face, self._mode = face, "sync"
        track(self)
        try:
            face.open(wait, self._options.acquire_timeout if timeout is None else timeout)
        except BaseException:
            face.terminate()
            self._face = self._core = self._mode = None
            raise

    def close(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Close the pool: refuse new requests now, wait up to ``timeout`` for borrowers.

        Args:
            timeout: Seconds borrowers get to give their connections back; then the
                remaining connections are terminated.

        Raises:
            UsageError: the pool is in async use (use ``aclose()``).
        """
        if self._closed:
            return
        face = self._face
        if face is None:
            self._closed = True
            return
        if not isinstance(face, BlockingFace):
            raise UsageError(f"pool {self.name!r} is in async use: use 'await pool.aclose()'")
        self._closed = True
        face.close(timeout)

    # -- async lifecycle ---------------------------------------------------

    async def aopen(
        self, wait: bool = True, timeout: float | None = None, task_group: TaskGroup | None = None
    ) -> None:
        """Open the pool for async use on the running event loop.

        Args:
            wait: Return only once ``min_size`` connections are open (or raise).
            timeout: Seconds to wait for them; ``None``: ``acquire_timeout``.
            task_group: An anyio task group for the pool's background work;
                ``async with pool:`` provides one. Without it, housekeeping runs on
                acquire and release.

        Raises:
            ConnectError: with ``wait``, the server could not be reached or refused us.
            PoolTimeout: with ``wait``, ``min_size`` was not reached in ``timeout`` seconds.
            UsageError: the pool is in blocking use or bound to another loop.
            PoolClosed: the pool was closed.
        """
        if self._face is not None:
            self._async()
            return
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed; create a new one")
        mode, loop = current_loop()
        clock = loop_clock(mode, loop)
        face = AsyncFace(
            self._new_core(), self._backend, self._params, self._options, self._listeners,
            runtime=mode, clock=clock,
        )  # fmt: skip
        self._face, self._mode, self._loop = face, mode, loop
        track(self)
        try:
            await face.open(
                wait, self._options.acquire_timeout if timeout is None else timeout, task_group
            )
        except BaseException:
            face.terminate()
            self._face = self._core = self._mode = self._loop = None
            raise

    async def aclose(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Close the pool: refuse new requests now, wait up to ``timeout`` for borrowers.

        Args:
            timeout: Seconds borrowers get to give their connections back; then the
                remaining connections are terminated.

        Raises:
            UsageError: the pool is in blocking use (use ``close()``) or bound to another loop.
        """
        if self._closed:
            return
        if self._face is None:
            self._closed = True
            return
        face = self._async()
        self._closed = True
        await face.close(timeout)

    # -- either mode -------------------------------------------------------

    def terminate(self) -> None:
        """Close the pool and every connection now, borrowed ones included."""
        self._closed = True
        if self._face is not None:
            self._face.terminate()

    def resize(self, max_size: int) -> None:
        """Change ``max_size`` (lowering ``min_size`` too if needed); surplus idle ones close.

        Args:
            max_size: The new maximum, at least 1.

        Raises:
            TypeError: ``max_size`` is not an int.
            ValueError: ``max_size`` is below 1.
        """
        if isinstance(max_size, bool) or not isinstance(max_size, int):
            raise TypeError(f"max_size must be an int, not {type(max_size).__name__}")
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        if self._face is not None:
            self._face.resize(max_size)
        else:
            self._config.max_size = max_size
            self._config.min_size = min(self._config.min_size, max_size)

    def set_connect_args(self, dsn: str | None = None, **connect_kwargs: Any) -> None:
        """Use ``dsn`` and ``connect_kwargs`` for connections opened from now on.

        Args:
            dsn: The new DSN; ``None`` keeps the current one.
            **connect_kwargs: Driver arguments, added to the ``connect_kwargs`` option.
        """
        if dsn is not None:
            self._dsn = dsn
        self._params = connect_params(self._dsn, self._options, connect_kwargs)
        writable = wants_writable(self._dsn)
        if self._face is not None:
            self._face.set_params(self._params, writable)
        else:
            self._config.writable = writable

    def add_listener(self, listener: Any) -> None:
        """Deliver the pool's events to ``listener`` (see docs/observability.md).

        Raises:
            TypeError: it has no ``on_<event>`` method, or one of them is async.
        """
        self._listeners.add(listener)
        if self._face is not None:
            self._face.observe()

    def remove_listener(self, listener: Any) -> None:
        """Stop delivering events to ``listener``.

        Raises:
            ValueError: it is not a listener of this pool.
        """
        self._listeners.remove(listener)
        if self._face is not None:
            self._face.observe()

    def stats(self) -> PoolStats:
        """A snapshot of the pool's gauges and counters."""
        face = self._face
        if face is None:
            c = self._config
            return PoolStats(c.name, c.min_size, c.max_size, closing=self._closed)
        return face.stats(self._closed)

    def get_size(self) -> int:
        """Connections open or being opened."""
        return self.stats().size

    def get_idle_size(self) -> int:
        """Connections ready to hand out."""
        return self.stats().idle

    def get_min_size(self) -> int:
        """The ``min_size`` option (lowered by a :meth:`resize` below it)."""
        return self._config.min_size

    def get_max_size(self) -> int:
        """The ``max_size`` option, or what :meth:`resize` made it."""
        return self._config.max_size

    def is_closing(self) -> bool:
        """Whether ``close()`` (or ``terminate()``) was called."""
        return self._closed

    # -- blocking API --------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> AcquireContext:
        """A connection for a ``with`` (blocking) or ``async with`` (async) block.

        Args:
            timeout: Seconds to wait for a connection; ``None``: ``acquire_timeout``.

        Returns:
            An :class:`AcquireContext`: ``with`` gives a :class:`Connection`, ``async
            with`` (or ``await``) an :class:`AsyncConnection`; errors as for
            :meth:`getconn` and :meth:`agetconn`.
        """
        return AcquireContext(self, timeout)

    def transaction(
        self, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> PoolTransaction:
        """Acquire a connection and open a transaction, as ``with`` or ``async with``.

        Args:
            isolation: ``"read_committed"``, ``"repeatable_read"``, ``"serializable"``,
                or ``None`` for the server's default.
            readonly: Open it ``READ ONLY``.
            deferrable: Open it ``DEFERRABLE`` (with ``serializable`` and ``readonly``).

        Returns:
            A :class:`PoolTransaction`: the block gets the connection; it commits on
            success, rolls back on an error, and gives the connection back.
        """
        return PoolTransaction(AcquireContext(self, None), isolation, readonly, deferrable)

    def getconn(self, timeout: float | None = None) -> Connection:
        """A connection, to give back with :meth:`release`.

        Args:
            timeout: Seconds to wait for a connection; ``None``: ``acquire_timeout``.

        Raises:
            PoolTimeout: none became available in time (default ``acquire_timeout``).
            ConnectError: the server refused us for good, or is down (see docs/errors.md).
            PoolClosed: the pool is closed.
            TooManyWaiters: the queue is full.
            UsageError: the pool is in async use.
        """
        face = self._sync()
        return face.getconn(self._options.acquire_timeout if timeout is None else timeout)

    def release(self, conn: Connection) -> None:
        """Give back a connection from :meth:`getconn`.

        Args:
            conn: The connection; it is reset before anyone else gets it.

        Raises:
            InterfaceError: ``conn`` was already given back.
        """
        self._sync().release(conn)

    def _release(self, conn: Connection, error: BaseException | None) -> None:
        """Give back ``conn``, whose borrow ended with ``error`` (if it failed)."""
        self._sync().release(conn, error)

    def _with_conn(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a connection method on a pooled connection, then give it back."""
        face = self._sync()
        conn = face.getconn(self._options.acquire_timeout)
        error: BaseException | None = None
        try:
            return getattr(conn, method)(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            face.release(conn, error)

    def expire_connections(self) -> None:
        """Replace every connection: idle ones now, borrowed ones when they come back."""
        self._sync().expire()

    # -- async API ---------------------------------------------------------

    async def _aface(self) -> AsyncFace:
        face = self._serving()
        if face is not None:
            return face
        if self._face is None and not self._closed:
            await self.aopen(wait=False)
            return self._face  # type: ignore[return-value]
        raise async_misuse(self.name, self._closed, self._mode)

    async def agetconn(self, timeout: float | None = None) -> AsyncConnection:
        """A connection, to give back with :meth:`arelease`.

        Args:
            timeout: Seconds to wait for a connection; ``None``: ``acquire_timeout``.

        Raises:
            PoolTimeout: none became available in time (default ``acquire_timeout``).
            ConnectError: the server refused us for good, or is down (see docs/errors.md).
            PoolClosed: the pool is closed.
            TooManyWaiters: the queue is full.
            UsageError: the pool is in blocking use or bound to another loop.
        """
        face = self._serving() or await self._aface()
        return await face.getconn(self._options.acquire_timeout if timeout is None else timeout)

    async def arelease(self, conn: AsyncConnection) -> None:
        """Give back a connection from :meth:`agetconn` or ``await pool.acquire()``.

        Args:
            conn: The connection; it is reset before anyone else gets it.

        Raises:
            InterfaceError: ``conn`` was already given back.
        """
        await self._async().release(conn)

    async def _arelease(self, conn: AsyncConnection, error: BaseException | None) -> None:
        """Give back ``conn``, whose borrow ended with ``error`` (if it failed)."""
        await self._async().release(conn, error)

    async def _awith_conn(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a connection method on a pooled connection, then give it back."""
        face = await self._aface()
        conn = await face.getconn(self._options.acquire_timeout)
        error: BaseException | None = None
        try:
            return await getattr(conn, method)(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            await face.release(conn, error)

    async def aexpire_connections(self) -> None:
        """Replace every connection: idle ones now, borrowed ones when they come back."""
        await (await self._aface()).expire()
