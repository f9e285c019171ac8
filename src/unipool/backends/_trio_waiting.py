"""psycopg's protocol generators driven with trio's socket waits (the trio twin of
``psycopg.waiting``).

A generator yields what it waits for (`Wait` flags, or ``(fileno, Wait)`` pairs
while connecting) and is sent back `Ready` flags. Each wait polls the socket
first and parks in trio only if it is not ready.
"""

from __future__ import annotations

import math
import select
from time import monotonic
from typing import Final

import trio
from psycopg import errors as e
from psycopg.abc import RV, PQGen, PQGenConn

from ._socket_ready import RW, R, W, ready_now

#: How long (seconds) waits may go without yielding to trio (socket always ready).
MAX_BUSY_TIME: Final = 0.005
#: Fallback poll period (seconds) for read-or-write waits without `select.epoll`.
_RW_POLL_INTERVAL: Final = 0.01

_R: Final = R
_W: Final = W
_RW: Final = RW

_SOCKET_GONE: Final = (OSError, trio.ClosedResourceError)

_last_yield = 0.0  # when a wait last yielded to trio


class Timeout(Exception):
    """A driver's time limit expired (callers raise psycopg's error for it)."""


# Socket readiness

_ready_now = ready_now


if hasattr(select, "epoll"):

    async def _park_rw(fileno: int) -> int:
        """Wait until `fileno` is readable or writable (through a nested epoll)."""
        with select.epoll(1) as ep:
            ep.register(fileno, select.EPOLLIN | select.EPOLLOUT)
            while True:
                await trio.lowlevel.wait_readable(ep.fileno())
                if ready := _ready_now(fileno, _RW):
                    return ready

else:  # pragma: no cover - no epoll

    async def _park_rw(fileno: int) -> int:
        """Wait until `fileno` is readable or writable (polling for reads)."""
        while True:
            with trio.move_on_after(_RW_POLL_INTERVAL):
                await trio.lowlevel.wait_writable(fileno)
            if ready := _ready_now(fileno, _RW):
                return ready


async def _park(fileno: int, wait: int) -> int:
    """Block until `fileno` is ready for `wait`; return the `Ready` flags."""
    if wait == _R:
        await trio.lowlevel.wait_readable(fileno)
        return _R
    if wait == _W:
        await trio.lowlevel.wait_writable(fileno)
        return _W
    if wait == _RW:
        return await _park_rw(fileno)
    raise e.InternalError(f"bad poll status: {wait}")


# Generator drivers


async def wait_gen(
    gen: PQGen[RV], fileno: int, limit: float | None = None, tick: float | None = None
) -> RV:
    """Drive a query generator to completion on socket `fileno`.

    Raise `Timeout` after `limit` seconds.  With `tick`, send `Ready.NONE`
    after `tick` seconds without readiness (psycopg < 3.3 generators).
    """
    global _last_yield
    if limit is not None or tick is not None:
        return await _wait_gen_slow(gen, fileno, limit, tick)
    try:
        s = next(gen)
        while True:
            # A zero-timeout poll is cheap (~1 µs) next to a park in trio's loop
            # (~15 µs): a socket is almost always writable, and often readable
            # already (fast queries); but yield now and then if never parking.
            if ready := _ready_now(fileno, s):
                if monotonic() - _last_yield >= MAX_BUSY_TIME:
                    await trio.lowlevel.checkpoint()
                    _last_yield = monotonic()
            else:
                ready = await _park(fileno, s)
                _last_yield = monotonic()
            s = gen.send(ready)
    except StopIteration as ex:
        if monotonic() - _last_yield >= MAX_BUSY_TIME:
            await trio.lowlevel.checkpoint()
            _last_yield = monotonic()
        rv: RV = ex.value
        return rv
    except _SOCKET_GONE as ex:
        raise e.OperationalError("connection socket closed") from ex


async def _wait_gen_slow(
    gen: PQGen[RV], fileno: int, limit: float | None, tick: float | None
) -> RV:
    """`wait_gen()` with a time limit and/or ticks.

    Data already available is processed: a zero `limit` polls once.
    """
    global _last_yield
    deadline = math.inf if limit is None else trio.current_time() + max(limit, 0.0)
    try:
        s = next(gen)
        while True:
            if not (ready := _ready_now(fileno, s)):
                now = trio.current_time()
                if now >= deadline:
                    raise Timeout
                wake = deadline if tick is None else min(deadline, now + max(tick, 0.0))
                with trio.CancelScope(deadline=wake):
                    ready = await _park(fileno, s)
                    _last_yield = monotonic()
                if not ready and tick is None:
                    continue
            s = gen.send(ready)
    except StopIteration as ex:
        rv: RV = ex.value
        return rv
    except _SOCKET_GONE as ex:
        raise e.OperationalError("connection socket closed") from ex


async def wait_conn(gen: PQGenConn[RV], limit: float | None) -> RV:
    """Drive a connection generator (yielding ``(fileno, Wait)``) to completion."""
    deadline = math.inf if limit is None else trio.current_time() + limit
    try:
        fileno, s = next(gen)
        with trio.CancelScope(deadline=deadline):
            while True:
                ready = _ready_now(fileno, s) if s & _W else 0
                if not ready:
                    ready = await _park(fileno, s)
                fileno, s = gen.send(ready)
        raise Timeout
    except StopIteration as ex:
        rv: RV = ex.value
        return rv
    except _SOCKET_GONE as ex:
        raise e.OperationalError("connection socket closed") from ex
    finally:
        gen.close()  # releases a half-open PGconn / PGcancelConn now
