"""unipool.sqlalchemy: SQLAlchemy engines that borrow from a unipool pool.

An ORM ``Session`` on psycopg (blocking and asyncio) and asyncpg (asyncio):
insert, select, rollback; each checkout one borrow, each check-in a give-back
(no connection closed); concurrent sessions bounded by ``max_size``, the others
queued in the pool. The other combinations raise ``UsageError``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from sqlalchemy import JSON, Integer, String, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    sessionmaker,
)

import unipool
from tests._modes import until
from unipool.sqlalchemy import create_async_engine, create_engine


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # SQLAlchemy's async engine runs on asyncio only


class Base(DeclarativeBase):
    pass


# One table name per test run, so that concurrent runs on one server do not meet.
class Item(Base):
    __tablename__ = f"unipool_sa_{uuid.uuid4().hex[:12]}"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    extra: Mapped[Any] = mapped_column(JSON, nullable=True)


@pytest.fixture
def table(dsn: str) -> Iterator[str]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"create table {Item.__tablename__} (id int primary key, name text, extra json)"
        )
        try:
            yield Item.__tablename__
        finally:
            conn.execute(f"drop table if exists {Item.__tablename__}")


def assert_no_connection_closed(pool: unipool.Pool) -> None:
    stats = pool.stats()
    assert stats.in_use == 0
    assert stats.connections_closed == 0
    assert stats.connects == stats.size <= stats.max_size  # every checkout reused them


# -- blocking psycopg -----------------------------------------------------------------


@pytest.fixture
def sync_pool(dsn: str) -> Iterator[unipool.Pool]:
    with unipool.connect(dsn, backend="psycopg", max_size=2) as pool:
        yield pool


def test_blocking_session(sync_pool: unipool.Pool, table: str) -> None:
    engine = create_engine(sync_pool)
    make_session = sessionmaker(engine)
    with make_session() as session, session.begin():
        session.add_all([Item(id=1, name="one", extra={"a": [1, 2]}), Item(id=2, name="two")])
    with make_session() as session:
        session.add(Item(id=3, name="three"))
        session.flush()
        assert session.scalar(select(Item.name).where(Item.id == 3)) == "three"
        assert sync_pool.stats().in_use == 1  # the session holds one borrowed connection
        session.rollback()
    with make_session() as session:
        items = session.scalars(select(Item).order_by(Item.id)).all()
        assert [(i.id, i.name, i.extra) for i in items] == [
            (1, "one", {"a": [1, 2]}),
            (2, "two", None),
        ]
    assert_no_connection_closed(sync_pool)
    # The connection comes back as the pool lent it: $n parameters, autocommit.
    assert sync_pool.fetchval("select count(*) from " + table + " where id > $1", 0) == 2
    with sync_pool.acquire() as conn:
        assert conn.raw.autocommit
    engine.dispose()


def test_blocking_sessions_bounded_by_max_size(sync_pool: unipool.Pool, table: str) -> None:
    engine = create_engine(sync_pool)
    holders = [Session(engine), Session(engine)]
    for session in holders:
        session.execute(text("select 1"))  # each now holds a borrowed connection
    assert sync_pool.stats().in_use == 2
    done = threading.Event()

    def third() -> None:
        with Session(engine) as session:
            session.add(Item(id=10, name="late"))
            session.commit()
        done.set()

    worker = threading.Thread(target=third)
    worker.start()
    try:
        anyio.run(until, lambda: sync_pool.stats().waiting == 1)  # queued in the pool
        assert sync_pool.stats().size == 2
        assert not done.is_set()
        holders.pop().close()  # gives its connection back: the waiter gets it
        assert done.wait(10)
    finally:
        for session in holders:
            session.close()
        worker.join(10)
    assert sync_pool.fetchval(f"select name from {table} where id = 10") == "late"
    assert sync_pool.stats().size <= 2
    assert_no_connection_closed(sync_pool)
    engine.dispose()


def test_blocking_checkout_times_out_in_the_pool(dsn: str) -> None:
    with unipool.connect(dsn, backend="psycopg", max_size=1, acquire_timeout=0.2) as pool:
        engine = create_engine(pool)
        with engine.connect() as held:
            held.execute(text("select 1"))
            with pytest.raises(unipool.PoolTimeout):
                engine.connect()
        assert pool.stats().acquire_timeouts == 1
        engine.dispose()


def test_blocking_isolation_level_does_not_stay(sync_pool: unipool.Pool) -> None:
    engine = create_engine(sync_pool, isolation_level="SERIALIZABLE")
    with engine.connect() as conn:
        level = conn.execute(text("show transaction isolation level")).scalar()
        assert level == "serializable"
    with sync_pool.acquire() as conn:
        assert conn.fetchval("show transaction isolation level") == "read committed"
        assert conn.raw.isolation_level is None
    engine.dispose()


def test_blocking_killed_connection_is_replaced(sync_pool: unipool.Pool, admin: Any) -> None:
    from sqlalchemy.exc import OperationalError

    engine = create_engine(sync_pool)
    with engine.connect() as conn:
        admin.kill(conn.execute(text("select pg_backend_pid()")).scalar())
        with pytest.raises(OperationalError):
            conn.execute(text("select 1"))
    assert sync_pool.stats().in_use == 0  # SQLAlchemy's invalidation gave it back
    with engine.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    assert sync_pool.stats().connections_lost + sync_pool.stats().recycled["broken"] >= 1
    engine.dispose()


# -- asyncio: psycopg and asyncpg -----------------------------------------------------


@pytest.fixture(params=["psycopg", "asyncpg"])
async def async_pool(request: pytest.FixtureRequest, dsn: str) -> AsyncIterator[unipool.Pool]:
    async with unipool.connect(dsn, backend=request.param, max_size=2) as pool:
        yield pool


async def test_async_session(async_pool: unipool.Pool, table: str) -> None:
    engine = create_async_engine(async_pool)
    make_session = async_sessionmaker(engine)
    async with make_session() as session, session.begin():
        session.add_all([Item(id=1, name="one", extra={"a": [1, 2]}), Item(id=2, name="two")])
    async with make_session() as session:
        session.add(Item(id=3, name="three"))
        await session.flush()
        assert await session.scalar(select(Item.name).where(Item.id == 3)) == "three"
        assert async_pool.stats().in_use == 1
        await session.rollback()
    async with make_session() as session:
        items = (await session.scalars(select(Item).order_by(Item.id))).all()
        assert [(i.id, i.name, i.extra) for i in items] == [
            (1, "one", {"a": [1, 2]}),
            (2, "two", None),
        ]
    assert_no_connection_closed(async_pool)
    # The connection comes back as the pool lent it: $n parameters, the pool's json codecs.
    assert await async_pool.afetchval(f"select count(*) from {table} where id > $1", 0) == 2
    assert await async_pool.afetchval("select $1::json", {"b": 2}) == {"b": 2}
    await engine.dispose()


async def test_async_sessions_bounded_by_max_size(async_pool: unipool.Pool, table: str) -> None:
    engine = create_async_engine(async_pool)
    holders = [AsyncSession(engine), AsyncSession(engine)]
    for session in holders:
        await session.execute(text("select 1"))
    assert async_pool.stats().in_use == 2
    done = anyio.Event()

    async def third() -> None:
        async with AsyncSession(engine) as session:
            session.add(Item(id=10, name="late"))
            await session.commit()
        done.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(third)
            await until(lambda: async_pool.stats().waiting == 1)
            assert async_pool.stats().size == 2
            assert not done.is_set()
            await holders.pop().close()
            with anyio.fail_after(10):
                await done.wait()
    finally:
        for session in holders:
            await session.close()
    assert await async_pool.afetchval(f"select name from {table} where id = 10") == "late"
    assert_no_connection_closed(async_pool)
    await engine.dispose()


async def test_asyncpg_refuses_codec_changes(dsn: str) -> None:
    async with unipool.connect(dsn, backend="asyncpg", max_size=1) as pool:
        with pytest.raises(unipool.UsageError, match="json_deserializer"):
            create_async_engine(pool, json_deserializer=lambda s: s)
        engine = create_async_engine(pool)
        async with engine.connect() as conn:

            def set_codec(sync_conn: Any) -> None:
                # SQLAlchemy's documented way to reach asyncpg: run_async on its adapter.
                sync_conn.connection.dbapi_connection.run_async(
                    lambda c: c.set_type_codec("int4", encoder=str, decoder=int)
                )

            with pytest.raises(unipool.UsageError, match="init hook"):
                await conn.run_sync(set_codec)
        await engine.dispose()


# -- combinations that cannot work ----------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncpg", "psqlpy"])
def test_blocking_needs_psycopg(dsn: str, backend: str) -> None:
    pool = unipool.connect(dsn, backend=backend)
    with pytest.raises(unipool.UsageError, match="use a psycopg pool"):
        create_engine(pool)


def test_async_refuses_psqlpy(dsn: str) -> None:
    pool = unipool.connect(dsn, backend="psqlpy")
    with pytest.raises(unipool.UsageError, match="no dialect"):
        create_async_engine(pool)


def test_mode_mismatch(sync_pool: unipool.Pool) -> None:
    sync_pool.fetchval("select 1")
    with pytest.raises(unipool.UsageError, match="blocking use"):
        create_async_engine(sync_pool)


async def test_blocking_engine_refuses_async_pool(async_pool: unipool.Pool) -> None:
    await async_pool.afetchval("select 1")
    with pytest.raises(unipool.UsageError):
        create_engine(async_pool)


def test_trio_pool_refused(dsn: str) -> None:
    import trio

    async def main() -> None:
        async with unipool.connect(dsn, backend="psycopg") as pool:
            with pytest.raises(unipool.UsageError, match="asyncio only"):
                create_async_engine(pool)

    trio.run(main)


def test_pooling_and_codec_arguments_refused(dsn: str) -> None:
    pool = unipool.connect(dsn, backend="psycopg")
    with pytest.raises(unipool.UsageError, match="pool_size"):
        create_engine(pool, pool_size=5)
    with pytest.raises(unipool.UsageError, match="connect_args"):
        create_engine(pool, connect_args={"application_name": "x"})
    with pytest.raises(unipool.UsageError, match="json_deserializer"):
        create_engine(pool, json_deserializer=lambda s: s)
    with pytest.raises(unipool.UsageError, match="use_native_hstore"):
        create_async_engine(pool, use_native_hstore=True)
