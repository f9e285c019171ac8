"""What the metrics cost on the hot path: acquire+release of an idle connection, p50.

Usage: python docs/overhead.py [DSN]  (default: the local test server)

Each variant times one ``acquire()``/release pair at a time with
``time.perf_counter_ns``, in rounds that take turns, so a noisy neighbour hurts every
variant alike: no instrumentation, an empty listener (the cost of producing and
delivering events at all), OpenTelemetry without an SDK (the API's no-op provider),
OpenTelemetry with the SDK (a meter provider with an in-memory reader) and
Prometheus. Blocking psycopg, then asyncpg on asyncio.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

import unipool
import unipool.otel
import unipool.prometheus

ROUNDS, PER_ROUND = 10, 5000


class Empty:
    def on_acquire(self, pool: unipool.Pool, wait_seconds: float) -> None:
        pass

    def on_release(self, pool: unipool.Pool, use_seconds: float) -> None:
        pass


def variants(pool: unipool.Pool) -> dict[str, Callable[[], Callable[[], None]]]:
    """Each variant instruments ``pool`` and returns how to undo it."""

    def none() -> Callable[[], None]:
        return lambda: None

    def empty() -> Callable[[], None]:
        listener = Empty()
        pool.add_listener(listener)
        return lambda: pool.remove_listener(listener)

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    registry = CollectorRegistry()
    return {
        "none": none,
        "empty listener": empty,
        "otel, no SDK": lambda: unipool.otel.instrument(pool, NoOpMeterProvider()).close,
        "otel": lambda: unipool.otel.instrument(pool, provider).close,
        "prometheus": lambda: unipool.prometheus.register(pool, registry).close,
    }


def report(title: str, samples: dict[str, list[int]]) -> None:
    base = statistics.median(samples["none"])
    print(f"{title}: acquire+release p50, {ROUNDS * PER_ROUND} pairs each")
    for name, ns in samples.items():
        p50 = statistics.median(ns)
        print(f"  {name:14} {p50 / 1000:6.2f} us  (+{(p50 - base) / 1000:.2f} us)")


def blocking(dsn: str) -> None:
    samples: dict[str, list[int]] = {}
    with unipool.connect(dsn, backend="psycopg", min_size=1, max_size=1) as pool:
        table = variants(pool)
        clock = time.perf_counter_ns
        for _ in range(ROUNDS):
            for name, start in table.items():
                stop, out = start(), samples.setdefault(name, [])
                for _ in range(PER_ROUND):
                    t0 = clock()
                    with pool.acquire():
                        pass
                    out.append(clock() - t0)
                stop()
    report("blocking psycopg", samples)


async def asyncio_asyncpg(dsn: str) -> None:
    samples: dict[str, list[int]] = {}
    pool = unipool.connect(dsn, backend="asyncpg", min_size=1, max_size=1)
    async with pool:
        table = variants(pool)
        clock = time.perf_counter_ns
        for _ in range(ROUNDS):
            for name, start in table.items():
                stop, out = start(), samples.setdefault(name, [])
                for _ in range(PER_ROUND):
                    t0 = clock()
                    async with pool.acquire():
                        pass
                    out.append(clock() - t0)
                stop()
    report("asyncio asyncpg", samples)


def main(argv: list[str]) -> None:
    dsn = argv[1] if len(argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test"
    blocking(dsn)
    asyncio.run(asyncio_asyncpg(dsn))


if __name__ == "__main__":
    main(sys.argv)
