"""A psycopg `AsyncConnection` that runs under trio.

psycopg's async connection waits on its socket through asyncio.  Its protocol
is sans-I/O though: generators yield what they wait for and are sent back
what is ready.  `TrioConnection` drives those generators with trio's socket
waits (`_trio_waiting`) and replaces the connection lock, so cursors,
transactions, COPY, server-side cursors and pipelines work unchanged under
`trio.run`.  Only meant for trio.

Cancellation: a trio cancellation (or KeyboardInterrupt) arriving while a
query runs cancels the query on the server, drains its results (shielded,
bounded by `CANCEL_TIMEOUT`, a tenth of a second) and leaves the connection
usable; if that fails (a network that does not answer) the connection is
closed.  As with asyncio, an operation started in a cancelled scope is sent,
then cancelled that way.  But waits in cleanup code
(in ``except``/``finally``/``__aexit__`` of a cancelled task: psycopg's
rollbacks, stream and COPY draining, written for asyncio's one-shot
cancellation) run shielded, bounded by `CLEANUP_TIMEOUT`.  The lock is not a
checkpoint when free, as asyncio's: else psycopg's cleanup would be skipped.

Not supported: `psycopg.copy.AsyncQueuedLibpqWriter` (it spawns asyncio tasks).

psycopg semi-private API used, checked by `check_psycopg_internals()`, see
`PSYCOPG_INTERNALS`.  psycopg 3.2 and 3.3 differ in how timeouts are
enforced: see `_TIMEOUT_IN_WAIT`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
import sys
import warnings
from ipaddress import ip_address
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import psycopg
import trio
from psycopg import errors as e
from psycopg import pq
from psycopg.abc import RV, AdaptContext, ConnDict, ConnParam, PQGen, PQGenConn
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_attempts, make_conninfo, timeout_from_conninfo
from psycopg.rows import AsyncRowFactory, Row

from ._session import CANCEL_WAIT
from ._trio_waiting import Timeout, wait_conn, wait_gen
from .base import POOL_CALL

if TYPE_CHECKING:
    from psycopg.cursor_async import AsyncCursor
    from psycopg.pq.abc import PGconn
    from typing_extensions import Self

__all__ = [
    "CANCEL_TIMEOUT",
    "CLEANUP_TIMEOUT",
    "PSYCOPG_INTERNALS",
    "TESTED_PSYCOPG",
    "TrioConnection",
    "check_psycopg_internals",
]

logger = logging.getLogger(__name__)

#: psycopg ``major.minor`` releases this module was tested against.
TESTED_PSYCOPG: Final = ("3.2", "3.3")

#: Non-public psycopg names relied upon, as ``(owner, name, use)``.  An owner
#: ending in ``.__init__`` means an attribute assigned by that constructor.
#: ``_WaitTimeout`` is needed (and exists) from psycopg 3.3 only.
PSYCOPG_INTERNALS: Final = (
    ("psycopg.AsyncConnection", "_connect_gen", "generator connecting, yields (fd, Wait)"),
    ("psycopg.AsyncConnection", "_cancel_gen", "generator sending a cancel request"),
    ("psycopg.AsyncConnection", "_should_cancel", "cancel_safe() precondition"),
    ("psycopg.AsyncConnection", "_get_connection_params", "conninfo + kwargs to a dict"),
    ("psycopg.AsyncConnection.__init__", "lock", "replaced with a trio lock"),
    ("psycopg.AsyncConnection.__init__", "_adapters", "set from connect(context=...)"),
    ("psycopg.errors", "_WaitTimeout", "raised by wait(timeout=...), caught by psycopg"),
    ("psycopg.conninfo", "conninfo_attempts", "multi-host attempts, sync DNS"),
    ("psycopg.conninfo", "timeout_from_conninfo", "connect_timeout, libpq rules"),
    ("psycopg.waiting", "Wait", "flags yielded by the generators"),
    ("psycopg.waiting", "Ready", "flags sent to the generators"),
)

#: Bound (seconds) of the shielded server cancel + drain after an interruption: past it
#: the connection is closed (`CANCEL_WAIT`).
CANCEL_TIMEOUT: Final = CANCEL_WAIT
#: Bound (seconds) of a wait in the cleanup code of a cancelled task.
CLEANUP_TIMEOUT: Final = 5.0
#: First delay (seconds) before repeating an unanswered cancel request; doubles.
_RECANCEL_INTERVAL: Final = 0.2
_WAIT_INTERVAL: Final = 0.1

_ACTIVE: Final = pq.TransactionStatus.ACTIVE
_INTERRUPTED: Final = (trio.Cancelled, KeyboardInterrupt, SystemExit)

_checked = False


def _accepts(func: Any, param: str) -> bool:
    try:
        return param in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


#: psycopg >= 3.3: `wait()` takes a timeout.  Before, generators enforced their
#: timeouts themselves, sent `Ready.NONE` by `wait()` every `interval` seconds.
_TIMEOUT_IN_WAIT: Final = _accepts(psycopg.AsyncConnection.wait, "timeout")
#: psycopg < 3.3: `_cancel_gen()` takes a (keyword only, required) timeout.
_CANCEL_GEN_TIMEOUT: Final = _accepts(getattr(psycopg.AsyncConnection, "_cancel_gen", 0), "timeout")


def _lookup(path: str) -> Any:
    """Import a module, or get a module attribute, by dotted path; None if missing."""
    try:
        return importlib.import_module(path)
    except ImportError:
        modname, _, attr = path.rpartition(".")
        try:
            return getattr(importlib.import_module(modname), attr, None)
        except ImportError:
            return None


def check_psycopg_internals() -> None:
    """Raise `RuntimeError` naming the `PSYCOPG_INTERNALS` missing in this psycopg."""
    missing: list[str] = []
    for owner, name, _use in PSYCOPG_INTERNALS:
        if name == "_WaitTimeout" and not _TIMEOUT_IN_WAIT:
            continue
        path, ctor, _ = owner.partition(".__init__")
        if (obj := _lookup(path)) is None:
            missing.append(path)
        elif ctor:  # attribute assigned by a constructor along the MRO
            inits = [vars(k).get("__init__") for k in getattr(obj, "__mro__", ())]
            codes = [getattr(f, "__code__", None) for f in inits]
            if not any(name in c.co_names for c in codes if c is not None):
                missing.append(f"{path}().{name}")
        elif not hasattr(obj, name):
            missing.append(f"{path}.{name}")
    wt = getattr(e, "_WaitTimeout", None)
    if wt is not None and not (isinstance(wt, type) and issubclass(wt, e.OperationalError)):
        missing.append("psycopg.errors._WaitTimeout as an OperationalError subclass")
    if missing:
        raise RuntimeError(
            f"psycopg {psycopg.__version__} lacks semi-private API used by {__name__}"
            f" (tested with psycopg {', '.join(TESTED_PSYCOPG)}): {', '.join(missing)}"
        )


def _cleaning_up() -> bool:
    """Whether the task is cancelled while handling an exception.

    That is cleanup code (``except``, ``finally``, ``__aexit__``): psycopg's
    (rollback on transaction exit, draining a stream or a COPY) expects
    asyncio's one-shot cancellation, so its waits must be allowed to run.
    """
    return sys.exc_info()[1] is not None and trio.current_effective_deadline() == -math.inf


# Connection


class _ConnLock:
    """A `trio.Lock` whose uncontended acquisition is no checkpoint, as asyncio's.

    psycopg's cleanup code (transaction exit, rollback in ``__aexit__``) takes
    the lock after a cancellation: a checkpoint there would skip it and leave
    the connection's transaction bookkeeping inconsistent.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    def locked(self) -> bool:
        return self._lock.locked()

    async def acquire(self) -> bool:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        return True

    def release(self) -> None:
        self._lock.release()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()


