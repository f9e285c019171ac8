"""``python -m unipool demo``: a short concurrent workload in every mode, as a table."""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio

from . import backends
from ._connect import connect
from ._dsn import redact_dsn
from ._pool import Pool
from ._progress import Progress
from ._stats import PoolStats

QUERY = "SELECT $1::int + 1"


@dataclass
class Result:
    """What one backend x mode run measured."""

    backend: str
    mode: str
    workers: int
    ops: int
    seconds: float
    latencies: list[float]
    stats: PoolStats

    def percentiles_us(self) -> tuple[float, float]:
        """The median and 99th percentile latency, in microseconds."""
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1e6 if lat else 0.0
        p99 = lat[int(len(lat) * 0.99)] * 1e6 if lat else 0.0
        return p50, p99

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: the table's columns as numbers (times in microseconds)."""
        p50, p99 = self.percentiles_us()
        s = self.stats
        return {
            "backend": self.backend, "mode": self.mode, "workers": self.workers,
            "ops": self.ops, "seconds": round(self.seconds, 3),
            "ops_per_s": round(self.ops / self.seconds, 1), "p50_us": round(p50, 1),
            "p99_us": round(p99, 1), "size": s.size, "max_size": s.max_size,
            "connects": s.connects, "max_wait_ms": round(s.wait_time_max * 1e3, 3),
        }  # fmt: skip

    def row(self) -> list[str]:
        p50, p99 = self.percentiles_us()
        s = self.stats
        return [
            self.backend, self.mode, str(self.workers), str(self.ops),
            f"{self.ops / self.seconds:,.0f}", f"{p50:,.0f}", f"{p99:,.0f}",
            f"{s.size}/{s.max_size}", str(s.connects), f"{s.wait_time_max * 1e3:.1f}",
        ]  # fmt: skip


HEADER = ["backend", "mode", "workers", "ops", "ops/s", "p50 us", "p99 us", "size/max",
          "connects", "max wait ms"]  # fmt: skip


def run_sync(pool: Pool, workers: int, seconds: float) -> tuple[int, list[float]]:
    """Threads doing ``fetchval`` until time is up."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def work() -> None:
        mine: list[float] = []
        i = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            with pool.acquire() as conn:
                conn.fetchval(QUERY, i)
            mine.append(time.perf_counter() - t0)
            i += 1
        latencies.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), latencies


async def run_async(pool: Pool, workers: int, seconds: float) -> tuple[int, list[float]]:
    """Tasks doing ``fetchval`` until time is up."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def work() -> None:
        i = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            async with pool.acquire() as conn:
                await conn.fetchval(QUERY, i)
            latencies.append(time.perf_counter() - t0)
            i += 1

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(work)
    return len(latencies), latencies


def run_one(dsn: str, backend: str, mode: str, workers: int, seconds: float) -> Result:
    """One backend in one mode: warm up, run, and report."""
    pool = connect(dsn, backend=backend, max_size=10, name=f"demo-{backend}-{mode}")
    if mode == "sync":
        with pool:
            run_sync(pool, workers, 0.2)
            start = time.perf_counter()
            ops, lat = run_sync(pool, workers, seconds)
            elapsed = time.perf_counter() - start
            stats = pool.stats()
    else:

        async def main() -> tuple[int, list[float], float, PoolStats]:
            async with pool:
                await run_async(pool, workers, 0.2)
                start = time.perf_counter()
                ops, lat = await run_async(pool, workers, seconds)
                return ops, lat, time.perf_counter() - start, pool.stats()

        ops, lat, elapsed, stats = anyio.run(main, backend=mode)
    return Result(backend, mode, workers, ops, elapsed, lat, stats)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with right-aligned numbers."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(_cell(c, w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(lines)


def _cell(text: str, width: int) -> str:
    return text.rjust(width) if text[:1].isdigit() else text.ljust(width)


class NoServer(Exception):
    """Raised when no DSN is given and no throwaway server can be started."""


_GIVE_ONE = "give a server with --dsn postgresql://... (or UNIPOOL_DSN)"


@contextlib.contextmanager
def server_dsn(dsn: str | None, say: Callable[[str], None]) -> Iterator[str]:
    """``dsn``, or that of a throwaway server started for the occasion.

    Raises:
        NoServer: no *dsn*, and no throwaway server could be started.
    """
    if dsn:
        yield dsn
        return
    from ._tempserver import ServerBinariesNotFound, TempServer

    server = TempServer()
    try:
        say(f"no DSN given: starting a throwaway PostgreSQL server from {server.bindir}...")
        server.start()
    except ServerBinariesNotFound as exc:
        server.cleanup()
        raise NoServer(f"no DSN given and {exc}; or {_GIVE_ONE}") from exc
    except RuntimeError as exc:
        server.cleanup()
        raise NoServer(
            f"could not start a throwaway PostgreSQL server ({_GIVE_ONE}): {exc}"
        ) from exc
    with server:
        say(f"server ready on {server.host}:{server.port}")
        yield server.dsn(dbname="test")


def demo(
    dsn: str | None,
    seconds: float,
    workers: int,
    say: Callable[[str], None] = print,
    progress: Progress | None = None,
    as_json: bool = False,
) -> int:
    """Run the demo and print its table (or its JSON); the process exit status.

    ``progress`` is told of each case and of the server (default: stderr, when it is a
    terminal).
    """
    names = backends.installed()
    if not names:
        print('no driver installed: pip install "unipool[all]"', file=sys.stderr)
        return 1
    cases = [(b, m) for b in names for m in ("sync", "asyncio", "trio")
             if m != "trio" or _has_trio()]  # fmt: skip
    if progress is None:
        progress = Progress()
    progress.total = len(cases)
    results = []
    with server_dsn(dsn, progress.note) as target:
        for backend, mode in cases:
            progress(f"{backend} / {mode}: {workers} workers for {seconds:g} s")
            results.append(run_one(target, backend, mode, workers, seconds))
    if as_json:
        data = {"dsn": redact_dsn(dsn) if dsn else None, "seconds": seconds, "workers": workers,
                "results": [r.as_dict() for r in results]}  # fmt: skip
        say(json.dumps(data, indent=2))
    else:
        say(format_table(HEADER, [r.row() for r in results]))
    return 0


def _has_trio() -> bool:
    import importlib.util

    return importlib.util.find_spec("trio") is not None
