"""Prometheus metrics for a pool: ``register(pool)`` (DESIGN §12; extra ``unipool[prometheus]``).

One collector per registry serves every pool registered there, each pool labelled
``pool``: gauges and counters are read from ``pool.stats()`` at scrape time (so
nothing is counted twice, and nothing runs on the pool's hot paths for them); the
three histograms are fed by a listener added to each pool. Pool names must be
unique per registry.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._exporters import read_stats
from ._pool import Pool
from ._stats import PoolStats

__all__ = ["BUCKETS", "Registration", "register"]

#: Histogram buckets in seconds. An acquire from a warm pool takes microseconds, a
#: connect milliseconds, a borrow anything up to seconds.
BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_lock = threading.Lock()  # guards registration only; never taken on a hot path
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, _PoolCollector] = (
    weakref.WeakKeyDictionary()
)

# name (without _total), help, what it reads
_GAUGES: tuple[tuple[str, str, Callable[[PoolStats], int]], ...] = (
    ("unipool_connections_max", "Most open connections allowed (max_size)", lambda s: s.max_size),
    ("unipool_connections_min", "Fewest open connections kept (min_size)", lambda s: s.min_size),
    ("unipool_pending_requests", "Acquires waiting for a connection", lambda s: s.waiting),
)
_COUNTERS: tuple[tuple[str, str, Callable[[PoolStats], int]], ...] = (
    ("unipool_acquire_timeouts", "Acquires that timed out", lambda s: s.acquire_timeouts),
    ("unipool_connects", "Connections opened", lambda s: s.connects),
    ("unipool_connect_errors", "Failed connects", lambda s: s.connect_errors),
    ("unipool_connections_lost", "Connections found dead", lambda s: s.connections_lost),
)


_Family = GaugeMetricFamily | CounterMetricFamily


class _PoolCollector(Collector):
    """The metrics of every pool registered in one registry."""

    def __init__(self) -> None:
        self.pools: tuple[weakref.ref[Pool], ...] = ()
        self.histograms = {
            event: Histogram(name, help_, ["pool"], registry=None, buckets=BUCKETS)
            for event, name, help_ in (
                ("wait", "unipool_acquire_wait_seconds", "Time an acquire waited"),
                ("use", "unipool_connection_use_seconds", "Time a connection was borrowed"),
                ("create", "unipool_connection_create_seconds", "Time to open a connection"),
            )
        }

    def _families(self) -> tuple[GaugeMetricFamily, list[_Family], CounterMetricFamily]:
        connections = GaugeMetricFamily(
            "unipool_connections", "Open connections: idle or used", labels=["pool", "state"]
        )
        plain: list[_Family] = [GaugeMetricFamily(n, h, labels=["pool"]) for n, h, _ in _GAUGES]
        plain += [CounterMetricFamily(n, h, labels=["pool"]) for n, h, _ in _COUNTERS]
        recycled = CounterMetricFamily(
            "unipool_connections_recycled",
            "Connections replaced, by cause",
            labels=["pool", "cause"],
        )
        return connections, plain, recycled

    def describe(self) -> Iterable[Metric]:
        connections, plain, recycled = self._families()
        yield connections
        yield from plain
        yield recycled
        for histogram in self.histograms.values():
            yield from histogram.describe()

    def collect(self) -> Iterable[Metric]:
        connections, plain, recycled = self._families()
        readers = [read for _, _, read in (*_GAUGES, *_COUNTERS)]
        for s in self._stats():
            connections.add_metric([s.name, "idle"], s.idle)
            connections.add_metric([s.name, "used"], s.in_use)
            for family, read in zip(plain, readers, strict=True):
                family.add_metric([s.name], read(s))
            for cause, n in s.recycled.items():
                recycled.add_metric([s.name, cause], n)
        yield connections
        yield from plain
        yield recycled
        for histogram in self.histograms.values():
            for metric in histogram.collect():
                # the names DESIGN §12 fixes, and no more: no ``_created`` series
                metric.samples = [x for x in metric.samples if not x.name.endswith("_created")]
                yield metric

    def _stats(self) -> Iterator[PoolStats]:
        for ref in self.pools:
            pool = ref()
            stats = None if pool is None else read_stats(pool)
            if stats is not None:
                yield stats


class _Listener:
    """Feeds the histograms: one observation per event, on a child found once."""

    __slots__ = ("_create", "_use", "_wait")

    def __init__(self, collector: _PoolCollector, name: str) -> None:
        h = collector.histograms
        self._wait: Callable[[float], None] = h["wait"].labels(name).observe
        self._use: Callable[[float], None] = h["use"].labels(name).observe
        self._create: Callable[[float], None] = h["create"].labels(name).observe

    def on_connect(self, pool: Pool, seconds: float) -> None:
        self._create(seconds)

    def on_acquire(self, pool: Pool, wait_seconds: float) -> None:
        self._wait(wait_seconds)

    def on_release(self, pool: Pool, use_seconds: float) -> None:
        self._use(use_seconds)


class Registration:
    """The metrics of one pool, exposed in a registry until :meth:`close`."""

    def __init__(
        self,
        pool: Pool,
        registry: CollectorRegistry,
        collector: _PoolCollector,
        ref: weakref.ref[Pool],
        listener: _Listener,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self._collector = collector
        self._ref = ref
        self._listener: _Listener | None = listener

    @property
    def pool(self) -> Pool:
        """The registered pool."""
        return self._pool

    def close(self) -> None:
        """Stop exposing the pool: its series leave the registry (idempotent)."""
        with _lock:
            listener, self._listener = self._listener, None
            if listener is None:
                return
            collector = self._collector
            collector.pools = tuple(r for r in collector.pools if r is not self._ref)
            for histogram in collector.histograms.values():
                histogram.remove(self._pool.name)
            if not collector.pools:
                self._registry.unregister(collector)
                del _collectors[self._registry]
        self._pool.remove_listener(listener)

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._listener is None else "exposed"
        return f"<unipool.prometheus.Registration {self._pool.name!r} {state}>"


def register(pool: Pool, registry: CollectorRegistry | None = None) -> Registration:
    """Expose ``pool``'s metrics in ``registry`` until the result is closed.

    Args:
        pool: the pool, open or not yet.
        registry: where the metrics go; ``None``: ``prometheus_client.REGISTRY``.

    Returns:
        A :class:`Registration`; its ``close()`` removes the pool's series.

    Raises:
        TypeError: ``pool`` is not a :class:`unipool.Pool`.
        ValueError: ``pool``, or another live pool of the same name, is already
            registered in ``registry`` (give pools distinct ``name=``).
    """
    if not isinstance(pool, Pool):
        raise TypeError(f"register() takes a unipool.Pool, not {type(pool).__name__}")
    target = REGISTRY if registry is None else registry
    with _lock:
        collector = _collectors.get(target)
        if collector is None:
            collector = _PoolCollector()
            target.register(collector)
            _collectors[target] = collector
        for ref in collector.pools:
            other = ref()
            if other is pool:
                raise ValueError(f"pool {pool.name!r} is already registered")
            if other is not None and other.name == pool.name:
                raise ValueError(
                    f"another pool named {pool.name!r} is registered here: "
                    "give each pool its own name= so their series stay apart"
                )
        ref = weakref.ref(pool)
        listener = _Listener(collector, pool.name)
        pool.add_listener(listener)
        collector.pools = (*collector.pools, ref)
    return Registration(pool, target, collector, ref, listener)
