"""Administration: sizing, getters, stats, connect arguments, multi-host DSNs."""

from __future__ import annotations

from typing import Any

import pytest

import unipool
from tests._modes import until
from tests.conftest import PoolFactory


async def test_getters_and_stats(make_pool: PoolFactory) -> None:
    async with make_pool(min_size=2, max_size=4, name="admin-pool") as pool:
        p = pool.pool
        assert (p.get_min_size(), p.get_max_size()) == (2, 4)
        assert p.get_size() == 2 and p.get_idle_size() == 2
        assert not p.is_closing()
        await pool.fetchval("select 1")
        stats = pool.stats()
        assert stats.name == "admin-pool" and stats.acquires >= 1 and stats.connects == 2
        assert set(stats.recycled) == {
            "max_queries",
            "max_lifetime",
            "max_idle",
            "broken",
            "expired",
            "abandoned",
            "read_only",
            "hook",
        }
        assert "admin-pool" in repr(p)


async def test_resize(make_pool: PoolFactory) -> None:
    async with make_pool(min_size=3, max_size=3) as pool:
        assert pool.stats().size == 3
        pool.pool.resize(1)
        assert (pool.pool.get_min_size(), pool.pool.get_max_size()) == (1, 1)
        await until(lambda: pool.stats().size == 1)
        pool.pool.resize(2)
        async with pool.acquire(), pool.acquire():
            assert pool.stats().size == 2
        with pytest.raises(ValueError, match="max_size"):
            pool.pool.resize(0)


async def test_server_settings_are_the_session_defaults(make_pool: PoolFactory) -> None:
    settings = {"server_settings": {"application_name": "unipool-kw", "search_path": "pg_catalog"}}
    async with make_pool(max_size=1, connect_kwargs=settings) as pool:
        async with pool.acquire() as conn:
            assert await conn.fetchval("show application_name") == "unipool-kw"
            await conn.execute("set search_path to public")
        assert await pool.fetchval("show search_path") == "pg_catalog"


async def test_set_connect_args(make_pool: PoolFactory) -> None:
    async with make_pool(min_size=1, max_size=1) as pool:
        pool.pool.set_connect_args(server_settings={"application_name": "rotated"})
        await pool.expire_connections()
        assert await pool.fetchval("show application_name") == "rotated"


async def test_multi_host_dsn_skips_a_dead_host(make_pool: PoolFactory, dsn: str) -> None:
    info = unipool._dsn.parse_dsn(dsn)
    host, port = info.hosts[0]
    multi = (
        f"postgresql://{info.user}@127.0.0.1:1,{host}:{port or 5432}/{info.dbname}"
        "?target_session_attrs=read-write"
    )
    async with make_pool(dsn_=multi, max_size=1) as pool:
        assert await pool.fetchval("select 1") == 1


async def test_bad_options_are_refused(dsn: str, backend: str) -> None:
    with pytest.raises(TypeError, match="unknown option 'max_sise'"):
        unipool.connect(dsn, backend=backend, max_sise=3)
    with pytest.raises(ValueError, match="min_size"):
        unipool.connect(dsn, backend=backend, min_size=5, max_size=2)
    with pytest.raises(ValueError, match="acquire_timeout"):
        unipool.connect(dsn, backend=backend, acquire_timeout=-1)
    with pytest.raises(ValueError, match="unknown backend 'mysql'"):
        unipool.connect(dsn, backend="mysql")


def _factory(backend: str, mode: str, calls: list[str]) -> Any:
    """A ``connect`` hook for this backend and mode that records its calls."""
    if backend == "psycopg" and mode == "sync":
        import psycopg

        def connect(dsn: str, **kwargs: Any) -> Any:
            calls.append(dsn)
            return psycopg.Connection.connect(dsn, **kwargs)

        return connect
    if backend == "psycopg":
        import psycopg

        from unipool.backends._psycopg_trio import TrioConnection

        cls = TrioConnection if mode == "trio" else psycopg.AsyncConnection

        async def aconnect(dsn: str, **kwargs: Any) -> Any:
            calls.append(dsn)
            return await cls.connect(dsn, **kwargs)

        return aconnect
    if backend == "psqlpy":
        import psqlpy

        async def psqlpy_connect(dsn: str, **kwargs: Any) -> Any:
            calls.append(dsn)
            return await psqlpy.connect(dsn=dsn, **kwargs)

        return psqlpy_connect
    import asyncpg

    async def apg_connect(dsn: str, **kwargs: Any) -> Any:
        calls.append(dsn)
        return await asyncpg.connect(dsn, **kwargs)

    return apg_connect


async def test_connect_hook(make_pool: PoolFactory, backend: str, mode: str) -> None:
    calls: list[str] = []
    async with make_pool(min_size=2, max_size=2, connect=_factory(backend, mode, calls)) as pool:
        assert await pool.fetchval("select $1::int", 7) == 7
    assert len(calls) == 2


async def test_load_balance_hosts(make_pool: PoolFactory, dsn: str) -> None:
    info = unipool._dsn.parse_dsn(dsn)
    host, port = info.hosts[0]
    both = f"{host}:{port or 5432},{host}:{port or 5432}"
    balanced = f"postgresql://{info.user}@{both}/{info.dbname}?load_balance_hosts=random"
    async with make_pool(dsn_=balanced, min_size=2, max_size=2) as pool:
        assert await pool.fetchval("select 1") == 1
