"""OpenTelemetry metrics for a pool: ``instrument(pool)`` (DESIGN §12; extra ``unipool[otel]``).

Gauges and counters are observed from ``pool.stats()`` when a reader collects, so
nothing is counted twice and nothing runs on the pool's hot paths for them; the three
histograms are fed by a listener the instrumentation adds to the pool. Every pool
instrumented against one meter provider shares that provider's instruments, told
apart by the attribute ``db.client.connection.pool.name``, which is why pool names
must be unique per provider. Names and units follow OpenTelemetry's semantic
conventions for database client connection pools.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import (
    CallbackOptions,
    MeterProvider,
    Observation,
    get_meter,
    get_meter_provider,
)

from . import __version__
from ._exporters import read_stats
from ._pool import Pool
from ._stats import PoolStats

__all__ = ["BOUNDARIES", "POOL_NAME", "STATE", "Instrumentation", "instrument"]

#: the attribute naming the pool on every metric
POOL_NAME = "db.client.connection.pool.name"
#: the attribute telling idle from used connections on ``db.client.connection.count``
STATE = "db.client.connection.state"

#: Histogram bucket boundaries in seconds, advised to the SDK. An acquire from a warm
#: pool takes microseconds, a connect milliseconds, a borrow anything up to seconds.
BOUNDARIES = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)

_lock = threading.Lock()  # guards registration only; never taken on a hot path
_shared: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


class _Entry:
    """One instrumented pool as the observing callbacks see it."""

    __slots__ = ("attrs", "by_state", "pool")

    def __init__(self, pool: Pool) -> None:
        self.pool = weakref.ref(pool)
        self.attrs = {POOL_NAME: pool.name}
        self.by_state = (
            {POOL_NAME: pool.name, STATE: "idle"},
            {POOL_NAME: pool.name, STATE: "used"},
        )


class _Instruments:
    """The instruments of one meter provider, shared by the pools instrumented on it."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = get_meter("unipool", __version__, meter_provider=provider)
        self.entries: tuple[_Entry, ...] = ()
        updown = meter.create_observable_up_down_counter
        counter = meter.create_observable_counter
        updown(
            "db.client.connection.count",
            [self._count],
            "{connection}",
            "Connections in the state given by db.client.connection.state",
        )
        for name, read, description in (
            ("db.client.connection.idle.max", _max_size, "Most idle connections allowed"),
            ("db.client.connection.idle.min", _min_size, "Fewest idle connections kept"),
            ("db.client.connection.max", _max_size, "Most open connections allowed"),
        ):
            updown(name, [self._each(read)], "{connection}", description)
        updown(
            "db.client.connection.pending_requests",
            [self._each(_waiting)],
            "{request}",
            "Requests waiting for a connection",
        )
        counter(
            "db.client.connection.timeouts",
            [self._each(_timeouts)],
            "{timeout}",
            "Acquires that timed out waiting for a connection",
        )
        for name, read, unit, description in (
            ("unipool.connection.connects", _connects, "{connection}", "Connections opened"),
            ("unipool.connection.connect_errors", _errors, "{error}", "Failed connects"),
            ("unipool.connection.lost", _lost, "{connection}", "Connections found dead"),
        ):
            counter(name, [self._each(read)], unit, description)
        counter(
            "unipool.connection.recycled",
            [self._recycled],
            "{connection}",
            "Connections replaced, by cause",
        )
        histogram = meter.create_histogram
        self.create_time = histogram(
            "db.client.connection.create_time",
            "s",
            "Time to open a connection",
            explicit_bucket_boundaries_advisory=BOUNDARIES,
        )
        self.wait_time = histogram(
            "db.client.connection.wait_time",
            "s",
            "Time an acquire waited for a connection",
            explicit_bucket_boundaries_advisory=BOUNDARIES,
        )
        self.use_time = histogram(
            "db.client.connection.use_time",
            "s",
            "Time from borrowing a connection to giving it back",
            explicit_bucket_boundaries_advisory=BOUNDARIES,
        )

    def _stats(self) -> Iterable[tuple[_Entry, PoolStats]]:
        for entry in self.entries:
            pool = entry.pool()
            stats = None if pool is None else read_stats(pool)
            if stats is not None:
                yield entry, stats

    def _each(
        self, read: Callable[[PoolStats], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read(s), entry.attrs) for entry, s in self._stats()]

        return observe

    def _count(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for entry, s in self._stats():
            idle, used = entry.by_state
            observations += [Observation(s.idle, idle), Observation(s.in_use, used)]
        return observations

    def _recycled(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {**entry.attrs, "cause": cause})
            for entry, s in self._stats()
            for cause, n in s.recycled.items()
        ]


