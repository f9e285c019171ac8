"""psycopg's protocol generators driven on the running asyncio loop (the asyncio twin
of ``_trio_waiting``, and a leaner ``psycopg.waiting.wait_async``).

A wait for reading parks on one future that the socket's reader callback resolves;
a wait that includes writing polls the socket first (it is nearly always
writable). psycopg also arms a 0.1 s timer at every wait, so that a task waiting on
a connection closed under it notices; here whoever closes the connection wakes that
task instead (`Parked.wake`), before the socket closes.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Final

from psycopg import errors as e
from psycopg.abc import RV, PQGen

from ._socket_ready import RW, R, W, ready_now

#: How long (seconds) waits may go without yielding to the loop (socket always ready).
MAX_BUSY_TIME: Final = 0.005

_last_yield = 0.0  # when a wait last yielded to the loop


class Parked:
    """The wait a connection's task is parked in, if any."""

    __slots__ = ("fileno", "future", "loop", "wait")

    def __init__(self) -> None:
        self.future: asyncio.Future[int] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fileno = -1
        self.wait = 0

    def wake(self) -> None:
        """On the loop, before the connection's socket closes: stop watching the socket
        (its number may be reused at once) and wake the task, which raises
        `OperationalError` without touching the connection again (libpq frees it)."""
        future, loop = self.future, self.loop
        if future is None or loop is None:
            return
        self.future = None
        _unwatch(loop, self.fileno, self.wait)
        if not future.done():
            future.set_result(0)  # the task raises: it sends nothing more to libpq


async def wait_gen(gen: PQGen[RV], fileno: int, parked: Parked) -> RV:
    """Drive a query generator to completion on socket `fileno`."""
    global _last_yield
    loop = asyncio.get_running_loop()
    try:
        s = next(gen)
        while True:
            if s & W and (ready := ready_now(fileno, s)):
                if monotonic() - _last_yield >= MAX_BUSY_TIME:
                    await asyncio.sleep(0)
                    _last_yield = monotonic()
            else:
                ready = await _park(loop, fileno, s, parked)
                _last_yield = monotonic()
            s = gen.send(ready)
    except StopIteration as ex:
        if monotonic() - _last_yield >= MAX_BUSY_TIME:
            await asyncio.sleep(0)
            _last_yield = monotonic()
        rv: RV = ex.value
        return rv
    except OSError as ex:
        raise e.OperationalError("connection socket closed") from ex


async def _park(loop: asyncio.AbstractEventLoop, fileno: int, wait: int, parked: Parked) -> int:
    """Block until `fileno` is ready for `wait`; return the `Ready` flags."""
    if not wait & RW:
        raise e.InternalError(f"bad poll status: {wait}")
    future: asyncio.Future[int] = loop.create_future()
    if wait & R:
        loop.add_reader(fileno, _resolve, future, R)
    if wait & W:
        try:
            loop.add_writer(fileno, _resolve, future, W)
        except BaseException:
            _unwatch(loop, fileno, wait & R)
            raise
    parked.future, parked.loop, parked.fileno, parked.wait = future, loop, fileno, wait
    try:
        ready = await future
    finally:
        closed = parked.future is not future  # woken by a close, which unwatched it
        if not closed:
            parked.future = None
            _unwatch(loop, fileno, wait)
    if closed:  # nothing more may reach libpq: its connection is freed
        raise e.OperationalError("the connection was closed while a statement waited on it")
    return ready


def _resolve(future: asyncio.Future[int], ready: int) -> None:
    if not future.done():
        future.set_result(ready)


def _unwatch(loop: asyncio.AbstractEventLoop, fileno: int, wait: int) -> None:
    if wait & R:
        loop.remove_reader(fileno)
    if wait & W:
        loop.remove_writer(fileno)
