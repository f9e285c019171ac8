"""ClusterPool: a primary and its standbys behind one object, reads routed to a standby.

Two ordinary pools over the same multi-host DSN: ``primary`` asks for
``target_session_attrs=read-write``; ``standby`` for ``prefer-standby`` (psqlpy knows
only ``read-only``) and ``load_balance_hosts=random``, so it reaches the primary when no
standby is up. Writes, and everything not marked ``readonly=True``, go to the primary,
whose pool already leaves a demoted server after one refused write.

A read (``readonly=True``) borrows from the standby pool and looks at what it got, at
most once a second per connection (`VERDICT_TTL`), with one query (`ROLE_SQL`; asked
twice in a row before a standby is called late, so that WAL caught between its arrival
and its replay does not count):

- a standby within ``max_replica_lag``: the read runs there;
- a standby lagging more: the connection goes back untouched (it will catch up), and
  the read runs on the primary;
- a primary (promoted, or reached because no standby was up): the standby pool's
  connections are all replaced (idle ones now, borrowed ones when they come back), and
  for `RETRY_STANDBY` seconds reads go straight to the primary; then a new connection
  looks for a standby again. A standby pool that cannot connect at all does the same.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._binding import OpensOnEnter, OwnsTaskGroup
from ._cluster_contexts import ReadAcquire
from ._cluster_shortcuts import ReadShortcuts
from ._connect import connect
from ._connection import AsyncConnection, Connection
from ._contexts import AcquireContext, PoolTransaction
from ._core import CLOSING
from ._dsn import parse_dsn
from ._errors import ConnectError, ConnectionLost, Error, PoolTimeout
from ._record import Record
from ._stats import PoolStats

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._binding import Mode
    from ._core import Slot
    from ._pool import Pool

__all__ = ["ROLE_SQL", "ClusterPool", "ClusterStats", "connect_cluster"]

#: Whether the server is a standby, and how many seconds its replay lags behind what it
#: has received. Nothing received but not replayed is no lag, however long ago the last
#: replayed transaction committed: an idle primary does not make a standby look late.
#: Otherwise the lag is the age of the last transaction replayed, or unbounded when none
#: was replayed since the standby started.
ROLE_SQL = (
    "select pg_is_in_recovery(), case"
    " when not pg_is_in_recovery() then null"
    " when pg_last_wal_receive_lsn() is null"
    " or pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() then 0.0"
    " else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()),"
    " 'infinity') end::float8"
)
#: A standby connection's role and lag are asked again after this many seconds.
VERDICT_TTL = 1.0
#: After the standby pool reached a primary (or nothing), reads go straight to the
#: primary for this many seconds before a new connection looks for a standby again.
RETRY_STANDBY = 1.0
#: The ``target_session_attrs`` a backend's standby pool asks for, where it cannot say
#: ``prefer-standby`` (psqlpy): then no standby up means the pool cannot connect.
_STANDBY_ATTRS = {"psqlpy": "read-only"}
_names = itertools.count(1)


@dataclass(frozen=True)
class ClusterStats:
    """Both pools' stats, and how reads (``readonly=True`` borrows) were routed.

    ``reads`` counts read borrows; ``reads_on_primary`` those the primary served (no
    standby usable); ``lagging`` the times a standby connection was passed over for
    lagging more than ``max_replica_lag``; ``not_standby`` the times the standby pool
    was found on a primary (a promoted server, or no standby up) and replaced.
    """

    name: str
    primary: PoolStats
    standby: PoolStats
    reads: int = 0
    reads_on_primary: int = 0
    lagging: int = 0
    not_standby: int = 0


def connect_cluster(
    dsn: str | None = None,
    *,
    backend: str | Any = "psycopg",
    max_replica_lag: float | None = None,
    **options: Any,
) -> ClusterPool:
    """Create a pool over a primary and its standbys (a multi-host DSN); no I/O.

    ``options`` apply to both pools (``name`` is the cluster's; its pools are named
    ``<name>.primary`` and ``<name>.standby``). With ``max_replica_lag`` (seconds), a
    standby whose replay lags more is not used for reads.

    Raises:
        ValueError: the DSN sets ``target_session_attrs`` (the cluster sets it), a
            negative ``max_replica_lag``, or anything :func:`unipool.connect` refuses.
        TypeError: as :func:`unipool.connect`, or a ``max_replica_lag`` not a number.
    """
    if max_replica_lag is not None:
        if isinstance(max_replica_lag, bool) or not isinstance(max_replica_lag, int | float):
            raise TypeError(
                f"max_replica_lag must be a number of seconds or None, "
                f"not {type(max_replica_lag).__name__}"
            )
        if max_replica_lag < 0:
            raise ValueError(f"max_replica_lag must be >= 0, not {max_replica_lag}")
    name = options.pop("name", None) or f"cluster-{next(_names)}"
    primary_dsn, standby_dsn = _cluster_dsns(dsn, backend)
    primary = connect(primary_dsn, backend=backend, name=f"{name}.primary", **options)
    standby = connect(standby_dsn, backend=backend, name=f"{name}.standby", **options)
    return ClusterPool(name, primary, standby, max_replica_lag)


def _cluster_dsns(dsn: str | None, backend: str | Any) -> tuple[str, str]:
    """The primary pool's DSN and the standby pool's, from the user's."""
    info = parse_dsn(dsn)
    if "target_session_attrs" in info.params:
        raise ValueError(
            "connect_cluster() sets target_session_attrs itself (read-write for the primary "
            "pool, prefer-standby for the standby pool): leave it out of the DSN"
        )
    name = backend if isinstance(backend, str) else getattr(backend, "name", "")
    standby_params = {
        "load_balance_hosts": "random",
        **info.params,
        "target_session_attrs": _STANDBY_ATTRS.get(name, "prefer-standby"),
    }
    primary_params = {**info.params, "target_session_attrs": "read-write"}
    return (
        dataclasses.replace(info, params=primary_params).to_uri(),
        dataclasses.replace(info, params=standby_params).to_uri(),
    )


