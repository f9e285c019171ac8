"""The workloads, which systems run them, and the run settings."""

from __future__ import annotations

from dataclasses import dataclass

SQL = "SELECT 1"
BACKENDS = ("psycopg", "asyncpg", "psqlpy")
RUNTIMES = ("threads", "asyncio", "trio")
MAX_SIZE = 10
HOLD = 0.001  # seconds a 'fair' worker keeps its connection (a client-side sleep)
THREADS_CAP = 200  # no cell runs more threads than this
LIMIT_CAP = 50  # a limit opens one connection per worker: at most this many
CPU_WORKERS = 10  # the client-CPU rows: this many workers on as many connections

#: Workload names (stable: they go into the JSON) and what one operation is.
NAMES = {
    "acquire": "acquire + release, no query",
    "held": "SELECT 1 on a unipool connection acquired once for the whole cell",
    "query": "acquire + SELECT 1 + release",
    "fetchval": "the pool's one-call shortcut for SELECT 1",
    "txn": "acquire + BEGIN; SELECT 1; COMMIT + release",
    "fair": f"acquire, hold {HOLD * 1e3:g} ms, release; the wait for acquire is timed",
}


@dataclass(frozen=True, order=True)
class Workload:
    name: str
    workers: int
    size: int = MAX_SIZE  # the pool's max_size (and min_size where it has one)


FULL_WORKLOADS = (
    Workload("acquire", 1),
    Workload("acquire", 50),
    Workload("held", CPU_WORKERS),
    *(Workload("query", c) for c in (1, 10, 16, 50, 200, 1000)),
    Workload("query", 50, 20),
    Workload("fetchval", 1),
    Workload("fetchval", 50),
    Workload("txn", 50),
    Workload("fair", 200),
)
#: Every workload a target or the chart reads; see _targets.TARGETS.
QUICK_WORKLOADS = (
    Workload("acquire", 1),
    Workload("held", CPU_WORKERS),
    *(Workload("query", c) for c in (10, 16, 50, 1000)),
    Workload("fair", 200),
)

QUICK = {"seconds": 0.25, "rounds": 3, "warmup": 0.1}
FULL = {"seconds": 1.0, "rounds": 5, "warmup": 0.5}


def runs(kind: str, runtime: str, w: Workload) -> bool:
    """Whether a system of this kind and runtime runs ``w``.

    Limits run only ``query`` and ``txn`` (there is nothing to acquire), up to
    ``LIMIT_CAP`` workers; only unipool runs ``held``; threads stop at
    ``THREADS_CAP``. A workload whose operation a system lacks (``fetchval`` on
    most native pools) is skipped when the system is open.
    """
    if kind == "limit":
        return w.name in ("query", "txn") and w.workers <= LIMIT_CAP and w.size == MAX_SIZE
    if w.name == "held":
        return kind == "unipool" and w.workers <= w.size
    return runtime != "threads" or w.workers <= THREADS_CAP


NOTES = [
    f"every pool: max_size={MAX_SIZE} (also 20 in the 'query' c=50 row marked so), min_size "
    "equal where the pool has one (psqlpy and SQLAlchemy have none: the warm-up opens theirs); "
    "other settings default",
    "psycopg connections (pools, limits, SQLAlchemy's) use autocommit, as unipool's do",
    "asyncpg.create_pool resets each connection on release by default (one round trip)",
    "SQLAlchemy: engine.raw_connection() (the QueuePool checkout) and a DB-API cursor",
    "txn: each driver's transaction block (unipool: conn.transaction()); SQLAlchemy: "
    "the three statements on a cursor",
    "warm-up: every system runs 'query' at c=50 (limits: at most their connections) "
    "for the warm-up time after opening",
    f"limits: one connection per worker, opened up front, up to c={LIMIT_CAP}; "
    "'vs' names the limit used when the driver has none in that runtime",
    f"threads stop at c={THREADS_CAP}: no thread system runs c=1000",
    "fair: p50/p99/max are the waits for acquire; 'starved' counts workers that "
    "completed no operation within the cell",
    "cpu us: the benchmark process's CPU time over the cell (time.process_time(), every "
    "thread) per operation; held: each worker's unipool connection is acquired before the "
    "cell and released after it",
]
