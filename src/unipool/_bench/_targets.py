"""The targets unipool is held to, and their evaluation on one report.

Each value comes from the same run: a ratio is the median of the per-round
ratios (both cells from one round); a latency or p99/p50 is the median over
rounds; 'starved' is the worst round.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .._demo import format_table
from ._harness import Cell
from ._report import Key, Report, wait_ratio
from ._workloads import BACKENDS, CPU_WORKERS, MAX_SIZE, RUNTIMES


@dataclass(frozen=True)
class Ref:
    """One row of the table: a system in a runtime running a workload."""

    system: str
    runtime: str
    workload: str = "query"
    workers: int = 50
    size: int = MAX_SIZE

    @property
    def key(self) -> Key:
        return self.system, self.runtime, self.workload, self.workers, self.size

    @property
    def parts(self) -> tuple[str, str, str]:
        return self.system, self.runtime, f"{self.workload} c={self.workers}"

    def __str__(self) -> str:
        return " ".join(self.parts)


LIMIT: Literal["limit"] = "limit"
METRICS: dict[str, Callable[[Cell], float]] = {
    "ops/s": lambda c: c.ops_per_s,
    "p50 us": lambda c: c.p50_us,
    "p99/p50": wait_ratio,
    "starved": lambda c: c.starved,
    "cpu us": lambda c: c.cpu_us,
}


@dataclass(frozen=True)
class Target:
    """``metric(ref)``, or its ratio to ``metric(over)`` (``how`` "-": its excess over it),
    compared with ``bound``.

    ``over`` is another row, or ``LIMIT``: the limit of the same driver and c.
    """

    goal: str
    ref: Ref
    metric: str
    op: Literal[">=", "<="]
    bound: float
    over: Ref | Literal["limit"] | None = None
    how: Literal["/", "-"] = "/"

    @property
    def label(self) -> str:
        """What is measured: ``metric of ref``, or ``ref / over`` naming only what differs."""
        if self.over is None:
            return f"{self.metric} of {self.ref}"
        prefix = f"{self.metric}: " if self.how == "-" else ""
        if self.over == LIMIT:
            return f"{prefix}{self.ref} {self.how} limit"
        mine, other = self.ref.parts, self.over.parts
        differs = " ".join(o for m, o in zip(mine, other, strict=True) if m != o)
        return f"{prefix}{self.ref} {self.how} {differs}"


#: Where a driver has a limit in the runtime itself: there ``held - limit`` is unipool's
#: connection layer alone (elsewhere it would include the crossing between runtimes).
SAME_RUNTIME_LIMITS = (("psycopg", "threads"), ("psycopg", "asyncio"), ("asyncpg", "asyncio"),
                       ("psqlpy", "asyncio"))  # fmt: skip


def _u(backend: str, runtime: str, workload: str = "query", workers: int = 50) -> Ref:
    return Ref(f"unipool {backend}", runtime, workload, workers)


TARGETS: tuple[Target, ...] = (
    Target("SELECT 1, c=10, / limit", _u("asyncpg", "asyncio", workers=10), "ops/s", ">=", 0.85,
           LIMIT),
    Target("SELECT 1, c=50, / limit", _u("asyncpg", "asyncio"), "ops/s", ">=", 0.70, LIMIT),
    *(Target("SELECT 1, c=50, / limit", _u("psycopg", rt), "ops/s", ">=", 0.80, LIMIT)
      for rt in ("asyncio", "threads")),
    Target("SELECT 1, c=50, / limit", _u("psqlpy", "asyncio"), "ops/s", ">=", 0.80, LIMIT),
    Target("SELECT 1, c=50, / 10 dedicated", _u("psycopg", "threads"), "ops/s", ">=", 0.80,
           Ref("limit psycopg", "threads", workers=10, size=0)),
    Target("acquire+release, c=1", _u("psycopg", "threads", "acquire", 1), "p50 us", "<=", 6.0),
    *(Target("acquire+release, c=1", _u(b, "asyncio", "acquire", 1), "p50 us", "<=", 8.0)
      for b in BACKENDS),
    *(Target("fairness, 200 waiters on 10", _u(b, rt, "fair", 200), m, "<=", bound)
      for b in BACKENDS for rt in RUNTIMES for m, bound in (("p99/p50", 1.5), ("starved", 0))),
    Target("trio / asyncio, SELECT 1, c=50", _u("psycopg", "trio"), "ops/s", ">=", 1.0,
           _u("psycopg", "asyncio")),
    Target("asyncpg from 16 threads / psycopg_pool", _u("asyncpg", "threads", workers=16),
           "ops/s", ">=", 1.2, Ref("psycopg_pool.ConnectionPool", "threads", workers=16)),
    Target("trio / asyncio, SELECT 1, c=16", _u("asyncpg", "trio", workers=16), "ops/s", ">=",
           0.55, _u("asyncpg", "asyncio", workers=16)),
    *(Target(f"psqlpy mode / asyncio, c={c}", _u("psqlpy", rt, workers=c), "ops/s", ">=", 1.0,
             _u("psqlpy", "asyncio", workers=c)) for c in (16, 50) for rt in ("threads", "trio")),
    *(Target("c=1000 / c=50", _u(b, rt, workers=1000), "ops/s", ">=", 0.9, _u(b, rt))
      for b in BACKENDS for rt in ("asyncio", "trio")),
    *(Target("connection layer's CPU, c=10", _u(b, rt, "held", CPU_WORKERS), "cpu us", "<=",
             1.5, LIMIT, "-") for b, rt in SAME_RUNTIME_LIMITS),
    *(Target("a borrow's CPU, c=10", _u(b, rt, workers=CPU_WORKERS), "cpu us", "<=", 3.0,
             _u(b, rt, "held", CPU_WORKERS), "-") for b in BACKENDS for rt in RUNTIMES),
)  # fmt: skip


def _values(report: Report, t: Target) -> list[float]:
    metric = METRICS[t.metric]
    if t.over is None:
        return [metric(c) for _, c in sorted(report.by_round(t.ref.key).items())]
    combine = report.differences if t.how == "-" else report.ratios
    if isinstance(t.over, Ref):
        return combine(t.ref.key, t.over.key, metric)
    cells = report.by_round(t.ref.key)
    limit = report.limit_of(next(iter(cells.values()))) if cells else None
    return combine(t.ref.key, limit, metric) if limit else []


def evaluate(report: Report, targets: tuple[Target, ...] = TARGETS) -> list[dict[str, Any]]:
    """Each target's value on ``report`` and whether it is met (None: not measured)."""
    out = []
    for t in targets:
        values = _values(report, t)
        value = None
        if values:
            value = max(values) if t.metric == "starved" else statistics.median(values)
        met = None if value is None else value >= t.bound if t.op == ">=" else value <= t.bound
        out.append({"goal": t.goal, "measure": t.label, "metric": t.metric, "op": t.op,
                    "bound": t.bound, "value": value, "rounds": len(values),
                    "met": met})  # fmt: skip
    return out


def targets_table(results: list[dict[str, Any]]) -> str:
    """The targets section: one line per check, met / not met / not measured."""
    rows = []
    for r in results:
        value = "-" if r["value"] is None else f"{r['value']:.3g}"
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[r["met"]]
        rows.append([r["goal"], r["measure"], value, f"{r['op']} {r['bound']:g}", verdict])
    met = sum(r["met"] is True for r in results)
    header = ["target", "measured", "value", "bound", "result"]
    return f"{format_table(header, rows)}\n{met} of {len(results)} met"
