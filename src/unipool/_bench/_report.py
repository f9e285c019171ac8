"""The report: cells by round, medians and per-round ratios, the tables and the JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .._demo import format_table
from ._harness import Cell
from ._workloads import BACKENDS, CPU_WORKERS, MAX_SIZE, NAMES, RUNTIMES

#: A cell's identity across rounds: system, runtime, workload, workers, size.
Key = tuple[str, str, str, int, int]
#: The limit's workload each pool workload is compared with.
_LIMIT_WORKLOAD = {"held": "query", "query": "query", "fetchval": "query", "txn": "txn"}
#: Each driver's own pool, by driver and runtime, for the client-CPU rows.
OWN_POOLS = {
    ("psycopg", "threads"): "psycopg_pool.ConnectionPool",
    ("psycopg", "asyncio"): "psycopg_pool.AsyncConnectionPool",
    ("asyncpg", "asyncio"): "asyncpg.create_pool",
    ("psqlpy", "asyncio"): "psqlpy.ConnectionPool",
}


def key(c: Cell) -> Key:
    return c.system, c.runtime, c.workload, c.workers, c.size


def wait_ratio(c: Cell) -> float:
    """p99 over p50 (for 'fair': of the waits for acquire)."""
    return c.p99_us / c.p50_us if c.p50_us else float("inf")


@dataclass
class Report:
    """A run's cells and metadata, and the targets evaluated on them."""

    cells: list[Cell]
    meta: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    #: opcodes per operation, counted (``--opcodes``; see ``_opcodes``)
    opcodes: list[dict[str, Any]] = field(default_factory=list)

    def by_round(self, k: Key) -> dict[int, Cell]:
        """The cells of one row, by round."""
        return {c.round: c for c in self.cells if key(c) == k}

    def ratios(self, num: Key, den: Key, metric: Callable[[Cell], float]) -> list[float]:
        """``metric(num) / metric(den)`` in each round that has both."""
        a, b = self.by_round(num), self.by_round(den)
        return [metric(a[r]) / metric(b[r]) for r in sorted(a.keys() & b.keys()) if metric(b[r])]

    def differences(self, one: Key, other: Key, metric: Callable[[Cell], float]) -> list[float]:
        """``metric(one) - metric(other)`` in each round that has both."""
        a, b = self.by_round(one), self.by_round(other)
        return [metric(a[r]) - metric(b[r]) for r in sorted(a.keys() & b.keys())]

    def limit_of(self, c: Cell) -> Key | None:
        """The limit a cell is compared with: same driver and c, same runtime or else asyncio."""
        workload = _LIMIT_WORKLOAD.get(c.workload)
        have = {key(x) for x in self.cells if x.kind == "limit"}
        for runtime in (c.runtime, "asyncio"):
            k = (f"limit {c.driver}", runtime, workload or "", c.workers, 0)
            if workload and k in have:
                return k
        return None

    def summary(self) -> list[dict[str, Any]]:
        """One row per system x workload x c x size, medians over rounds, in table order."""
        order = list(NAMES)
        groups: dict[Key, list[Cell]] = {}
        for c in sorted(self.cells, key=lambda c: (order.index(c.workload), c.workers, c.size)):
            groups.setdefault(key(c), []).append(c)
        rows = []
        for k, cells in groups.items():
            first = cells[0]
            lim = self.limit_of(first)
            x_limit = self.ratios(k, lim, lambda c: c.ops_per_s) if lim else []
            c50 = (*k[:3], 50, k[4])
            grows = first.workload == "query" and first.workers > 50
            x_c50 = self.ratios(k, c50, lambda c: c.ops_per_s) if grows else []
            fair = first.workload == "fair"
            rows.append({
                "system": first.system, "runtime": first.runtime, "kind": first.kind,
                "workload": first.workload, "workers": first.workers, "size": first.size,
                "rounds": len(cells),
                "ops_per_s": statistics.median(c.ops_per_s for c in cells),
                "p50_us": statistics.median(c.p50_us for c in cells),
                "p99_us": statistics.median(c.p99_us for c in cells),
                "max_us": max(c.max_us for c in cells),
                "cpu_us": statistics.median(c.cpu_us for c in cells),
                "starved": max(c.starved for c in cells),
                "wait_ratio": statistics.median(wait_ratio(c) for c in cells) if fair else None,
                "x_limit": statistics.median(x_limit) if x_limit else None,
                "limit": f"{lim[0]} {lim[1]}" if lim and x_limit else None,
                "x_c50": statistics.median(x_c50) if x_c50 else None,
            })  # fmt: skip
        return rows

    def table(self) -> str:
        """Every workload but 'fair', one row per system x workload x c x size."""
        header = ["workload", "c", "max", "system", "runtime", "ops/s", "p50 us", "p99 us",
                  "cpu us", "x limit", "vs", "x c=50"]  # fmt: skip
        rows = []
        for r in self.summary():
            if r["workload"] == "fair":
                continue
            vs = "" if r["limit"] is None or r["limit"].endswith(r["runtime"]) else r["limit"]
            rows.append([r["workload"], str(r["workers"]), str(r["size"] or "-"), r["system"],
                         r["runtime"], f"{r['ops_per_s']:,.0f}", _us(r["p50_us"]),
                         f"{r['p99_us']:,.0f}", _us(r["cpu_us"]), _ratio(r["x_limit"]), vs,
                         _ratio(r["x_c50"])])  # fmt: skip
        return format_table(header, rows)

    def fairness_table(self) -> str:
        """The 'fair' rows: the waits for acquire, in milliseconds."""
        header = ["fair", "c", "max", "system", "runtime", "ops/s", "wait p50 ms", "p99 ms",
                  "max ms", "p99/p50", "starved"]  # fmt: skip
        rows = [["fair", str(r["workers"]), str(r["size"]), r["system"], r["runtime"],
                 f"{r['ops_per_s']:,.0f}", f"{r['p50_us'] / 1e3:,.1f}",
                 f"{r['p99_us'] / 1e3:,.1f}", f"{r['max_us'] / 1e3:,.1f}",
                 _ratio(r["wait_ratio"]), str(r["starved"])]
                for r in self.summary() if r["workload"] == "fair"]  # fmt: skip
        return format_table(header, rows) if rows else ""

    def cpu_rows(self) -> list[dict[str, Any]]:
        """The client-CPU rows: per unipool backend x runtime, CPU us per SELECT 1 at c=10 on
        10 connections, on (a) dedicated connections (the driver's limit), (b) unipool
        connections held for the cell, (c) a unipool borrow per operation, (d) the driver's
        own pool; and the connection layer's cost b - a and a borrow's c - b (medians of the
        per-round differences). None where not measured."""
        rows = []
        for driver in BACKENDS:
            for runtime in RUNTIMES:
                keys = self._cpu_keys(driver, runtime)
                if keys["held"] is None and keys["borrow"] is None:
                    continue
                row: dict[str, Any] = {"backend": driver, "runtime": runtime}
                for name, k in keys.items():
                    cells = self.by_round(k) if k else {}
                    median = statistics.median(c.cpu_us for c in cells.values()) if cells else None
                    row[f"{name}_us"] = median
                dedicated, pool = keys["dedicated"], keys["own_pool"]
                row["dedicated"] = f"{dedicated[0]} {dedicated[1]}" if dedicated else None
                row["own_pool"] = pool[0] if pool else None
                for name, one, other in (("layer", "held", "dedicated"),
                                         ("borrow_cost", "borrow", "held")):  # fmt: skip
                    a, b = keys[one], keys[other]
                    diffs = self.differences(a, b, _cpu) if a and b else []
                    row[f"{name}_us"] = statistics.median(diffs) if diffs else None
                rows.append(row)
        return rows

    def _cpu_keys(self, driver: str, runtime: str) -> dict[str, Key | None]:
        have = {key(c) for c in self.cells}
        mine = f"unipool {driver}"
        held = (mine, runtime, "held", CPU_WORKERS, MAX_SIZE)
        borrow = (mine, runtime, "query", CPU_WORKERS, MAX_SIZE)
        pool = (OWN_POOLS.get((driver, runtime), ""), runtime, "query", CPU_WORKERS, MAX_SIZE)
        first = next((c for c in self.cells if key(c) in (held, borrow)), None)
        return {
            "dedicated": self.limit_of(first) if first else None,
            "held": held if held in have else None,
            "borrow": borrow if borrow in have else None,
            "own_pool": pool if pool in have else None,
        }

    def cpu_table(self) -> str:
        """The client-CPU rows (see ``cpu_rows``), in microseconds."""
        header = ["cpu us/op", "runtime", "a dedicated", "b held", "c borrow", "d own pool",
                  "b - a", "c - b", "a is"]  # fmt: skip
        rows = [[r["backend"], r["runtime"], *(_opt(r[f"{n}_us"]) for n in
                 ("dedicated", "held", "borrow", "own_pool", "layer", "borrow_cost")),
                 "" if r["dedicated"] is None or r["dedicated"].endswith(r["runtime"])
                 else r["dedicated"]] for r in self.cpu_rows()]  # fmt: skip
        return format_table(header, rows) if rows else ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "meta": self.meta,
                "summary": self.summary(),
                "cpu": self.cpu_rows(),
                "targets": self.targets,
                "opcodes": self.opcodes,
                "cells": [asdict(c) for c in self.cells],
            },
            indent=1,
        )


def _cpu(c: Cell) -> float:
    return c.cpu_us


def _opt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _us(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
