"""The harness: what a system offers, and how one system's cells of a round are measured."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from ._runners import Run, Times, run_tasks, run_threads, stats
from ._workloads import HOLD, LIMIT_CAP, Workload, runs


@dataclass
class Ops:
    """What a system does per operation; ``op(i)`` runs as worker ``i``.

    ``connection()`` is the pool's acquire as a context manager (None for a
    limit); ``fetchval`` is the pool's one-call shortcut, where it has one.
    ``held(n)`` (unipool's) acquires ``n`` connections and yields, as a context
    manager (async for tasks), the operation ``op(i)``: SELECT 1 on the i-th of them.
    """

    query: Callable[[int], Any]
    txn: Callable[[int], Any]
    connection: Callable[[], Any] | None = None
    fetchval: Callable[[int], Any] | None = None
    held: Callable[[int], Any] | None = None


SyncFactory = Callable[[str, int, int], contextlib.AbstractContextManager[Ops]]
AsyncFactory = Callable[[str, int, int], contextlib.AbstractAsyncContextManager[Ops]]


@dataclass(frozen=True)
class System:
    """A factory of ``Ops``: ``factory(dsn, connections, max_size)``.

    It runs if its driver's module and those in ``needs`` (and trio, for trio) are installed.
    """

    name: str
    driver: str  # "asyncpg", "psycopg" or "psqlpy": also its module's name
    runtime: str  # "threads", "asyncio" or "trio"
    kind: str  # "native", "limit" or "unipool"
    factory: SyncFactory | AsyncFactory
    needs: tuple[str, ...] = ()


@dataclass
class Cell:
    """One system x workload x round. For 'fair', the percentiles are of the waits.

    ``cpu_us`` is the client's CPU per operation: the benchmark process's CPU time
    over the cell (every thread: the driver's, a loop thread) divided by ``ops``.
    """

    round: int
    system: str
    driver: str
    runtime: str
    kind: str
    workload: str
    workers: int
    size: int  # the pool's max_size; 0 for a limit
    ops: int
    seconds: float
    ops_per_s: float
    p50_us: float
    p99_us: float
    max_us: float
    starved: int
    cpu_us: float = 0.0


def _sync_ops(ops: Ops, waits: Times) -> dict[str, Callable[[int], Any] | None]:
    """Each workload's operation; 'fair' puts worker i's waits for acquire in ``waits[i]``."""
    connection, clock = ops.connection, time.perf_counter
    if connection is None:
        return {"query": ops.query, "txn": ops.txn}

    def acquire(i: int) -> None:
        with connection():
            pass

    def hold(i: int) -> None:
        t0 = clock()
        with connection():
            waits[i].append(clock() - t0)
            time.sleep(HOLD)

    return {"acquire": acquire, "query": ops.query, "fetchval": ops.fetchval, "txn": ops.txn,
            "fair": hold}  # fmt: skip


def _async_ops(ops: Ops, waits: Times) -> dict[str, Callable[[int], Any] | None]:
    """The same, for tasks."""
    connection, clock = ops.connection, time.perf_counter
    if connection is None:
        return {"query": ops.query, "txn": ops.txn}

    async def acquire(i: int) -> None:
        async with connection():
            pass

    async def hold(i: int) -> None:
        t0 = clock()
        async with connection():
            waits[i].append(clock() - t0)
            await anyio.sleep(HOLD)

    return {"acquire": acquire, "query": ops.query, "fetchval": ops.fetchval, "txn": ops.txn,
            "fair": hold}  # fmt: skip


def _cell(system: System, rnd: int, w: Workload, run: Run) -> Cell:
    s = stats(run.times)
    size = 0 if system.kind == "limit" else w.size
    cpu_us = run.cpu / s.ops * 1e6 if s.ops else 0.0
    return Cell(rnd, system.name, system.driver, system.runtime, system.kind, w.name, w.workers,
                size, s.ops, run.elapsed, s.ops / run.elapsed, s.p50_us, s.p99_us, s.max_us,
                s.starved, cpu_us)  # fmt: skip


@dataclass(frozen=True)
class _Batch:
    """The workloads a system runs with one pool size, on one opening."""

    system: System
    dsn: str
    conns: int  # a limit's connections (its most workers); a pool's max_size
    size: int
    warm: int  # workers of the warm-up
    seconds: float
    warmup: float
    workloads: list[Workload]


Measured = list[tuple[Workload, Run]]


def _sync_batch(b: _Batch) -> Measured:
    factory: Any = b.system.factory
    done = []
    with factory(b.dsn, b.conns, b.size) as ops:
        run_threads(ops.query, b.warm, b.warmup)
        for w in b.workloads:
            waits: Times = [[] for _ in range(w.workers)]
            if w.name == "held" and ops.held is not None:
                with ops.held(w.workers) as op:
                    done.append((w, run_threads(op, w.workers, b.seconds)))
            elif (op := _sync_ops(ops, waits).get(w.name)) is not None:
                run = run_threads(op, w.workers, b.seconds)
                done.append((w, Run(waits, run.elapsed, run.cpu) if w.name == "fair" else run))
    return done


def _async_batch(b: _Batch) -> Measured:
    factory: Any = b.system.factory
    done = []

    async def main() -> None:
        async with factory(b.dsn, b.conns, b.size) as ops:
            await run_tasks(ops.query, b.warm, b.warmup)
            for w in b.workloads:
                waits: Times = [[] for _ in range(w.workers)]
                if w.name == "held" and ops.held is not None:
                    async with ops.held(w.workers) as op:
                        done.append((w, await run_tasks(op, w.workers, b.seconds)))
                elif (op := _async_ops(ops, waits).get(w.name)) is not None:
                    run = await run_tasks(op, w.workers, b.seconds)
                    fair = w.name == "fair"
                    done.append((w, Run(waits, run.elapsed, run.cpu) if fair else run))

    anyio.run(main, backend=b.system.runtime)
    return done


def run_system(
    system: System, dsn: str, rnd: int, seconds: float, warmup: float, workloads: Sequence[Workload]
) -> list[Cell]:
    """Open ``system`` once per pool size, warm it up, measure its workloads, close it.

    For 'fair' the cell's times are the waits for acquire; otherwise whole operations.
    'held' runs on connections acquired before the cell and released after it.
    """
    todo = [w for w in workloads if runs(system.kind, system.runtime, w)]
    run = _sync_batch if system.runtime == "threads" else _async_batch
    out: list[Cell] = []
    for size in sorted({w.size for w in todo}):
        batch = [w for w in todo if w.size == size]
        limit = system.kind == "limit"
        conns = max(w.workers for w in batch) if limit else size
        warm = min(LIMIT_CAP, conns) if limit else LIMIT_CAP
        measured = run(_Batch(system, dsn, conns, size, warm, seconds, warmup, batch))
        out.extend(_cell(system, rnd, w, run) for w, run in measured)
    return out
