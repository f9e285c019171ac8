"""psycopg driven on asyncio without a timer per wait (`unipool.backends._asyncio_waiting`):
whoever closes or cuts a connection wakes the task waiting on its socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import Any, cast

import psycopg
import pytest

from unipool.backends._asyncio_waiting import MAX_BUSY_TIME, Parked, wait_gen
from unipool.backends.psycopg import AsyncioConnection

pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@pytest.mark.parametrize("how", ["cut", "close"])
async def test_closing_a_connection_wakes_the_task_waiting_on_it(dsn: str, how: str) -> None:
    """A task in ``pg_sleep(5)``; the connection is cut (the pool's terminate) or closed
    from another task: the waiting task fails at once, it does not wait out the query."""
    conn = await AsyncioConnection.connect(dsn, autocommit=True)
    waiting = asyncio.ensure_future(conn.execute("select pg_sleep(5)"))
    await asyncio.sleep(0.2)  # it waits on the socket now
    start = time.monotonic()
    if how == "cut":
        conn._finish()
    else:
        await conn.close()
    with pytest.raises(psycopg.OperationalError, match="closed while a statement waited"):
        await asyncio.wait_for(waiting, 2)  # raised here, without calling libpq again
    assert time.monotonic() - start < 0.5


async def test_a_connection_keeps_working_wait_after_wait(dsn: str) -> None:
    """Many statements, each a wait on the socket: the socket is watched only while a
    wait is under way (none is left registered with the loop in between)."""
    async with await AsyncioConnection.connect(dsn, autocommit=True) as conn:
        fileno = conn.pgconn.socket
        loop = asyncio.get_running_loop()
        for n in range(50):
            assert await (await conn.execute("select %s::int", (n,))).fetchone() == (n,)
            assert not loop.remove_reader(fileno)  # nothing was registered


async def test_a_bad_poll_status_is_an_internal_error() -> None:
    def gen() -> Generator[int, Any, None]:
        yield 0

    with pytest.raises(psycopg.InternalError, match="bad poll status"):
        await wait_gen(cast(Any, gen()), 0, Parked())


async def test_a_generator_that_never_waits_still_yields_to_the_loop() -> None:
    """A generator whose socket is always writable never parks: the loop still runs other
    tasks at least every `MAX_BUSY_TIME`."""
    import socket

    a, b = socket.socketpair()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def writes(seconds: float) -> Generator[int, Any, None]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            yield 2  # Wait.W: the socket is writable at once

    side = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    before = ticks
    await wait_gen(cast(Any, writes(10 * MAX_BUSY_TIME)), a.fileno(), Parked())
    side.cancel()
    a.close()
    b.close()
    assert ticks - before >= 5
