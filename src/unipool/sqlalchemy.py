"""SQLAlchemy engines whose connections come from a unipool pool.

SQLAlchemy is given a ``NullPool`` (so it pools nothing on top) and a creator
that borrows from the unipool pool. What the creator hands SQLAlchemy is a thin
stand-in for the driver's connection: it forwards everything to the driver's
own connection, and its ``close()`` gives the connection back to the pool
instead of closing it. SQLAlchemy "opens" a connection at each checkout and
"closes" it at each check-in, so each checkout is one borrow, and the pool's
limits, waiting queue, reset and stats apply to it.

The stand-in leaves the driver connection as it found it: what SQLAlchemy's
dialect sets on it (psycopg's transaction mode, cursor class, isolation
level, notice handlers) is put back before the connection goes back. The
pool's own reset then runs, as after any use of ``conn.raw``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import UsageError

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ._connection import AsyncConnection, Connection
    from ._pool import Pool

__all__ = ["create_async_engine", "create_engine"]

#: Arguments that would configure a second pool, or connections the pool makes itself.
_POOLED_BY_UNIPOOL = frozenset(
    {
        "creator",
        "async_creator",
        "poolclass",
        "pool",
        "pool_size",
        "max_overflow",
        "pool_timeout",
        "pool_recycle",
        "pool_pre_ping",
        "pool_use_lifo",
        "connect_args",
    }
)


def create_engine(pool: Pool, **kw: Any) -> Engine:
    """A SQLAlchemy ``Engine`` (``postgresql+psycopg``) that borrows from ``pool``.

    ``pool`` must be a psycopg pool used from blocking code (it opens for
    blocking use at the first checkout if it is not open yet). ``kw`` goes to
    :func:`sqlalchemy.create_engine`, except what would pool or connect.

    Args:
        pool: A psycopg pool, in blocking use or not open yet.
        **kw: Arguments for :func:`sqlalchemy.create_engine` (``echo``,
            ``execution_options``, ...).

    Returns:
        An ``Engine`` whose every checkout is a borrow from ``pool``.

    Raises:
        UsageError: another backend, a pool in async use, or an argument that
            would pool, connect, or change how the pool's connections convert values.
    """
    from sqlalchemy import create_engine as sa_create_engine
    from sqlalchemy.pool import NullPool

    if pool.backend != "psycopg":
        raise UsageError(
            f"pool {pool.name!r} uses {pool.backend}, which SQLAlchemy cannot drive from "
            "blocking code: use a psycopg pool, or an asyncio pool with create_async_engine()"
        )
    if pool.mode not in (None, "sync"):
        raise UsageError(
            f"pool {pool.name!r} is in async use ({pool.mode}): use create_async_engine(), "
            "or a separate pool for blocking code"
        )
    _refuse_pooling(kw)
    _keep_pool_codecs(kw, pool.backend)

    def borrow() -> _SyncPsycopg:
        conn = pool.getconn()
        try:
            return _SyncPsycopg(pool, conn)
        except BaseException:
            pool.release(conn)
            raise

    engine = sa_create_engine("postgresql+psycopg://", creator=borrow, poolclass=NullPool, **kw)
    _unwrap_driver_connection(engine.dialect)
    return engine


def create_async_engine(pool: Pool, **kw: Any) -> AsyncEngine:
    """A SQLAlchemy ``AsyncEngine`` that borrows from ``pool``, on asyncio.

    psycopg pools get ``postgresql+psycopg``, asyncpg pools ``postgresql+asyncpg``.
    The pool opens on the event loop of the first checkout if it is not open
    yet, and is bound to it (use the engine on that loop only). ``kw`` goes to
    :func:`sqlalchemy.ext.asyncio.create_async_engine`, except what would pool
    or connect.

    Args:
        pool: A psycopg or asyncpg pool, in asyncio use or not open yet.
        **kw: Arguments for :func:`sqlalchemy.ext.asyncio.create_async_engine`.

    Returns:
        An ``AsyncEngine`` whose every checkout is a borrow from ``pool``.

    Raises:
        UsageError: psqlpy, a pool in blocking or trio use, or an argument that
            would pool, connect, or change how the pool's connections convert values.
    """
    from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine
    from sqlalchemy.pool import NullPool

    if pool.mode == "sync":
        raise UsageError(
            f"pool {pool.name!r} is in blocking use: use create_engine(), "
            "or a separate pool for asyncio"
        )
    if pool.mode == "trio":
        raise UsageError(
            f"pool {pool.name!r} is in trio use, and SQLAlchemy's async engine runs on "
            "asyncio only: use a separate pool on asyncio"
        )
    if pool.backend not in ("psycopg", "asyncpg"):
        raise UsageError(
            f"pool {pool.name!r} uses {pool.backend}, for which SQLAlchemy has no dialect: "
            "use a psycopg or asyncpg pool"
        )
    _refuse_pooling(kw)
    _keep_pool_codecs(kw, pool.backend)
    stand_in: type[_AsyncPsycopg | _Asyncpg]
    if pool.backend == "psycopg":
        url, stand_in = "postgresql+psycopg://", _AsyncPsycopg
    else:
        url, stand_in = "postgresql+asyncpg://", _Asyncpg

    async def borrow() -> _AsyncPsycopg | _Asyncpg:
        conn = await pool.agetconn()
        try:
            return await stand_in.lend(pool, conn)
        except BaseException:
            await pool.arelease(conn)
            raise

    engine = sa_create_async_engine(url, async_creator=borrow, poolclass=NullPool, **kw)
    _unwrap_driver_connection(engine.dialect)
    return engine


def _in_transaction(raw: psycopg.BaseConnection[Any]) -> bool:
    from psycopg.pq import TransactionStatus

    return raw.info.transaction_status != TransactionStatus.IDLE


def _refuse_pooling(kw: dict[str, Any]) -> None:
    given = sorted(_POOLED_BY_UNIPOOL.intersection(kw))
    if given:
        raise UsageError(
            f"{', '.join(given)}: the unipool pool opens and pools the connections; "
            "give sizes, timeouts and connect_kwargs to unipool.connect()"
        )


def _keep_pool_codecs(kw: dict[str, Any], backend: str) -> None:
    """Refuse dialect arguments that would change how the pool's connections convert values.

    The dialect applies them to the connections it opens (psycopg) or sets them
    on each connection (asyncpg); on the pool's connections they would be lost
    (psycopg) or stay for every later borrower (asyncpg).
    """
    given: list[str] = [k for k in ("json_serializer", "json_deserializer") if k in kw]
    if kw.get("native_inet_types") is False:
        given.append("native_inet_types=False")
    if backend == "psycopg" and kw.get("use_native_hstore"):
        given.append("use_native_hstore=True")
    if given:
        raise UsageError(
            f"{', '.join(given)}: values are converted by the pool's connections, the same "
            "for every borrower; convert in your own types, or in the pool's init hook"
        )
    if backend == "psycopg":
        # The dialect's hstore adapter would be set on one connection only; SQLAlchemy
        # converts hstore values itself without it.
        kw["use_native_hstore"] = False
    else:
        # The pool's codecs turn Python values into json and back, so SQLAlchemy's
        # JSON type must hand them over as they are rather than as JSON text.
        kw["json_serializer"] = _as_is


def _unwrap_driver_connection(dialect: Any) -> None:
    """Have ``driver_connection`` give the driver's own connection, not the stand-in.

    psycopg's ``TypeInfo.fetch()``, which the dialect runs on its first
    connection, takes nothing but a psycopg connection; so may users' code.
    """
    driver_connection = dialect.get_driver_connection

    def unwrapped(dbapi_connection: Any) -> Any:
        conn = driver_connection(dbapi_connection)
        return conn._raw if isinstance(conn, _StandIn) else conn

    dialect.get_driver_connection = unwrapped


async def _give_back(pool: Pool, conn: AsyncConnection) -> None:
    """Give ``conn`` back even from a cancelled task: otherwise only the GC would."""
    import anyio

    with anyio.CancelScope(shield=True):
        await pool.arelease(conn)


def _as_is(value: Any) -> Any:
    return value


class _StandIn:
    """The driver's connection as SQLAlchemy sees it; ``close()`` gives it back."""

    __slots__ = ("_conn", "_handlers", "_pool", "_raw", "_saved")

    def __init__(self, pool: Pool, conn: Connection | AsyncConnection) -> None:
        object.__setattr__(self, "_pool", pool)
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_raw", conn.raw)  # counts as a session change: reset on release
        object.__setattr__(self, "_handlers", [])
        object.__setattr__(self, "_saved", {})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._raw, name, value)

    def __repr__(self) -> str:
        return f"<unipool borrowed {self._raw!r} from {self._pool.name!r}>"

    def add_notice_handler(self, handler: Any) -> None:
        """Add a notice handler for this borrow only."""
        self._raw.add_notice_handler(handler)
        self._handlers.append(handler)

    def _take(self) -> Any:
        """The borrowed connection, once: None if it was already given back."""
        conn = self._conn
        object.__setattr__(self, "_conn", None)
        return conn


