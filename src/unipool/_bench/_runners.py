"""Timed runs: workers released together, each looping until the deadline; their statistics."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio


@dataclass(frozen=True)
class Stats:
    ops: int
    p50_us: float
    p99_us: float
    max_us: float
    starved: int


def stats(per_worker: Sequence[Sequence[float]]) -> Stats:
    """Percentiles (in us) of every worker's times (seconds), and the starved workers.

    A worker's loop ends with the first operation that ends past the deadline,
    so a worker with fewer than two times completed nothing within the cell.
    p99 is the value at rank ``int(0.99 n)`` of the sorted times.
    """
    times = sorted(t for mine in per_worker for t in mine)
    starved = sum(len(mine) < 2 for mine in per_worker)
    if not times:
        return Stats(0, 0.0, 0.0, 0.0, starved)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return Stats(len(times), statistics.median(times) * 1e6, p99 * 1e6, times[-1] * 1e6, starved)


Times = list[list[float]]


@dataclass(frozen=True)
class Run:
    """A timed run: each worker's times, the wall time from the release to the last worker's
    end, and the process's CPU time (``time.process_time()``, every thread) over that span."""

    times: Times
    elapsed: float
    cpu: float


def in_threads(
    work: Callable[[int], Any], workers: int, at_release: Callable[[], Any] = lambda: None
) -> None:
    """``work(i)`` in each of ``workers`` threads, released together once all are up
    (``at_release()`` runs in this thread just before); the first error is raised here."""
    barrier = threading.Barrier(workers + 1)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    at_release()
    barrier.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def run_threads(op: Callable[[int], Any], workers: int, seconds: float) -> Run:
    """``workers`` threads released together, each calling ``op(i)`` until time is up."""
    lists: Times = [[] for _ in range(workers)]
    marks = [0.0, 0.0, 0.0]  # the release: process CPU time, clock, deadline

    def work(i: int) -> None:
        mine, clock, stop = lists[i], time.perf_counter, marks[2]
        t1 = clock()
        while t1 < stop:
            t0 = clock()
            op(i)
            t1 = clock()
            mine.append(t1 - t0)

    def release() -> None:
        marks[0], marks[1] = time.process_time(), time.perf_counter()
        marks[2] = marks[1] + seconds

    in_threads(work, workers, release)
    return Run(lists, time.perf_counter() - marks[1], time.process_time() - marks[0])


async def run_tasks(op: Callable[[int], Awaitable[Any]], workers: int, seconds: float) -> Run:
    """``workers`` tasks released together, each awaiting ``op(i)`` until time is up."""
    lists: Times = [[] for _ in range(workers)]
    ready, go = anyio.Event(), anyio.Event()
    waiting = [0]
    stop = [0.0]

    async def work(i: int) -> None:
        mine, clock = lists[i], time.perf_counter
        waiting[0] += 1
        if waiting[0] == workers:
            ready.set()
        await go.wait()
        t1 = clock()
        while t1 < stop[0]:
            t0 = clock()
            await op(i)
            t1 = clock()
            mine.append(t1 - t0)

    async with anyio.create_task_group() as tg:
        for i in range(workers):
            tg.start_soon(work, i)
        await ready.wait()
        cpu = time.process_time()
        start = time.perf_counter()
        stop[0] = start + seconds
        go.set()
    return Run(lists, time.perf_counter() - start, time.process_time() - cpu)