def _no_server(exc: BaseException) -> bool:
    """Whether a failed borrow says the pool reaches no server (rather than being busy)."""
    return isinstance(exc, ConnectError) or isinstance(exc.__cause__, ConnectError)


class ClusterPool(ReadShortcuts, OpensOnEnter, OwnsTaskGroup):
    """A primary pool and a standby pool under one name; see :func:`connect_cluster`.

    The whole :class:`Pool` API, on the primary; ``readonly=True`` on ``acquire``,
    ``getconn``/``agetconn``, ``transaction`` and every shortcut borrows for reading
    (from a standby in bounds, else from the primary). Opening, closing, ``resize``,
    ``expire_connections``, ``set_connect_args`` and listeners act on both pools.
    """

    def __init__(self, name: str, primary: Pool, standby: Pool, max_lag: float | None) -> None:
        self._name = name
        self.primary = primary
        self.standby = standby
        self.max_replica_lag = max_lag
        #: slot id -> (slot, when asked, is a standby, lag): the verdict on a connection
        self._verdicts: dict[int, tuple[Slot, float, bool, float | None]] = {}
        self._standby_off_until = 0.0
        self._reads = self._on_primary = self._lagging = self._not_standby = 0
        self._counting = threading.Lock()  # the counters, for blocking use from threads

    # -- identity ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The cluster's name (its pools': ``<name>.primary``, ``<name>.standby``)."""
        return self._name

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self.primary.backend

    @property
    def mode(self) -> Mode | None:
        """``None`` before the cluster opens, then ``"sync"``, ``"asyncio"`` or ``"trio"``."""
        return self.primary.mode

    def __repr__(self) -> str:
        return f"<unipool.ClusterPool {self._name!r} {self.primary!r} {self.standby!r}>"

    def stats(self) -> ClusterStats:
        """Both pools' stats and the routing counters (see :class:`ClusterStats`)."""
        return ClusterStats(
            self._name, self.primary.stats(), self.standby.stats(),
            self._reads, self._on_primary, self._lagging, self._not_standby,
        )  # fmt: skip

    def get_size(self) -> int:
        """The primary pool's connections open or being opened."""
        return self.primary.get_size()

    def get_idle_size(self) -> int:
        """The primary pool's idle connections."""
        return self.primary.get_idle_size()

    def get_min_size(self) -> int:
        """The primary pool's ``min_size``."""
        return self.primary.get_min_size()

    def get_max_size(self) -> int:
        """The primary pool's ``max_size``."""
        return self.primary.get_max_size()

    def is_closing(self) -> bool:
        """Whether ``close()`` (or ``terminate()``) was called."""
        return self.primary.is_closing()

    # -- both pools --------------------------------------------------------------------

    def terminate(self) -> None:
        """Close both pools and every connection now, borrowed ones included."""
        self.primary.terminate()
        self.standby.terminate()

    def resize(self, max_size: int) -> None:
        """Resize both pools (see :meth:`Pool.resize`)."""
        self.primary.resize(max_size)
        self.standby.resize(max_size)

    def set_connect_args(self, dsn: str | None = None, **connect_kwargs: Any) -> None:
        """Use ``dsn`` (a multi-host DSN, as for :func:`connect_cluster`) and
        ``connect_kwargs`` for both pools' connections opened from now on."""
        primary_dsn = standby_dsn = None
        if dsn is not None:
            primary_dsn, standby_dsn = _cluster_dsns(dsn, self.primary.backend)
        self.primary.set_connect_args(primary_dsn, **connect_kwargs)
        self.standby.set_connect_args(standby_dsn, **connect_kwargs)

    def add_listener(self, listener: Any) -> None:
        """Deliver both pools' events to ``listener`` (each call names its pool)."""
        self.primary.add_listener(listener)
        self.standby.add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        """Stop delivering both pools' events to ``listener``."""
        self.primary.remove_listener(listener)
        self.standby.remove_listener(listener)

    def expire_connections(self) -> None:
        """Replace both pools' connections (see :meth:`Pool.expire_connections`)."""
        self.primary.expire_connections()
        self.standby.expire_connections()

    async def aexpire_connections(self) -> None:
        """Replace both pools' connections (see :meth:`Pool.expire_connections`)."""
        await self.primary.aexpire_connections()
        await self.standby.aexpire_connections()

    # -- blocking lifecycle ------------------------------------------------------------

    def open(self, wait: bool = True, timeout: float | None = None) -> None:
        """Open both pools for blocking use; ``wait`` waits for the primary's ``min_size``
        (the standby pool fills in the background: no standby may be up).

        Raises:
            As :meth:`Pool.open`, for the primary pool.
        """
        self.primary.open(wait, timeout)
        try:
            self.standby.open(wait=False)
        except BaseException:
            self.primary.close()
            raise

    def close(self, timeout: float = 5.0) -> None:
        """Close both pools (see :meth:`Pool.close`)."""
        try:
            self.standby.close(timeout)
        finally:
            self.primary.close(timeout)

    # -- async lifecycle ---------------------------------------------------------------

    async def aopen(
        self, wait: bool = True, timeout: float | None = None, task_group: TaskGroup | None = None
    ) -> None:
        """Open both pools for async use (background work in ``task_group``, if given);
        ``wait`` waits for the primary's ``min_size``.

        Raises:
            As :meth:`Pool.aopen`, for the primary pool.
        """
        await self.primary.aopen(wait, timeout, task_group)
        try:
            await self.standby.aopen(False, None, task_group)
        except BaseException:
            await self.primary.aclose()
            raise

    async def aclose(self, timeout: float = 5.0) -> None:
        """Close both pools (see :meth:`Pool.aclose`)."""
        try:
            await self.standby.aclose(timeout)
        finally:
            await self.primary.aclose(timeout)

    # -- routing -----------------------------------------------------------------------

    def _verdict(self, conn: Connection | AsyncConnection) -> tuple[bool, float | None] | None:
        """What is known of ``conn``'s server, if asked less than `VERDICT_TTL` ago."""
        slot = conn._slot
        entry = self._verdicts.get(slot.id) if slot is not None else None
        if entry is None or entry[0] is not slot or time.monotonic() - entry[1] > VERDICT_TTL:
            return None
        return entry[2], entry[3]

    def _remember(self, conn: Connection | AsyncConnection, row: Record | None) -> tuple[bool, Any]:
        slot = conn._slot
        standby, lag = (bool(row[0]), row[1]) if row is not None else (False, None)
        if slot is not None:
            if len(self._verdicts) > 2 * self.standby.get_max_size():  # forget closed ones
                self._verdicts = {  # a copy first: other threads may add to it meanwhile
                    k: v for k, v in list(self._verdicts.items()) if v[0].state is not CLOSING
                }
            self._verdicts[slot.id] = (slot, time.monotonic(), standby, lag)
        return standby, lag

    def _late(self, standby: bool, lag: float | None) -> bool:
        limit = self.max_replica_lag
        return standby and limit is not None and lag is not None and lag > limit

    def _judge(self, standby: bool, lag: float | None) -> str | None:
        """Why a connection with this verdict must not serve a read, or None."""
        if not standby:
            with self._counting:
                self._not_standby += 1
            self._standby_off_until = time.monotonic() + RETRY_STANDBY
            return "primary"
        if self._late(standby, lag):
            with self._counting:
                self._lagging += 1
            return "lagging"
        return None

    def _standby_on(self) -> bool:
        with self._counting:
            self._reads += 1
        return time.monotonic() >= self._standby_off_until

    def _no_standby(self) -> None:
        self._standby_off_until = time.monotonic() + RETRY_STANDBY

    def _read_conn(self, timeout: float | None) -> tuple[Pool, Connection]:
        """A connection to read on, and the pool it comes from."""
        if self._standby_on():
            conn = self._standby_conn(timeout)
            if conn is not None:
                return self.standby, conn
        with self._counting:
            self._on_primary += 1
        return self.primary, self.primary.getconn(timeout)

    def _standby_conn(self, timeout: float | None) -> Connection | None:
        """The standby pool's connection, if fit for a read (else the read goes to the primary)."""
        try:
            conn = self.standby.getconn(timeout)
        except (ConnectError, PoolTimeout) as exc:
            if not _no_server(exc):
                raise
            self._no_standby()
            return None
        error: Error | None = None
        try:
            known = self._verdict(conn)
            if known is None:
                known = self._remember(conn, conn.fetchrow(ROLE_SQL))
                if self._late(*known):  # or caught replaying what just came: ask again
                    known = self._remember(conn, conn.fetchrow(ROLE_SQL))
            why = self._judge(*known)
        except Error as exc:  # the standby went away: the read can still go to the primary
            error, why = exc, "gone"
            self._no_standby()
        except BaseException as exc:
            self.standby._release(conn, exc)
            raise
        if why is None:
            return conn
        self.standby._release(conn, error)
        if why == "primary":
            self.standby.expire_connections()
        return None

    async def _aread_conn(self, timeout: float | None) -> tuple[Pool, AsyncConnection]:
        """A connection to read on, and the pool it comes from."""
        if self._standby_on():
            conn = await self._astandby_conn(timeout)
            if conn is not None:
                return self.standby, conn
        with self._counting:
            self._on_primary += 1
        return self.primary, await self.primary.agetconn(timeout)

    async def _astandby_conn(self, timeout: float | None) -> AsyncConnection | None:
        """The standby pool's connection, if fit for a read (else the read goes to the primary)."""
        try:
            conn = await self.standby.agetconn(timeout)
        except (ConnectError, PoolTimeout) as exc:
            if not _no_server(exc):
                raise
            self._no_standby()
            return None
        error: Error | None = None
        try:
            known = self._verdict(conn)
            if known is None:
                known = self._remember(conn, await conn.fetchrow(ROLE_SQL))
                if self._late(*known):  # or caught replaying what just came: ask again
                    known = self._remember(conn, await conn.fetchrow(ROLE_SQL))
            why = self._judge(*known)
        except Error as exc:  # the standby went away: the read can still go to the primary
            error, why = exc, "gone"
            self._no_standby()
        except BaseException as exc:
            await self.standby._arelease(conn, exc)
            raise
        if why is None:
            return conn
        await self.standby._arelease(conn, error)
        if why == "primary":
            await self.standby.aexpire_connections()
        return None

    # -- borrowing ---------------------------------------------------------------------

    def acquire(
        self, timeout: float | None = None, readonly: bool = False
    ) -> AcquireContext | ReadAcquire:
        """A connection for ``with`` or ``async with``: the primary's, or with ``readonly``
        one to read on (a standby in bounds, else the primary)."""
        if readonly:
            return ReadAcquire(self, timeout)
        return self.primary.acquire(timeout)

    def transaction(
        self, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> PoolTransaction:
        """Acquire and open a transaction, as ``with`` or ``async with``; a ``readonly``
        one runs where reads go (a standby in bounds, else the primary)."""
        if readonly:
            return PoolTransaction(ReadAcquire(self, None), isolation, True, deferrable)
        return self.primary.transaction(isolation, False, deferrable)

    def getconn(self, timeout: float | None = None, readonly: bool = False) -> Connection:
        """A connection (to read on, with ``readonly``), to give back with :meth:`release`.

        Raises:
            As :meth:`Pool.getconn`.
        """
        if not readonly:
            return self.primary.getconn(timeout)
        return self._read_conn(timeout)[1]

    def release(self, conn: Connection) -> None:
        """Give back a connection from :meth:`getconn`."""
        self._owner(conn).release(conn)

    async def agetconn(
        self, timeout: float | None = None, readonly: bool = False
    ) -> AsyncConnection:
        """A connection (to read on, with ``readonly``), to give back with :meth:`arelease`.

        Raises:
            As :meth:`Pool.agetconn`.
        """
        if not readonly:
            return await self.primary.agetconn(timeout)
        return (await self._aread_conn(timeout))[1]

    async def arelease(self, conn: AsyncConnection) -> None:
        """Give back a connection from :meth:`agetconn`."""
        await self._owner(conn).arelease(conn)

    def _owner(self, conn: Connection | AsyncConnection) -> Pool:
        """The pool ``conn`` was borrowed from."""
        return self.standby if conn._face is self.standby._face else self.primary

    def _with_conn(self, readonly: bool, method: str, *args: Any, **kwargs: Any) -> Any:
        if not readonly:
            return self.primary._with_conn(method, *args, **kwargs)
        for retry in (True, False):
            pool, conn = self._read_conn(None)
            error: BaseException | None = None
            try:
                return getattr(conn, method)(*args, **kwargs)
            except BaseException as exc:
                error = exc
                if not (retry and self._lost_standby(pool, exc)):
                    raise
            finally:
                pool._release(conn, error)
        raise AssertionError("unreachable")

    async def _awith_conn(self, readonly: bool, method: str, *args: Any, **kwargs: Any) -> Any:
        if not readonly:
            return await self.primary._awith_conn(method, *args, **kwargs)
        for retry in (True, False):
            pool, conn = await self._aread_conn(None)
            error: BaseException | None = None
            try:
                return await getattr(conn, method)(*args, **kwargs)
            except BaseException as exc:
                error = exc
                if not (retry and self._lost_standby(pool, exc)):
                    raise
            finally:
                await pool._arelease(conn, error)
        raise AssertionError("unreachable")

    def _lost_standby(self, pool: Pool, exc: BaseException) -> bool:
        """Whether a read that failed with ``exc`` on ``pool`` may run again, on the primary:
        its standby connection was lost (a standby cannot have changed anything)."""
        if pool is not self.standby or not isinstance(exc, ConnectionLost):
            return False
        self._no_standby()
        return True
