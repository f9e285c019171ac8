"""Counted, not timed: the Python opcodes of one operation, in the workers' own threads.

A count does not move with the machine's load, so it shows a change of a few percent
in what a borrow does, which the timed cells of a small shared machine cannot. Each
worker runs its operations with ``sys.settrace`` on and opcode events asked for; the
tracer counts them. Twice, ``FEW`` and ``MANY`` operations per worker, after a warm-up:
the difference, divided by the extra operations, leaves out what starting and ending
the workers costs. What other threads run (the loop thread serving asyncpg to blocking
code, psqlpy's tokio threads) is not counted; asyncio's and trio's own Python, run by the
workers' thread, is. A trace function already set (a coverage tool's) is put back after
each count; it does not see what runs while counting.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import anyio

from .._demo import format_table
from ._harness import System
from ._runners import in_threads
from ._workloads import CPU_WORKERS

#: Operations per worker in the two counted runs (after a warm-up of ``FEW``).
FEW, MANY = 3, 33

_Trace = Callable[[FrameType, str, Any], Any]

#: Where unipool's own code lives (the benchmark's own is left out of "own").
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_BENCH = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _is_own(filename: str) -> bool:
    return filename.startswith(_PACKAGE) and not filename.startswith(_BENCH)


def _tracer(count: list[int]) -> _Trace:
    """A trace function that counts opcode events: all in ``count[0]``, those of
    unipool's own code (not the benchmark's) also in ``count[1]``."""

    def other(frame: FrameType, event: str, arg: Any) -> _Trace:
        if event == "opcode":
            count[0] += 1
        return other

    def own(frame: FrameType, event: str, arg: Any) -> _Trace:
        if event == "opcode":
            count[0] += 1
            count[1] += 1
        return own

    def on_call(frame: FrameType, event: str, arg: Any) -> _Trace:
        frame.f_trace_opcodes = True
        return own if _is_own(frame.f_code.co_filename) else other

    return on_call


def _in_threads(op: Callable[[int], Any], workers: int, per_worker: int) -> list[int]:
    counts = [[0, 0] for _ in range(workers)]  # one per thread: no lost increments

    def work(i: int) -> None:
        previous = sys.gettrace()  # a coverage tool's, say: back once counted
        sys.settrace(_tracer(counts[i]))
        try:
            for _ in range(per_worker):
                op(i)
        finally:
            sys.settrace(previous)

    in_threads(work, workers)
    return [sum(c[0] for c in counts), sum(c[1] for c in counts)]


async def _in_tasks(
    op: Callable[[int], Awaitable[Any]], workers: int, per_worker: int
) -> list[int]:
    count = [0, 0]

    async def work(i: int) -> None:
        for _ in range(per_worker):
            await op(i)

    previous = sys.gettrace()
    sys.settrace(_tracer(count))
    try:
        async with anyio.create_task_group() as tg:
            for i in range(workers):
                tg.start_soon(work, i)
    finally:
        sys.settrace(previous)
    return count


def _per_op(counts: dict[int, list[int]], workers: int, which: int) -> float:
    return (counts[MANY][which] - counts[FEW][which]) / (workers * (MANY - FEW))


def count_system(system: System, dsn: str, workers: int = CPU_WORKERS) -> dict[str, Any]:
    """Opcodes per operation of a unipool system: ``held`` (``SELECT 1`` on connections
    acquired before) and ``borrow`` (acquire, ``SELECT 1``, release), ``workers`` workers on
    as many connections; ``borrow_cost`` is the difference. Each again with ``_own``: those
    of unipool's own code, which the loop's batching does not move."""
    factory: Any = system.factory
    held: dict[int, list[int]] = {}
    borrow: dict[int, list[int]] = {}
    if system.runtime == "threads":
        with factory(dsn, workers, workers) as ops:
            with ops.held(workers) as op:
                _in_threads(op, workers, FEW)  # warm-up
                for n in (FEW, MANY):
                    held[n] = _in_threads(op, workers, n)
            _in_threads(ops.query, workers, FEW)
            for n in (FEW, MANY):
                borrow[n] = _in_threads(ops.query, workers, n)
    else:

        async def main() -> None:
            async with factory(dsn, workers, workers) as ops:
                async with ops.held(workers) as op:
                    await _in_tasks(op, workers, FEW)  # warm-up
                    for n in (FEW, MANY):
                        held[n] = await _in_tasks(op, workers, n)
                await _in_tasks(ops.query, workers, FEW)
                for n in (FEW, MANY):
                    borrow[n] = await _in_tasks(ops.query, workers, n)

        anyio.run(main, backend=system.runtime)
    row: dict[str, Any] = {"backend": system.driver, "runtime": system.runtime, "workers": workers}
    for which, suffix in ((0, ""), (1, "_own")):
        row["held" + suffix] = _per_op(held, workers, which)
        row["borrow" + suffix] = _per_op(borrow, workers, which)
        row["borrow_cost" + suffix] = row["borrow" + suffix] - row["held" + suffix]
    return row


def count_unipool(
    systems: list[System], dsn: str, say: Callable[[str], None] = lambda _: None
) -> list[dict[str, Any]]:
    """`count_system` for each unipool system among ``systems``."""
    rows = []
    for system in systems:
        if system.kind == "unipool":
            say(f"opcodes: {system.name}, {system.runtime}")
            rows.append(count_system(system, dsn))
    return rows


def opcodes_table(rows: list[dict[str, Any]]) -> str:
    """The counted rows: opcodes per operation, held and borrowed, and the difference; in
    all (the loop's, the driver's and unipool's Python) and in unipool's own code."""
    header = ["opcodes/op", "runtime", "held", "borrow", "borrow - held",
              "own: held", "borrow", "borrow - held"]  # fmt: skip
    keys = ("held", "borrow", "borrow_cost", "held_own", "borrow_own", "borrow_cost_own")
    body = [[r["backend"], r["runtime"], *(f"{r[k]:,.0f}" for k in keys)] for r in rows]
    return format_table(header, body) if body else ""
