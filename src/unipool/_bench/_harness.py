"""The harness: workloads, what a system offers, and the timed runs."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

SQL = "SELECT 1"
MAX_SIZE = 10
QUICK = {"seconds": 0.5, "rounds": 3, "warmup": 0.2}
FULL = {"seconds": 3.0, "rounds": 5, "warmup": 1.0}
NOTES = [
    f"every pool: max_size={MAX_SIZE}, min_size={MAX_SIZE} where the pool has one "
    "(psqlpy has none: its connections are opened by the warm-up); other settings default",
    "psycopg connections (pools and limits) use autocommit, as unipool's do",
    "asyncpg.create_pool resets each connection on release by default (one round trip)",
    "warm-up: every system runs 'query' at c=50 for the warm-up time before each round",
    "limits: 50 connections opened up front, worker i uses the i-th; "
    "'vs' names the limit used when the driver has none in that runtime",
]


@dataclass(frozen=True)
class Workload:
    name: str  # "query": acquire + fetchval(SQL) + release; "acquire": acquire + release
    workers: int


WORKLOADS = (Workload("query", 10), Workload("query", 50), Workload("acquire", 1))


@dataclass
class Ops:
    """What a system does per operation; ``query(i)`` runs as worker ``i``."""

    query: Callable[[int], Any]
    acquire: Callable[[], Any] | None  # None for limits: there is nothing to acquire


SyncFactory = Callable[[str, int], contextlib.AbstractContextManager[Ops]]
AsyncFactory = Callable[[str, int], contextlib.AbstractAsyncContextManager[Ops]]


@dataclass(frozen=True)
class System:
    name: str
    driver: str
    runtime: str  # "threads", "asyncio" or "trio"
    kind: str  # "native", "limit" or "unipool"
    factory: SyncFactory | AsyncFactory


@dataclass
class Cell:
    """One system x workload x round."""

    round: int
    system: str
    driver: str
    runtime: str
    kind: str
    workload: str
    workers: int
    ops: int
    seconds: float
    ops_per_s: float
    p50_us: float
    p99_us: float


def _cell_stats(latencies: list[float], elapsed: float) -> tuple[int, float, float, float]:
    lat = sorted(latencies)
    if not lat:
        return 0, 0.0, 0.0, 0.0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return len(lat), len(lat) / elapsed, statistics.median(lat) * 1e6, p99 * 1e6


def run_threads(
    op: Callable[[int], Any], workers: int, seconds: float
) -> tuple[list[float], float]:
    """``workers`` threads released together, each calling ``op(i)`` until time is up."""
    lists: list[list[float]] = [[] for _ in range(workers)]
    barrier = threading.Barrier(workers + 1)
    stop = [0.0]

    def work(i: int) -> None:
        mine, clock = lists[i], time.perf_counter
        barrier.wait()
        while clock() < stop[0]:
            t0 = clock()
            op(i)
            mine.append(clock() - t0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    stop[0] = start + seconds
    barrier.wait()
    for t in threads:
        t.join()
    return [x for m in lists for x in m], time.perf_counter() - start


async def run_tasks(
    op: Callable[[int], Awaitable[Any]], workers: int, seconds: float
) -> tuple[list[float], float]:
    """``workers`` tasks released together, each awaiting ``op(i)`` until time is up."""
    lists: list[list[float]] = [[] for _ in range(workers)]
    ready, go = anyio.Event(), anyio.Event()
    waiting = [0]
    stop = [0.0]

    async def work(i: int) -> None:
        mine, clock = lists[i], time.perf_counter
        waiting[0] += 1
        if waiting[0] == workers:
            ready.set()
        await go.wait()
        while clock() < stop[0]:
            t0 = clock()
            await op(i)
            mine.append(clock() - t0)

    async with anyio.create_task_group() as tg:
        for i in range(workers):
            tg.start_soon(work, i)
        await ready.wait()
        start = time.perf_counter()
        stop[0] = start + seconds
        go.set()
    return [x for m in lists for x in m], time.perf_counter() - start


def _cells(
    system: System, rnd: int, measured: list[tuple[Workload, list[float], float]]
) -> list[Cell]:
    out = []
    for w, lat, elapsed in measured:
        ops, rate, p50, p99 = _cell_stats(lat, elapsed)
        out.append(Cell(rnd, system.name, system.driver, system.runtime, system.kind,
                        w.name, w.workers, ops, elapsed, rate, p50, p99))  # fmt: skip
    return out


def _workloads(system: System) -> list[Workload]:
    return [w for w in WORKLOADS if w.name == "query" or system.kind != "limit"]


def _acquire_only(ops: Ops) -> Callable[[int], Any]:
    acquire = ops.acquire
    assert acquire is not None
    return lambda i: acquire()


def run_system(system: System, dsn: str, rnd: int, seconds: float, warmup: float) -> list[Cell]:
    """Open ``system``, warm it up, measure each of its workloads, close it."""
    todo = _workloads(system)
    most = max(w.workers for w in WORKLOADS)
    measured: list[tuple[Workload, list[float], float]] = []
    if system.runtime == "threads":
        factory: Any = system.factory
        with factory(dsn, most) as ops:
            run_threads(ops.query, most, warmup)
            for w in todo:
                op = ops.query if w.name == "query" else _acquire_only(ops)
                measured.append((w, *run_threads(op, w.workers, seconds)))
        return _cells(system, rnd, measured)

    async def main() -> None:
        factory: Any = system.factory
        async with factory(dsn, most) as ops:
            await run_tasks(ops.query, most, warmup)
            for w in todo:
                op = ops.query if w.name == "query" else _acquire_only(ops)
                measured.append((w, *await run_tasks(op, w.workers, seconds)))

    anyio.run(main, backend=system.runtime)
    return _cells(system, rnd, measured)