def _needs_dns(params: ConnDict) -> bool:
    """Whether `conninfo_attempts(params)` may call `getaddrinfo()` (conservative)."""

    def get(name: str, env: str) -> list[str]:
        val = str(params[name]) if params.get(name) is not None else os.environ.get(env)
        return val.split(",") if val else []

    addrs = get("hostaddr", "PGHOSTADDR")
    for i, host in enumerate(get("host", "PGHOST")):
        if (i < len(addrs) and addrs[i]) or not host or host[0] == "/" or host[1:2] == ":":
            continue
        try:
            ip_address(host)
        except ValueError:
            return True
    return False


def _attempt_descr(attempt: ConnDict) -> str:
    host, port, addr = (attempt.get(k) for k in ("host", "port", "hostaddr"))
    return f"host: {host!r}, port: {port!r}, hostaddr: {addr!r}"


def _connect_error(failures: list[tuple[e.Error, str]]) -> e.Error:
    """The error to raise after failed attempts: the last one, listing all."""
    last = failures[-1][0]
    if len(failures) == 1:
        return last.with_traceback(None)
    lines = [str(last), "Multiple connection attempts failed. All failures were:"]
    lines += [f"- {descr}: {err}" for err, descr in failures]
    return type(last)("\n".join(lines), pgconn=last.pgconn)


