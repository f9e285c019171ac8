"""The fault toolkit besides the proxy: a terminate storm, names, measures.

Everything here is mode-independent: it works from a blocking thread while
the test's own loop is asyncio or trio.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
import psycopg

from tests._modes import ModePool, in_thread

#: Set to run the long forms of the scenarios (``nox -s faults_long``).
LONG = os.environ.get("UNIPOOL_FAULTS_LONG", "") not in ("", "0")


def allow_threads(n: int) -> None:
    """Let ``n`` blocking calls run at once in this event loop (sync mode runs each in a
    worker thread, and anyio allows 40 by default)."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = max(limiter.total_tokens, n)


def app_name() -> str:
    """A fresh ``application_name``, to find a pool's backends in ``pg_stat_activity``."""
    return f"unipool-fault-{uuid.uuid4().hex[:10]}"


def named(name: str, **options: Any) -> dict[str, Any]:
    """Pool options giving its connections ``application_name`` ``name``."""
    kwargs = dict(options.pop("connect_kwargs", {}))
    settings = {**kwargs.pop("server_settings", {}), "application_name": name}
    return {"connect_kwargs": {**kwargs, "server_settings": settings}, "name": name, **options}


def backends_of(dsn: str, name: str) -> list[tuple[int, str | None]]:
    """``(pid, state)`` of every backend whose ``application_name`` is ``name``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select pid, state from pg_stat_activity where application_name = %s", (name,)
        ).fetchall()
    return [(int(pid), state) for pid, state in rows]


async def settled(pool: ModePool, dsn: str, name: str, size: int, timeout: float = 5.0) -> None:
    """Wait until ``pool`` holds ``size`` idle connections and the server sees just those."""

    seen: list[object] = []

    def check() -> bool:
        s = pool.stats()
        server = backends_of(dsn, name)
        seen[:] = [s, server]
        return s.size == s.idle == size and len(server) == size

    try:
        with anyio.fail_after(timeout):
            while not await in_thread(check):  # noqa: ASYNC110 - the server is polled
                await anyio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not settled at {size} idle connections: {seen}") from None


class TerminateStorm:
    """Every ``interval`` seconds, ``pg_terminate_backend`` one backend named ``name``.

    A side psycopg connection in a thread does the killing; ``kills`` counts
    the backends it saw go (``pg_terminate_backend`` answered true), and
    ``pids`` lists them. Only backends past their start-up are chosen (a
    ``state`` is set), so what dies is a connection the pool had.
    """

    def __init__(self, dsn: str, name: str, interval: float, *, seed: int | None = None) -> None:
        self.dsn = dsn
        self.name = name
        self.interval = interval
        self.kills = 0
        self.pids: list[int] = []
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> TerminateStorm:
        conn = psycopg.connect(self.dsn, autocommit=True)
        self._thread = threading.Thread(target=self._run, args=(conn,), name="terminate-storm")
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the storm; returns once the last kill has finished."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "the storm thread did not stop"
            self._thread = None
        if self._error is not None:
            raise RuntimeError("the terminate storm failed") from self._error

    def _run(self, conn: psycopg.Connection[Any]) -> None:
        try:
            with conn:
                next_at = time.monotonic() + self.interval
                while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                    next_at += self.interval
                    pids = [
                        pid
                        for (pid,) in conn.execute(
                            "select pid from pg_stat_activity"
                            " where application_name = %s and state is not null",
                            (self.name,),
                        ).fetchall()
                    ]
                    if not pids:
                        continue
                    pid = self._rng.choice(pids)
                    cur = conn.execute("select pg_terminate_backend(%s, 5000)", (pid,))
                    row = cur.fetchone()
                    if row is not None and row[0]:
                        self.kills += 1
                        self.pids.append(pid)
        except BaseException as exc:  # pragma: no cover - reported by stop()
            self._error = exc

    def __enter__(self) -> TerminateStorm:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def kendall_tau(order: list[float]) -> float:
    """Kendall's tau between positions 0..n-1 and ``order`` (distinct values), in O(n log n)."""
    n = len(order)
    if n < 2:
        return 1.0
    inversions = _count_inversions(list(order))
    pairs = n * (n - 1) // 2
    return 1.0 - 2.0 * inversions / pairs


def _count_inversions(xs: list[float]) -> int:
    if len(xs) < 2:
        return 0
    mid = len(xs) // 2
    left, right = xs[:mid], xs[mid:]
    count = _count_inversions(left) + _count_inversions(right)
    i = j = k = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            xs[k] = left[i]
            i += 1
        else:
            xs[k] = right[j]
            count += len(left) - i
            j += 1
        k += 1
    xs[k:] = left[i:] + right[j:]
    return count


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def pool_threads() -> list[str]:
    """Names of the live threads a pool started (not the process-wide ``unipool-loop``)."""
    return sorted(
        t.name
        for t in threading.enumerate()
        if t.name.startswith("unipool-") and t.name != "unipool-loop"
    )