#: What SQLAlchemy's psycopg dialect may change on a connection, put back at check-in.
_PSYCOPG_STATE = ("isolation_level", "read_only", "deferrable", "autocommit")


class _SyncPsycopg(_StandIn):
    """A blocking psycopg connection, in the transaction mode SQLAlchemy expects."""

    __slots__ = ()
    _raw: psycopg.Connection[Any]

    def __init__(self, pool: Pool, conn: Connection) -> None:
        import psycopg

        super().__init__(pool, conn)
        raw = self._raw
        self._saved.update({name: getattr(raw, name) for name in _PSYCOPG_STATE})
        self._saved["cursor_factory"] = raw.cursor_factory
        # SQLAlchemy uses DB-API transactions and %(name)s parameters; the pool's
        # connections are in autocommit mode with $n parameters.
        raw.autocommit = False
        raw.cursor_factory = psycopg.Cursor

    def close(self) -> None:
        """Put back what SQLAlchemy changed, and give the connection back to the pool."""
        conn = self._take()
        if conn is None:
            return
        try:
            raw = self._raw
            if not raw.closed:
                if _in_transaction(raw):
                    raw.rollback()
                for name in (*_PSYCOPG_STATE, "cursor_factory"):
                    setattr(raw, name, self._saved[name])
                for handler in self._handlers:
                    raw.remove_notice_handler(handler)
        except Exception:
            pass  # a broken connection: the pool's reset finds it and replaces it
        finally:
            self._pool.release(conn)