class TrioConnection(psycopg.AsyncConnection[Row]):
    """A psycopg `AsyncConnection` waiting with trio; use it under `trio.run` only."""

    def __init__(self, pgconn: PGconn, row_factory: AsyncRowFactory[Row] | None = None) -> None:
        if row_factory is None:
            super().__init__(pgconn)
        else:
            super().__init__(pgconn, row_factory)
        self.lock = _ConnLock()  # type: ignore[assignment]

    @classmethod
    async def connect(
        cls,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        prepare_threshold: int | None = 5,
        context: AdaptContext | None = None,
        row_factory: AsyncRowFactory[Row] | None = None,
        cursor_factory: type[AsyncCursor[Row]] | None = None,
        **kwargs: ConnParam,
    ) -> Self:
        """Connect to a server, trying each host attempt in turn; as psycopg's."""
        global _checked
        if not _checked:
            check_psycopg_internals()
            _checked = True

        params = await cls._get_connection_params(conninfo, **kwargs)
        timeout = timeout_from_conninfo(params)
        if _needs_dns(params):
            attempts = await trio.to_thread.run_sync(
                conninfo_attempts, params, abandon_on_cancel=True
            )
        else:
            attempts = conninfo_attempts(params)

        conn: Self | None = None
        failures: list[tuple[e.Error, str]] = []
        for attempt in attempts:
            descr = _attempt_descr(attempt)
            logger.debug("connection attempt: %s", descr)
            try:
                conn = await wait_conn(cls._connect_gen(make_conninfo("", **attempt)), timeout)
            except Timeout:
                failures.append((e.ConnectionTimeout("connection timeout expired"), descr))
            except e.Error as ex:
                failures.append((ex, descr))
            else:
                break
            logger.debug("connection failed: %s: %s", descr, failures[-1][0])
        if conn is None:
            raise _connect_error(failures)

        try:
            if (
                psycopg.capabilities.has_used_gssapi()
                and conn.pgconn.used_gssapi
                and not (params.get("gssencmode") or os.environ.get("PGGSSENCMODE"))
            ):
                warnings.warn(
                    "the connection was obtained using the GSSAPI relying on the"
                    " 'gssencmode=prefer' libpq default: set 'gssencmode' explicitly",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if autocommit:
                await conn.set_autocommit(True)
            if row_factory:
                conn.row_factory = row_factory
            if cursor_factory:
                conn.cursor_factory = cursor_factory
            if context:
                conn._adapters = AdaptersMap(context.adapters)
            conn.prepare_threshold = prepare_threshold
        except BaseException:
            conn._finish()
            raise
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc_val, exc_tb)
        finally:  # closing even if the commit/rollback raised trio.Cancelled
            if not self.closed and not getattr(self, "_pool", None):
                await self.close()

    async def close(self) -> None:
        """Close the connection, waking any task waiting on its socket."""
        pool: Any = getattr(self, "_pool", None)
        if not self.closed and not getattr(pool, "close_returns", False):
            self._notify_closing()
        await super().close()

    async def wait(
        self,
        gen: PQGen[RV],
        interval: float = _WAIT_INTERVAL,
        timeout: float | None = None,
    ) -> RV:
        """Consume a query generator waiting with trio (`interval` is unused).

        Raise `psycopg.errors._WaitTimeout` if `timeout` expires.  If interrupted
        while the query runs, cancel it on the server and drain it (see module).
        """
        fileno = self.pgconn.socket
        tick = None if _TIMEOUT_IN_WAIT else interval
        try:
            if _cleaning_up():
                with trio.CancelScope(deadline=trio.current_time() + CLEANUP_TIMEOUT, shield=True):
                    return await wait_gen(gen, fileno, timeout, tick)
                # cleanup too slow: go on unshielded, which raises Cancelled
            return await wait_gen(gen, fileno, timeout, tick)
        except Timeout:
            raise e._WaitTimeout("wait timeout expired") from None
        except _INTERRUPTED:
            if self.pgconn.transaction_status == _ACTIVE:
                if POOL_CALL.get():  # the pool's own call: drop, no cancel request
                    self._finish()
                else:
                    await self._abort_query(gen, fileno)
            raise

    async def cancel_safe(self, *, timeout: float = 30.0) -> None:
        """Cancel the current operation on the server, waiting with trio.

        Raise `psycopg.errors.CancellationTimeout` after `timeout` seconds (0: none).
        Without libpq 17 fall back to `cancel()` in a worker thread.
        """
        if not self._should_cancel():
            return
        bound = timeout or None
        if shield := _cleaning_up():
            bound = min(bound or CLEANUP_TIMEOUT, CLEANUP_TIMEOUT)
        with trio.CancelScope(shield=shield):
            await self._cancel_request(bound)

    async def _cancel_request(self, limit: float | None) -> None:
        if psycopg.capabilities.has_cancel_safe():
            try:
                await wait_conn(self._new_cancel_gen(), limit)
            except Timeout:
                raise e.CancellationTimeout("cancellation timeout expired") from None
        else:
            with trio.move_on_after(math.inf if limit is None else limit) as scope:
                await trio.to_thread.run_sync(self.cancel, abandon_on_cancel=True)
            if scope.cancelled_caught:
                raise e.CancellationTimeout("cancellation timeout expired")

    def _new_cancel_gen(self) -> PQGenConn[None]:
        if _CANCEL_GEN_TIMEOUT:  # psycopg < 3.3; 0: no limit (ours applies)
            return self._cancel_gen(timeout=0.0)  # type: ignore[call-arg]
        return self._cancel_gen()

    async def _abort_query(self, gen: PQGen[Any], fileno: int) -> None:
        """Cancel the running query and drain `gen`, or close the connection."""
        recovered = False
        try:
            with trio.CancelScope(deadline=trio.current_time() + CANCEL_TIMEOUT, shield=True):
                pause = _RECANCEL_INTERVAL
                while True:
                    try:
                        if self._should_cancel():
                            await self._cancel_request(None)
                    except Exception as ex:
                        logger.warning("query cancellation failed: %s", ex)
                    try:
                        await wait_gen(gen, fileno, pause)
                    except Timeout:
                        # the server ignores a cancel arriving before it reads
                        # the query: send it again
                        logger.debug("query still running after cancel: cancelling again")
                        pause *= 2
                        continue
                    except e.QueryCanceled:
                        pass
                    # (still ACTIVE is fine: stream() / COPY read the rest themselves)
                    recovered = True
                    break
        except Exception as ex:
            logger.warning("draining the cancelled query failed: %s", ex)
        finally:
            if not recovered:
                logger.warning("query not terminated after cancellation: closing connection")
                self._finish()

    def _notify_closing(self) -> None:
        try:
            fileno = self.pgconn.socket
        except e.Error:
            return
        trio.lowlevel.notify_closing(fileno)

    def _finish(self) -> None:
        """Close the libpq connection now (no pool logic)."""
        self._notify_closing()
        self.pgconn.finish()