def _max_size(s: PoolStats) -> int:
    return s.max_size


def _min_size(s: PoolStats) -> int:
    return s.min_size


def _waiting(s: PoolStats) -> int:
    return s.waiting


def _timeouts(s: PoolStats) -> int:
    return s.acquire_timeouts


def _connects(s: PoolStats) -> int:
    return s.connects


def _errors(s: PoolStats) -> int:
    return s.connect_errors


def _lost(s: PoolStats) -> int:
    return s.connections_lost


class _Listener:
    """Feeds the histograms: one call into the SDK per event, attributes built once."""

    __slots__ = ("_attrs", "_create", "_use", "_wait")

    def __init__(self, instruments: _Instruments, name: str) -> None:
        self._attrs = {POOL_NAME: name}
        self._create: Callable[..., None] = instruments.create_time.record
        self._wait: Callable[..., None] = instruments.wait_time.record
        self._use: Callable[..., None] = instruments.use_time.record

    def on_connect(self, pool: Pool, seconds: float) -> None:
        self._create(seconds, self._attrs)

    def on_acquire(self, pool: Pool, wait_seconds: float) -> None:
        self._wait(wait_seconds, self._attrs)

    def on_release(self, pool: Pool, use_seconds: float) -> None:
        self._use(use_seconds, self._attrs)


class Instrumentation:
    """The metrics of one pool, reported until :meth:`close`."""

    def __init__(
        self, pool: Pool, instruments: _Instruments, entry: _Entry, listener: _Listener
    ) -> None:
        self._pool = pool
        self._instruments = instruments
        self._entry = entry
        self._listener: _Listener | None = listener

    @property
    def pool(self) -> Pool:
        """The instrumented pool."""
        return self._pool

    def close(self) -> None:
        """Stop reporting: remove the listener and stop observing the pool (idempotent).

        The histograms' points already recorded stay with the SDK, which keeps
        exporting them under cumulative temporality.
        """
        with _lock:
            listener, self._listener = self._listener, None
            if listener is None:
                return
            instruments = self._instruments
            instruments.entries = tuple(e for e in instruments.entries if e is not self._entry)
        self._pool.remove_listener(listener)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._listener is None else "reporting"
        return f"<unipool.otel.Instrumentation {self._pool.name!r} {state}>"


def instrument(pool: Pool, meter_provider: MeterProvider | None = None) -> Instrumentation:
    """Report ``pool``'s metrics to OpenTelemetry until the result is closed.

    Args:
        pool: the pool, open or not yet.
        meter_provider: where the metrics go; ``None``: the global meter provider.

    Returns:
        An :class:`Instrumentation`; its ``close()`` stops the reporting.

    Raises:
        TypeError: ``pool`` is not a :class:`unipool.Pool`.
        ValueError: ``pool``, or another live pool of the same name, is already
            instrumented on this meter provider (give pools distinct ``name=``).
    """
    if not isinstance(pool, Pool):
        raise TypeError(f"instrument() takes a unipool.Pool, not {type(pool).__name__}")
    provider = meter_provider if meter_provider is not None else get_meter_provider()
    with _lock:
        instruments = _shared.get(provider)
        if instruments is None:
            instruments = _shared[provider] = _Instruments(provider)
        for entry in instruments.entries:
            other = entry.pool()
            if other is pool:
                raise ValueError(f"pool {pool.name!r} is already instrumented")
            if other is not None and other.name == pool.name:
                raise ValueError(
                    f"another pool named {pool.name!r} is instrumented on this meter "
                    "provider: give each pool its own name= so their metrics stay apart"
                )
        entry = _Entry(pool)
        listener = _Listener(instruments, pool.name)
        pool.add_listener(listener)
        instruments.entries = (*instruments.entries, entry)
    return Instrumentation(pool, instruments, entry, listener)
