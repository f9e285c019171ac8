"""``python -m unipool bench``: unipool next to the drivers' own pools, on one server.

Every system (a pool, or a "limit": one dedicated connection per worker, no
pool) runs once per round, in an order rotated from round to round; each round
opens the system, warms it up, measures every workload for a fixed time and
closes it. Times are taken by the harness around each operation, never inside
a pool. The tables show medians over rounds; a ratio (to the limit of the same
driver and runtime, or between two systems for a target) is the median of the
per-round ratios.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence

from .._demo import server_dsn
from .._progress import Progress
from ._chart import INSTALL, have_matplotlib, write_chart
from ._harness import run_system
from ._opcodes import count_unipool, opcodes_table
from ._report import Report
from ._systems import systems
from ._targets import TARGETS, evaluate, targets_table
from ._workloads import (
    FULL,
    FULL_WORKLOADS,
    MAX_SIZE,
    NAMES,
    NOTES,
    QUICK,
    QUICK_WORKLOADS,
    SQL,
    Workload,
)

__all__ = ["FULL", "QUICK", "TARGETS", "Report", "Workload", "bench", "run_bench", "systems"]


def run_bench(
    dsn: str,
    *,
    seconds: float,
    rounds: int,
    warmup: float,
    workloads: Sequence[Workload] = FULL_WORKLOADS,
    only: list[str] | None = None,
    say: Callable[[str], None] = print,
    opcodes: bool = False,
) -> Report:
    """Run every system (those whose name contains one of ``only``, if given) ``rounds`` times;
    with ``opcodes``, then count each unipool system's opcodes per operation.

    ``say`` is told as each system starts a round; a :class:`Progress` also learns how many
    times that will be.
    """
    chosen = [s for s in systems() if not only or any(o in s.name for o in only)]
    if isinstance(say, Progress):
        say.total = rounds * len(chosen) + (
            sum(s.kind == "unipool" for s in chosen) if opcodes else 0
        )
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "sql": SQL,
        "seconds": seconds, "rounds": rounds, "warmup": warmup, "max_size": MAX_SIZE,
        "workloads": [f"{w.name} c={w.workers} max={w.size}" for w in workloads],
        "definitions": NAMES, "notes": NOTES,
    }  # fmt: skip
    cells = []
    started = time.perf_counter()
    for rnd in range(rounds):
        k = rnd % len(chosen) if chosen else 0
        for system in chosen[k:] + chosen[:k]:
            say(f"round {rnd + 1}/{rounds}: {system.name}, {system.runtime}")
            cells.extend(run_system(system, dsn, rnd, seconds, warmup, workloads))
    counted = count_unipool(chosen, dsn, say) if opcodes else []
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    report = Report(cells, meta, opcodes=counted)
    report.targets = evaluate(report)
    return report


def bench(
    dsn: str | None,
    quick: bool,
    json_path: str | None,
    only: list[str] | None = None,
    say: Callable[[str], None] = print,
    chart_path: str | None = None,
    progress: Progress | None = None,
    opcodes: bool = False,
) -> int:
    """The ``bench`` command: run, print the tables and targets, save JSON and chart;
    with ``opcodes``, the counted opcodes per operation too.

    ``json_path`` "-" prints the raw results (the JSON that a path would hold) instead of
    the tables. ``progress`` is told of each system and round (default: stderr, when it is
    a terminal).
    """
    if chart_path and not have_matplotlib():
        say(INSTALL)
        return 2
    settings = QUICK if quick else FULL
    if progress is None:
        progress = Progress()
    with server_dsn(dsn, progress.note) as target:
        report = run_bench(
            target,
            seconds=settings["seconds"],
            rounds=int(settings["rounds"]),
            warmup=settings["warmup"],
            workloads=QUICK_WORKLOADS if quick else FULL_WORKLOADS,
            only=only,
            say=progress,
            opcodes=opcodes,
        )
    if json_path == "-":
        say(report.to_json())
    else:
        _say_tables(report, settings, say)
    if json_path and json_path != "-":
        with open(json_path, "w") as f:
            f.write(report.to_json())
        say(f"raw results: {json_path}")
    if chart_path:
        write_chart(report, chart_path)
        (progress.note if json_path == "-" else say)(f"chart: {chart_path}")
    return 0


def _say_tables(report: Report, settings: dict[str, float], say: Callable[[str], None]) -> None:
    counted = opcodes_table(report.opcodes)
    for section in (report.table(), report.fairness_table(), report.cpu_table(), counted):
        if section:
            say(section)
            say("")
    say(f"{settings['rounds']:g} rounds x {settings['seconds']:g} s per cell; medians over "
        f"rounds; {report.meta['wall_s']:g} s.")  # fmt: skip
    for note in NOTES:
        say(f"- {note}")
    say("")
    say("targets (a ratio is the median of per-round ratios)")
    say(targets_table(report.targets))
