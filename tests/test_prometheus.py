"""Prometheus (DESIGN §12): the metric names as scraped, on every backend and mode."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import unipool
from tests._metrics import flaky_stats, wait_in_vain
from tests._modes import until
from tests.conftest import PoolFactory
from unipool.prometheus import register

FAMILIES = {
    "unipool_connections": "gauge",
    "unipool_connections_max": "gauge",
    "unipool_connections_min": "gauge",
    "unipool_pending_requests": "gauge",
    "unipool_acquire_timeouts": "counter",
    "unipool_connects": "counter",
    "unipool_connect_errors": "counter",
    "unipool_connections_lost": "counter",
    "unipool_connections_recycled": "counter",
    "unipool_acquire_wait_seconds": "histogram",
    "unipool_connection_use_seconds": "histogram",
    "unipool_connection_create_seconds": "histogram",
}


class Scrape:
    """The text exposition of a registry, parsed: sample name and labels to value."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.text = generate_latest(registry).decode()
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(self.text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[s.name, frozenset(s.labels.items())] = s.value

    def __call__(self, name: str, pool: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset({"pool": pool, **labels}.items())))

    def pools(self) -> set[str]:
        return {v for _, labels in self.samples for k, v in labels if k == "pool"}


async def test_pool_metrics_are_scraped(make_pool: PoolFactory, mode: str, backend: str) -> None:
    registry = CollectorRegistry()
    a, b = f"prom-{mode}-{backend}-a", f"prom-{mode}-{backend}-b"
    async with (
        make_pool(min_size=1, max_size=1, name=a) as pool,
        make_pool(min_size=0, max_size=4, name=b) as other,
    ):
        metrics = register(pool.pool, registry)
        register(other.pool, registry)
        with pytest.raises(ValueError, match="already registered"):
            register(pool.pool, registry)
        with pytest.raises(ValueError, match="another pool named"):
            register(unipool.connect(None, name=a), registry)
        async with pool.acquire() as conn, anyio.create_task_group() as tg:
            await conn.fetchval("select 1")
            tg.start_soon(wait_in_vain, pool)
            await until(lambda: pool.stats().waiting == 1)
            during = Scrape(registry)
        await pool.expire_connections()  # the idle connection is replaced
        await until(lambda: pool.stats().connects == 2 and pool.stats().idle == 1)
        after = Scrape(registry)

        metrics.close()
        metrics.close()  # closing twice is harmless
        await pool.fetchval("select 1")
        closed = Scrape(registry)

    assert after.types == FAMILIES
    assert after.pools() == {a, b}, "two pools share the registry"
    assert during("unipool_connections", a, state="used") == 1
    assert during("unipool_connections", a, state="idle") == 0
    assert during("unipool_pending_requests", a) == 1
    assert after("unipool_connections", a, state="idle") == 1
    assert after("unipool_connections", a, state="used") == 0
    assert after("unipool_pending_requests", a) == 0
    assert after("unipool_connections_max", a) == 1 and after("unipool_connections_max", b) == 4
    assert after("unipool_connections_min", a) == 1 and after("unipool_connections_min", b) == 0
    assert after("unipool_acquire_timeouts_total", a) == 1
    assert after("unipool_connects_total", a) == 2 and after("unipool_connects_total", b) == 0
    assert after("unipool_connect_errors_total", a) == 0
    assert after("unipool_connections_lost_total", a) == 0
    assert after("unipool_connections_recycled_total", a, cause="expired") == 1
    assert after("unipool_connections_recycled_total", a, cause="max_idle") == 0
    # registered once open: one connect (the replacement), one borrow
    for histogram in ("acquire_wait", "connection_use", "connection_create"):
        assert after(f"unipool_{histogram}_seconds_count", a) == 1
        assert after(f"unipool_{histogram}_seconds_bucket", a, le="+Inf") == 1
        assert after(f"unipool_{histogram}_seconds_count", b) == 0
    waited = after("unipool_acquire_wait_seconds_sum", a)
    assert waited is not None and 0 <= waited < 1

    assert closed.pools() == {b}, "a closed registration leaves the registry"
    assert closed("unipool_acquire_wait_seconds_count", a) is None


async def test_the_last_registration_leaves_the_registry_empty(make_pool: PoolFactory) -> None:
    registry = CollectorRegistry()
    async with make_pool(min_size=1, max_size=1, name="prom-alone") as pool:
        with register(pool.pool, registry) as metrics:
            await pool.fetchval("select 1")
            assert "prom-alone" in repr(metrics) and metrics.pool is pool.pool
            assert 'unipool_connections_max{pool="prom-alone"} 1.0' in Scrape(registry).text
        assert Scrape(registry).text == ""
        with register(pool.pool, registry):  # and it may come back
            assert Scrape(registry)("unipool_acquire_wait_seconds_count", "prom-alone") == 0


def test_register_takes_a_pool() -> None:
    with pytest.raises(TypeError, match=r"takes a unipool\.Pool"):
        register(object())  # type: ignore[arg-type]


def test_a_pool_whose_stats_fail_sits_out_the_scrape() -> None:
    """One pool's failing stats() leaves it out of this scrape, not the others."""
    registry = CollectorRegistry()
    racing, hopeless = (unipool.connect(None, name=n, max_size=3) for n in ("fine", "hopeless"))
    register(racing, registry)
    register(hopeless, registry)
    flaky_stats(hopeless, 1000)
    scrape = Scrape(registry)
    assert scrape("unipool_connections_max", "fine") == 3
    assert scrape("unipool_connections_max", "hopeless") is None