class _AsyncPsycopg(_StandIn):
    """An asyncio psycopg connection, in the transaction mode SQLAlchemy expects."""

    __slots__ = ()
    _raw: psycopg.AsyncConnection[Any]

    @classmethod
    async def lend(cls, pool: Pool, conn: AsyncConnection) -> _AsyncPsycopg:
        import psycopg

        self = cls(pool, conn)
        raw = self._raw
        self._saved.update({name: getattr(raw, name) for name in _PSYCOPG_STATE})
        self._saved["cursor_factory"] = raw.cursor_factory
        await raw.set_autocommit(False)
        raw.cursor_factory = psycopg.AsyncCursor
        return self

    async def close(self) -> None:
        """Put back what SQLAlchemy changed, and give the connection back to the pool."""
        conn = self._take()
        if conn is None:
            return
        try:
            raw = self._raw
            if not raw.closed:
                if _in_transaction(raw):
                    await raw.rollback()
                await raw.set_isolation_level(self._saved["isolation_level"])
                await raw.set_read_only(self._saved["read_only"])
                await raw.set_deferrable(self._saved["deferrable"])
                await raw.set_autocommit(self._saved["autocommit"])
                raw.cursor_factory = self._saved["cursor_factory"]
                for handler in self._handlers:
                    raw.remove_notice_handler(handler)
        except Exception:
            pass  # a broken connection: the pool's reset finds it and replaces it
        finally:
            await _give_back(self._pool, conn)


class _Asyncpg(_StandIn):
    """An asyncpg connection that keeps the pool's type codecs."""

    __slots__ = ()

    @classmethod
    async def lend(cls, pool: Pool, conn: AsyncConnection) -> _Asyncpg:
        return cls(pool, conn)

    async def set_type_codec(self, typename: str, *, schema: str = "public", **kw: Any) -> None:
        """Keep the pool's json and jsonb codecs; refuse to change any other.

        SQLAlchemy's asyncpg dialect sets json and jsonb codecs on each new
        connection. The pool's connections already decode both to Python
        values, and a codec set here would stay on the connection for its
        next borrowers (and empty asyncpg's statement cache each time).
        """
        if schema == "pg_catalog" and typename in ("json", "jsonb"):
            return
        raise UsageError(
            f"a {schema}.{typename} codec would stay on the pool's connection for every "
            "later borrower: set type codecs in the pool's init hook instead"
        )

    async def close(self, timeout: float | None = None) -> None:
        """Give the connection back to the pool (which rolls back and resets it)."""
        conn = self._take()
        if conn is not None:
            await _give_back(self._pool, conn)

    def terminate(self) -> None:
        """Without an event loop to give it back on, leave the connection to the pool.

        SQLAlchemy calls this for a connection it finds garbage-collected while
        checked out; the pool closes a borrowed connection that is collected
        without being given back, and frees its place.
        """
        self._take()
