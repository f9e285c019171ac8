"""``python -m unipool bench``: unipool next to the drivers' own pools, on one server.

Every system (a pool, or a "limit": one dedicated connection per worker, no
pool) runs once per round, in an order rotated from round to round; each round
opens the system, warms it up, measures every workload for a fixed time and
closes it. Times are taken by the harness around each operation, never inside
a pool. The table shows medians over rounds; the ratio to the limit of the
same driver and runtime is the median of the per-round ratios.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .._demo import format_table, server_dsn
from ._harness import FULL, MAX_SIZE, NOTES, QUICK, SQL, Cell, run_system
from ._systems import systems

__all__ = ["FULL", "QUICK", "Report", "bench", "run_bench", "systems"]


def _limit_of(cell: Cell, limits: set[tuple[str, str]]) -> tuple[str, str] | None:
    for runtime in (cell.runtime, "asyncio"):
        if (cell.driver, runtime) in limits:
            return cell.driver, runtime
    return None


@dataclass
class Report:
    cells: list[Cell]
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """One row per system x workload: medians over rounds, in run order."""
        limits = {(c.driver, c.runtime) for c in self.cells if c.kind == "limit"}
        limit_rate = {(c.round, c.driver, c.runtime, c.workload, c.workers): c.ops_per_s
                      for c in self.cells if c.kind == "limit"}  # fmt: skip
        groups: dict[tuple[str, str, str, int], list[Cell]] = {}
        for c in sorted(self.cells, key=lambda c: (c.workload != "query", c.workers)):
            groups.setdefault((c.system, c.runtime, c.workload, c.workers), []).append(c)
        rows = []
        for (name, runtime, workload, workers), cells in groups.items():
            ratios = []
            lim = _limit_of(cells[0], limits) if workload == "query" else None
            for c in cells:
                base = lim and limit_rate.get((c.round, *lim, workload, workers))
                if base:
                    ratios.append(c.ops_per_s / base)
            rows.append({
                "system": name, "runtime": runtime, "kind": cells[0].kind,
                "workload": workload, "workers": workers, "rounds": len(cells),
                "ops_per_s": statistics.median(c.ops_per_s for c in cells),
                "p50_us": statistics.median(c.p50_us for c in cells),
                "p99_us": statistics.median(c.p99_us for c in cells),
                "x_limit": statistics.median(ratios) if ratios else None,
                "limit": f"{lim[0]} {lim[1]}" if lim and ratios else None,
            })  # fmt: skip
        return rows

    def table(self) -> str:
        header = ["workload", "c", "system", "runtime", "ops/s", "p50 us", "p99 us",
                  "x limit", "vs"]  # fmt: skip
        rows = []
        for r in self.summary():
            ratio = "-" if r["x_limit"] is None else f"{r['x_limit']:.2f}"
            vs = "" if r["limit"] is None or r["limit"].endswith(r["runtime"]) else r["limit"]
            rows.append([r["workload"], str(r["workers"]), r["system"], r["runtime"],
                         f"{r['ops_per_s']:,.0f}", f"{r['p50_us']:,.0f}", f"{r['p99_us']:,.0f}",
                         ratio, vs])  # fmt: skip
        return format_table(header, rows)

    def to_json(self) -> str:
        return json.dumps(
            {
                "meta": self.meta,
                "summary": self.summary(),
                "cells": [asdict(c) for c in self.cells],
            },
            indent=1,
        )


def run_bench(
    dsn: str,
    *,
    seconds: float,
    rounds: int,
    warmup: float,
    only: list[str] | None = None,
    say: Callable[[str], None] = print,
) -> Report:
    """Run every system (those whose name contains one of ``only``, if given) ``rounds`` times."""
    chosen = [s for s in systems() if not only or any(o in s.name for o in only)]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "sql": SQL,
        "seconds": seconds, "rounds": rounds, "warmup": warmup, "max_size": MAX_SIZE,
        "notes": NOTES,
    }  # fmt: skip
    cells: list[Cell] = []
    for rnd in range(rounds):
        k = rnd % len(chosen) if chosen else 0
        for system in chosen[k:] + chosen[:k]:
            say(f"round {rnd + 1}/{rounds}: {system.name} ({system.runtime})")
            cells.extend(run_system(system, dsn, rnd, seconds, warmup))
    return Report(cells, meta)


def bench(
    dsn: str | None,
    quick: bool,
    json_path: str | None,
    only: list[str] | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """The ``bench`` command: run, print the table, save the JSON; the exit status."""
    settings = QUICK if quick else FULL
    with server_dsn(dsn, say) as target:
        report = run_bench(
            target,
            seconds=settings["seconds"],
            rounds=int(settings["rounds"]),
            warmup=settings["warmup"],
            only=only,
            say=say,
        )
    say("")
    say(report.table())
    say("")
    say(f"{settings['rounds']:g} rounds x {settings['seconds']:g} s per cell; medians over rounds.")
    for note in NOTES:
        say(f"- {note}")
    if json_path:
        with open(json_path, "w") as f:
            f.write(report.to_json())
        say(f"raw results: {json_path}")
    return 0
