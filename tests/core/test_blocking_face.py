"""The blocking face over the scripted fake backend: no server, real threads.

The face only carries out what the core decides; these tests check that it does, with
every phase of a connection's life scripted (see ``tests/fake_backend.py``).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import pytest

import unipool
from tests.fake_backend import Err, FakeBackend, Never, Ok
from unipool._core import policy


@pytest.fixture
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resets and closes are cut after 0.2 s instead of 5 s."""
    monkeypatch.setattr(policy, "CLOSE_TIMEOUT", 0.2)
    monkeypatch.setattr(policy, "CHECK_TIMEOUT", 0.2)


def fake_pool(backend: FakeBackend, **options: object) -> unipool.Pool:
    return unipool.connect(None, backend=backend, acquire_timeout=5, **options)


@pytest.fixture
def settled() -> Iterator[None]:
    """No thread of the pool's left running once the test is over (the watchdog aside)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [
            t
            for t in set(threading.enumerate()) - before
            if t.name.startswith("unipool") and t.name != "unipool-watchdog"
        ]
        if not left:
            return
        time.sleep(0.01)
    pytest.fail(f"threads left running: {left}")


def test_threads_share_the_connections(settled: None) -> None:
    backend = FakeBackend()
    with fake_pool(backend, min_size=1, max_size=2) as pool:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(25):
                    with pool.acquire() as conn:
                        conn.execute("x")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert errors == []
        stats = pool.stats()
        assert stats.acquires == 200 and stats.in_use == stats.waiting == 0
        assert stats.size <= 2 and backend.live == stats.idle == stats.size
        assert backend.queries == 200
    assert backend.live == 0 and pool.stats().size == 0


def test_open_waits_for_min_size_and_reports_the_connect_error() -> None:
    backend = FakeBackend(connect=Err)
    pool = fake_pool(backend, min_size=1)
    started = time.monotonic()
    with pytest.raises(unipool.ConnectError, match="refused"):
        pool.open(wait=True, timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 2
    assert pool.mode is None  # a failed open leaves the pool unopened
    with fake_pool(FakeBackend(), min_size=3, max_size=3) as pool:
        assert pool.stats().idle == 3  # open() returned once all three were open


def test_a_failed_check_replaces_the_connection(settled: None) -> None:
    backend = FakeBackend(check=[Err, Ok])
    with fake_pool(backend, min_size=1, max_size=1, check=0) as pool:
        with pool.acquire() as conn:
            conn.execute("x")
        stats = pool.stats()
        assert (stats.connections_lost, stats.connects, stats.acquires) == (1, 2, 1)
        assert backend.terminated == 1  # a dead connection gets no goodbye


def test_a_reset_that_never_ends_is_cut(short_bounds: None, settled: None) -> None:
    backend = FakeBackend(reset=[Never, Ok])
    with fake_pool(backend, min_size=1, max_size=1) as pool:
        conn = pool.getconn()
        conn.execute("x")  # the session is dirty: a reset runs on release
        started = time.monotonic()
        pool.release(conn)
        assert 0.15 <= time.monotonic() - started < 2, "the watchdog's cut ends the reset"
        assert pool.fetchval("select 1") is None  # served by a new connection
        stats = pool.stats()
        assert stats.recycled["broken"] == 1 and stats.connects == 2


def test_close_returns_in_time_when_closes_never_end(settled: None) -> None:
    backend = FakeBackend(close=Never)
    pool = fake_pool(backend, min_size=2, max_size=2)
    pool.open()
    conn = pool.getconn()
    started = time.monotonic()
    pool.close(timeout=0.3)
    took = time.monotonic() - started
    assert 0.3 <= took < 1.0, took
    assert pool.stats().size == 0 and backend.live == 0
    assert all(c.cut.is_set() for c in backend.connections), "the close under way was cut too"
    with pytest.raises(unipool.ConnectionLost):
        conn.execute("x")  # its connection was terminated under it
    pool.release(conn)  # given back late: nothing left to do
    assert pool.stats().connections_closed == 2


def test_an_abandoned_borrow_is_reaped(settled: None) -> None:
    backend = FakeBackend()
    with fake_pool(backend, min_size=1, max_size=1) as pool:
        pool.getconn()  # dropped at once
        gc.collect()
        deadline = time.monotonic() + 5
        while pool.stats().recycled["abandoned"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.stats().recycled["abandoned"] == 1
        assert pool.fetchval("select 1") is None


def test_a_dead_hand_out_and_its_replacement_are_one_acquire_for_listeners(
    settled: None,
) -> None:
    """The idle connection is found dead at hand-out, its check fails, another serves the
    request: listeners hear one acquire for the one borrow, and one release."""
    heard: list[str] = []

    class Listener:
        def on_acquire(self, pool: unipool.Pool, wait_seconds: float) -> None:
            heard.append("acquire")

        def on_release(self, pool: unipool.Pool, held_seconds: float) -> None:
            heard.append("release")

    backend = FakeBackend()
    with fake_pool(backend, min_size=1, max_size=1) as pool:
        with pool.acquire() as conn:
            first = conn._slot.conn  # type: ignore[union-attr]
        pool.add_listener(Listener())
        first.broken = True  # the server ended it while idle
        with pool.acquire() as conn:
            assert conn._slot.conn is not first  # type: ignore[union-attr]
        stats = pool.stats()
    assert heard == ["acquire", "release"]
    assert (stats.acquires, stats.connections_lost, stats.connects) == (2, 1, 2)
