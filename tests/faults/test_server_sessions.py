"""Nothing left running on the server: a session the pool drops while it may be busy
ends on the server within 2 s (DESIGN §6)."""

from __future__ import annotations

import math
import random
import time

import anyio
import pytest

import unipool
from tests._modes import in_thread, open_pool
from tests.faults.conftest import via
from tests.faults.proxy import FaultProxy
from tests.faults.tools import backends_of, named
from unipool import ConnectError
from unipool.backends._session import CANCEL_WAIT, refused_client_check, with_client_check
from unipool.backends.base import ConnectParams

CHECK = {"client_connection_check_interval": "2s"}

#: How soon after the pool drops it a busy session must be gone from the server.
ENDS_WITHIN = 2.0
#: Scheduling noise on a busy machine.
SLACK = 0.15


async def gone(dsn: str, name: str, timeout: float = ENDS_WITHIN + 1.0) -> float:
    """Seconds until the server has no session named ``name`` (fails past ``timeout``)."""
    start = time.monotonic()
    with anyio.fail_after(timeout):
        while await in_thread(backends_of, dsn, name):  # noqa: ASYNC110 - the server is polled
            await anyio.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize(
    ("setting", "expected"), [("unset", "1s"), ("5s", "5s"), (None, "0")], ids=str
)
async def test_sessions_check_that_their_client_is_there(
    dsn: str, mode: str, backend: str, setting: str | None, expected: str
) -> None:
    """Every session starts with ``client_connection_check_interval`` 1 s; a user's own
    setting wins, and ``None`` sends none (the server's default, 0, stays)."""
    settings = {} if setting == "unset" else {"client_connection_check_interval": setting}
    kwargs = {"server_settings": settings}
    async with open_pool(mode, dsn, backend, connect_kwargs=kwargs, max_size=1) as pool:
        assert await pool.fetchval("show client_connection_check_interval") == expected
        async with pool.acquire() as conn:  # the reset after a change keeps it
            await conn.execute("set client_connection_check_interval = '7s'")
        assert await pool.fetchval("show client_connection_check_interval") == expected


@pytest.mark.parametrize("check", ["client check", "no client check"])
async def test_close_past_its_timeout_ends_a_busy_session(
    dsn: str, mode: str, backend: str, name: str, check: str
) -> None:
    """A borrower in ``pg_sleep(30)``, then ``close(timeout=0.5)``: close returns in time,
    and the server's session of the pool ends within 2 s of it, also where the server does
    not check for its client (PostgreSQL 13, PgBouncer): the cut sends a cancel request."""
    errors: list[BaseException] = []
    settings = {} if check == "client check" else {"client_connection_check_interval": None}
    options = named(name, min_size=1, max_size=1, connect_kwargs={"server_settings": settings})
    async with open_pool(mode, dsn, backend, **options) as pool:
        conn = await pool.getconn()
        assert len(await in_thread(backends_of, dsn, name)) == 1

        failed_at: list[float] = []

        async def borrower() -> None:
            try:
                await conn.fetchval("select 1 from pg_sleep(30)")
            except unipool.Error as exc:  # close() gave up on it
                errors.append(exc)
                failed_at.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(borrower)
            await anyio.sleep(0.2)  # the query runs on the server
            start = time.monotonic()
            await pool.close(timeout=0.5)
            closed = time.monotonic() - start
        took = await gone(dsn, name)
    woken = failed_at[0] - start if failed_at else math.inf
    print(
        f"close(0.5) {backend}/{mode}, {check}: returned after {closed:.2f} s, the borrower failed"
        f" after {woken:.2f} s, session gone in {took:.2f} s"
    )
    assert closed <= 0.5 + 0.5
    assert woken <= 0.5 + 0.5  # the cut wakes the borrower waiting on the socket
    assert took <= ENDS_WITHIN
    assert len(errors) == 1


