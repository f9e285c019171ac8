"""``--chart FILE.png``: the report at a glance, drawn with matplotlib (Agg)."""

from __future__ import annotations

import importlib.util
from typing import Any

from ._report import Report
from ._workloads import MAX_SIZE

INSTALL = "the chart needs matplotlib: pip install matplotlib (or pip install --group bench)"


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_chart(report: Report, path: str) -> None:
    """One bar per pool in three panels: SELECT 1 ops/s over the limit at c=10 and
    c=50, acquire + release p50 at c=1, and the fairness wait p99/p50."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.summary() if r["kind"] != "limit" and r["size"] == MAX_SIZE]
    names = list(dict.fromkeys(f"{r['system']} ({r['runtime']})" for r in rows))

    def values(workload: str, workers: int, field: str) -> list[float]:
        got = {f"{r['system']} ({r['runtime']})": r[field] for r in rows
               if r["workload"] == workload and r["workers"] == workers}  # fmt: skip
        return [got.get(n) or 0.0 for n in names]

    y = list(range(len(names)))
    fig, (ratio, acq, fair) = plt.subplots(
        1, 3, figsize=(15, 0.38 * len(names) + 2), sharey=True, width_ratios=[2, 1, 1]
    )
    for offset, workers, color in ((-0.2, 10, "#4878a8"), (0.2, 50, "#e0913a")):
        ratio.barh([i + offset for i in y], values("query", workers, "x_limit"), height=0.4,
                   color=color, label=f"c={workers}")  # fmt: skip
    ratio.axvline(1.0, color="grey", linewidth=0.8)
    ratio.set_title("SELECT 1 through the pool: ops/s / the driver's limit\n"
                    "(no limit in that runtime: the asyncio one)", fontsize=10)  # fmt: skip
    ratio.legend(loc="lower right")
    _bars(acq, y, values("acquire", 1, "p50_us"), "acquire + release, c=1: p50 (us)")
    starved = [f", {s:.0f} starved" if s else "" for s in values("fair", 200, "starved")]
    title = "200 waiters on 10 connections:\nwait p99/p50 (dashed: 1.5)"
    _bars(fair, y, values("fair", 200, "wait_ratio"), title, starved)
    fair.axvline(1.5, color="grey", linewidth=0.8, linestyle="--")
    ratio.set_yticks(y, names)
    ratio.invert_yaxis()
    meta = report.meta
    fig.suptitle(f"python -m unipool bench: max_size {MAX_SIZE}, {meta.get('rounds', '?')} rounds"
                 f" x {meta.get('seconds', '?')} s per cell, {meta.get('date', '')}",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _bars(
    ax: Any, y: list[int], xs: list[float], title: str, extra: list[str] | None = None
) -> None:
    """Horizontal bars on a log scale, each labelled with its value."""
    ax.barh(y, xs, height=0.6, color="#6a9f58")
    ax.set_title(title, fontsize=10)
    if any(x > 0 for x in xs):
        ax.set_xscale("log")
    for i, x in zip(y, xs, strict=True):
        if x:
            text = f"{x:.3g}" + (extra[i] if extra else "")
            ax.annotate(text, (x, i), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=8)  # fmt: skip
