"""OpenTelemetry (DESIGN §12): the semantic-convention pool metrics, on every backend and mode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import unipool
from tests._metrics import flaky_stats, wait_in_vain
from tests._modes import until
from tests.conftest import PoolFactory
from unipool.otel import POOL_NAME, STATE, instrument

UNITS = {
    "db.client.connection.count": "{connection}",
    "db.client.connection.idle.max": "{connection}",
    "db.client.connection.idle.min": "{connection}",
    "db.client.connection.max": "{connection}",
    "db.client.connection.pending_requests": "{request}",
    "db.client.connection.timeouts": "{timeout}",
    "db.client.connection.create_time": "s",
    "db.client.connection.wait_time": "s",
    "db.client.connection.use_time": "s",
    "unipool.connection.connects": "{connection}",
    "unipool.connection.connect_errors": "{error}",
    "unipool.connection.lost": "{connection}",
    "unipool.connection.recycled": "{connection}",
}
HISTOGRAMS = ("create_time", "wait_time", "use_time")


class Collected:
    """One collection by an in-memory reader, looked up by metric name and attributes."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.units: dict[str, str] = {}
        self.points: dict[str, list[Any]] = {}
        data = reader.get_metrics_data()
        for metric in self._metrics(data):
            self.units[metric.name] = metric.unit
            self.points.setdefault(metric.name, []).extend(metric.data.data_points)

    @staticmethod
    def _metrics(data: Any) -> Iterator[Any]:
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                assert scope.scope.name == "unipool"
                yield from scope.metrics

    def point(self, name: str, pool: str, **attrs: str) -> Any:
        """The one point of ``name`` for ``pool`` with ``attrs``; None if there is none."""
        wanted = {POOL_NAME: pool, **attrs}
        found = [p for p in self.points.get(name, ()) if dict(p.attributes) == wanted]
        assert len(found) <= 1, found
        return found[0] if found else None

    def value(self, name: str, pool: str, **attrs: str) -> Any:
        point = self.point(name, pool, **attrs)
        assert point is not None, f"no {name} for {pool} {attrs}"
        return point.value

    def count(self, name: str, pool: str) -> int:
        point = self.point(name, pool)
        return 0 if point is None else int(point.count)

    def pools(self) -> set[str]:
        return {p.attributes[POOL_NAME] for ps in self.points.values() for p in ps}


async def test_pool_metrics_reach_opentelemetry(
    make_pool: PoolFactory, mode: str, backend: str
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    name = f"otel-{mode}-{backend}"
    async with make_pool(min_size=1, max_size=1, name=name) as pool:
        metrics = instrument(pool.pool, meter_provider=provider)
        async with pool.acquire() as conn, anyio.create_task_group() as tg:
            await conn.fetchval("select 1")
            tg.start_soon(wait_in_vain, pool)
            await until(lambda: pool.stats().waiting == 1)
            during = Collected(reader)
        await pool.expire_connections()  # the idle connection is replaced
        await until(lambda: pool.stats().connects == 2 and pool.stats().idle == 1)
        after = Collected(reader)

        metrics.close()
        metrics.close()  # closing twice is harmless
        await pool.fetchval("select 1")
        closed = Collected(reader)

    assert after.units == UNITS
    assert during.value("db.client.connection.count", name, **{STATE: "used"}) == 1
    assert during.value("db.client.connection.count", name, **{STATE: "idle"}) == 0
    assert during.value("db.client.connection.pending_requests", name) == 1
    assert after.value("db.client.connection.count", name, **{STATE: "used"}) == 0
    assert after.value("db.client.connection.count", name, **{STATE: "idle"}) == 1
    assert after.value("db.client.connection.pending_requests", name) == 0
    for limit in ("idle.max", "idle.min", "max"):
        assert after.value(f"db.client.connection.{limit}", name) == 1
    assert after.value("db.client.connection.timeouts", name) == 1
    assert after.value("unipool.connection.connects", name) == 2
    assert after.value("unipool.connection.connect_errors", name) == 0
    assert after.value("unipool.connection.lost", name) == 0
    assert after.value("unipool.connection.recycled", name, cause="expired") == 1
    assert after.value("unipool.connection.recycled", name, cause="max_lifetime") == 0
    # instrumented once open: one connect (the replacement), one borrow
    assert [after.count(f"db.client.connection.{h}", name) for h in HISTOGRAMS] == [1, 1, 1]
    (wait,) = after.points["db.client.connection.wait_time"]
    assert 0 <= wait.sum < 1 and len(wait.explicit_bounds) > 5 and wait.explicit_bounds[0] < 0.001

    assert closed.point("db.client.connection.count", name, **{STATE: "idle"}) is None
    assert closed.point("unipool.connection.connects", name) is None
    assert closed.count("db.client.connection.wait_time", name) == 1, "the listener is gone"
    provider.shutdown()


async def test_pools_share_a_meter_provider(make_pool: PoolFactory, mode: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    async with (
        make_pool(min_size=1, max_size=2, name=f"a-{mode}") as a,
        make_pool(min_size=2, max_size=3, name=f"b-{mode}") as b,
    ):
        with instrument(a.pool, provider), instrument(b.pool, provider):
            with pytest.raises(ValueError, match="already instrumented"):
                instrument(a.pool, provider)
            twin = unipool.connect(None, name=f"a-{mode}")
            with pytest.raises(ValueError, match="another pool named"):
                instrument(twin, provider)
            await a.fetchval("select 1")
            await until(lambda: b.stats().idle == 2)
            seen = Collected(reader)
        gone = Collected(reader)
    assert seen.value("db.client.connection.max", f"a-{mode}") == 2
    assert seen.value("db.client.connection.max", f"b-{mode}") == 3
    assert seen.value("db.client.connection.count", f"b-{mode}", **{STATE: "idle"}) == 2
    assert seen.count("db.client.connection.use_time", f"a-{mode}") == 1
    assert seen.count("db.client.connection.use_time", f"b-{mode}") == 0
    assert gone.point("db.client.connection.max", f"a-{mode}") is None
    provider.shutdown()


def test_instrument_without_an_sdk() -> None:
    pool = unipool.connect(None, name="otel-no-sdk")
    with instrument(pool) as metrics:  # the global provider: no-op until one is set
        assert "reporting" in repr(metrics) and metrics.pool is pool
    assert "closed" in repr(metrics)
    with pytest.raises(TypeError, match=r"takes a unipool\.Pool"):
        instrument(object())  # type: ignore[arg-type]


def test_a_pool_whose_stats_fail_sits_out_the_collection() -> None:
    """One pool's failing stats() leaves it out of this collection, not the others."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    racing, hopeless = (unipool.connect(None, name=n, max_size=3) for n in ("fine", "hopeless"))
    instrument(racing, provider)
    instrument(hopeless, provider)
    flaky_stats(hopeless, 1000)
    collected = Collected(reader)
    assert collected.value("db.client.connection.max", "fine") == 3
    assert collected.point("db.client.connection.max", "hopeless") is None
    provider.shutdown()