async def test_cancellation_storm_stays_within_max_size_on_the_server(
    dsn: str, mode: str, backend: str, name: str
) -> None:
    """200 tasks with random deadlines over ``max_size=5``: the server never holds more
    than 5 sessions of the pool (sampled while the storm runs), and none after close."""
    if mode == "sync":
        pytest.skip("threads cannot be cancelled")
    rng = random.Random(4)
    counts: list[int] = []
    async with open_pool(mode, dsn, backend, **named(name, min_size=5, max_size=5)) as pool:

        async def task(deadline: float) -> None:
            with anyio.move_on_after(deadline):
                async with pool.acquire() as conn:
                    await conn.fetchval("select 1 from pg_sleep(0.05)")

        async def sample(done: anyio.Event) -> None:
            while not done.is_set():
                counts.append(len(await in_thread(backends_of, dsn, name)))
                await anyio.sleep(0.01)

        done = anyio.Event()
        async with anyio.create_task_group() as watch:
            watch.start_soon(sample, done)
            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(task, rng.uniform(0, 0.1))
                    await anyio.sleep(0.01)
            await anyio.sleep(0.5)  # cancellations' aftermath
            done.set()
    took = await gone(dsn, name)
    print(
        f"storm {backend}/{mode}: at most {max(counts)} sessions ({len(counts)} samples),"
        f" gone {took:.2f} s after close"
    )
    assert max(counts) <= 5, counts
    assert took <= ENDS_WITHIN


def test_a_refused_client_check_is_not_sent_again() -> None:
    """A server (PostgreSQL 13 or older) or pooler that refuses the startup parameter: the
    attempt may be repeated without it, once per server; a user's own setting is theirs."""
    params = ConnectParams("postgresql://u@127.0.0.1:1/refusing")
    assert with_client_check({}, params) == {"client_connection_check_interval": "1s"}
    unrelated = ConnectError('database "refusing" does not exist')
    assert not refused_client_check(params, unrelated)
    refusal = ConnectError(
        'unrecognized configuration parameter "client_connection_check_interval"'
    )
    assert refused_client_check(params, refusal)
    assert not refused_client_check(params, refusal)  # not twice
    assert with_client_check({"a": "b"}, params) == {"a": "b"}
    own = ConnectParams("postgresql://u@127.0.0.1:1/own", kwargs={"server_settings": {**CHECK}})
    assert not refused_client_check(own, refusal)
    bounced = ConnectParams("postgresql://u@127.0.0.1:1/bounced", pgbouncer=True)
    assert with_client_check({}, bounced) == {}
    session_mode = ConnectParams("postgresql://u@127.0.0.1:1/session-mode")
    assert refused_client_check(
        session_mode, ConnectError("unsupported startup parameter: options")
    )
    assert with_client_check({}, session_mode) == {}


async def test_a_query_cancelled_on_a_frozen_network_returns_at_its_deadline(
    proxy: FaultProxy, dsn: str, mode: str, backend: str, name: str
) -> None:
    """An outer deadline around a query on a frozen network: the call returns at the
    deadline (its cancel gets `CANCEL_WAIT`, not the 5 s of a cancel request's own bound),
    the connection is discarded at its release, and its session ends once the network
    answers again."""
    if mode == "sync":
        pytest.skip("threads cannot be cancelled")
    options = named(name, min_size=0, max_size=1)
    async with open_pool(mode, via(proxy, dsn), backend, **options) as pool:
        conn = await pool.getconn()
        assert await conn.fetchval("select 1") == 1
        proxy.freeze()
        start = time.monotonic()
        with pytest.raises(TimeoutError), anyio.fail_after(1):
            await conn.fetchval("select pg_sleep(10)")
        took = time.monotonic() - start
        await pool.release(conn)
        released = time.monotonic() - start - took
        assert pool.stats().size == 0  # discarded, not kept for the next borrower
        proxy.thaw()
        ended = await gone(dsn, name)
    print(
        f"frozen cancel {backend}/{mode}: returned after {took:.3f} s, released in"
        f" {released:.3f} s, session gone {ended:.2f} s after the thaw"
    )
    assert took <= 1.0 + CANCEL_WAIT + SLACK
    assert released <= SLACK
    assert ended <= ENDS_WITHIN
