"""Primaries and standbys (DESIGN §14) on a real cluster: a primary and a streaming standby
made with ``pg_basebackup``, switched over with ``pg_ctl promote`` and ``pg_rewind``.

One cluster serves the whole module; each test leaves it as it found it (a primary and a
streaming standby, whichever server is which), and a test that finds it otherwise makes
the standby again first. Measured figures are printed (``pytest -rP`` shows them).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import unipool
from tests._cluster import Cluster, missing_tools
from tests._modes import _entered, in_thread, open_pool
from unipool._cluster import VERDICT_TTL
from unipool._dsn import parse_dsn

PORT = "select inet_server_port()"
WRITE = "insert into t (port) values (inet_server_port()) returning port"
#: Bounds of every scenario: reads made, and seconds waited for a change.
READS = 40
SETTLE = 5.0


def test_connect_cluster_checks_its_arguments_and_sets_the_session_attributes() -> None:
    dsn = "postgresql://u:secret@127.0.0.1:5432,127.0.0.1:5433/db"
    with pytest.raises(ValueError, match="target_session_attrs"):
        unipool.connect_cluster(dsn + "?target_session_attrs=any")
    with pytest.raises(ValueError, match="max_replica_lag"):
        unipool.connect_cluster(dsn, max_replica_lag=-1)
    with pytest.raises(TypeError, match="max_replica_lag"):
        unipool.connect_cluster(dsn, max_replica_lag=True)
    with pytest.raises(TypeError):
        unipool.connect_cluster(dsn, no_such_option=1)
    cluster = unipool.connect_cluster(dsn, name="c", max_size=3)
    primary, standby = parse_dsn(cluster.primary._dsn), parse_dsn(cluster.standby._dsn)
    assert primary.params["target_session_attrs"] == "read-write"
    assert standby.params["target_session_attrs"] == "prefer-standby"
    assert standby.params["load_balance_hosts"] == "random"
    assert primary.hosts == standby.hosts == (("127.0.0.1", 5432), ("127.0.0.1", 5433))
    assert (cluster.primary.name, cluster.standby.name) == ("c.primary", "c.standby")
    stats = cluster.stats()
    assert (stats.name, stats.primary.max_size, stats.standby.max_size) == ("c", 3, 3)
    assert "secret" not in repr(cluster)
    if importlib.util.find_spec("psqlpy") is not None:  # psqlpy has no prefer-standby
        other = unipool.connect_cluster(dsn, backend="psqlpy")
        assert parse_dsn(other.standby._dsn).params["target_session_attrs"] == "read-only"


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[Cluster]:
    why = missing_tools()
    if why is not None:
        pytest.skip(f"no PostgreSQL server binaries for a cluster: {why}")
    cluster = Cluster()
    cluster.start()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def cluster(shared_cluster: Cluster) -> Cluster:
    """The module's cluster, a primary and a streaming standby again if a test broke it."""
    if not shared_cluster.healthy():
        shared_cluster.rebuild()
    return shared_cluster


class ModeCluster:
    """A ClusterPool seen through one mode (blocking calls run in a worker thread)."""

    def __init__(self, cluster: unipool.ClusterPool, mode: str) -> None:
        self.cluster = cluster
        self.sync = mode == "sync"

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.sync:
            return await in_thread(getattr(self.cluster, name), *args, **kwargs)
        return await getattr(self.cluster, "a" + name)(*args, **kwargs)

    async def read_port(self) -> int:
        return int(await self.call("fetchval", PORT, readonly=True))

    def acquire(self, readonly: bool = False) -> Any:
        return _entered(self.cluster.acquire(readonly=readonly), self.sync)

    def transaction(self, readonly: bool = False) -> Any:
        return _entered(self.cluster.transaction(readonly=readonly), self.sync)


@asynccontextmanager
async def open_cluster(
    mode: str, dsn: str, backend: str, **options: Any
) -> AsyncIterator[ModeCluster]:
    """A ClusterPool open in ``mode``; closed (and checked for leftovers) on exit."""
    pool = unipool.connect_cluster(dsn, backend=backend, **options)
    if mode == "sync":
        await in_thread(pool.open)
        try:
            yield ModeCluster(pool, mode)
        finally:
            await in_thread(pool.close)
    else:
        async with pool:
            yield ModeCluster(pool, mode)
    stats = pool.stats()
    assert stats.primary.size == stats.standby.size == 0, f"left after close: {stats}"


async def until_port(mc: ModeCluster, port: int, timeout: float = SETTLE) -> float:
    """Read until a read lands on ``port``; the seconds it took (failed reads count)."""
    start = time.monotonic()
    with anyio.fail_after(timeout):
        while True:
            try:
                if await mc.read_port() == port:
                    return time.monotonic() - start
            except unipool.Error:
                pass
            await anyio.sleep(0.02)


def report(what: str, backend: str, mode: str, **figures: object) -> None:
    shown = ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"[cluster] {what} {backend}/{mode}: {shown}")


async def test_reads_go_to_the_standby_and_writes_to_the_primary(
    cluster: Cluster, mode: str, backend: str
) -> None:
    async with open_cluster(mode, cluster.dsn(), backend, max_size=2) as mc:
        primary, standby = cluster.primary.port, cluster.standby.port
        assert await mc.call("fetchval", WRITE) == primary
        assert await mc.call("fetchval", PORT) == primary
        assert await mc.read_port() == standby
        assert [r[0] for r in await mc.call("fetch", PORT, readonly=True)] == [standby]
        async with mc.acquire(readonly=True) as conn:
            assert await ModeConnCall(conn, mc.sync).fetchval(PORT) == standby
        async with mc.acquire() as conn:
            assert await ModeConnCall(conn, mc.sync).fetchval(PORT) == primary
        async with mc.transaction(readonly=True) as conn:
            call = ModeConnCall(conn, mc.sync)
            assert await call.fetchval(PORT) == standby
            assert await call.fetchval("show transaction_read_only") == "on"
        async with mc.transaction() as conn:
            assert await ModeConnCall(conn, mc.sync).fetchval(WRITE) == primary
        for readonly, port in ((True, standby), (False, primary)):
            conn = await mc.call("getconn", readonly=readonly)
            assert await ModeConnCall(conn, mc.sync).fetchval(PORT) == port
            await mc.call("release", conn)
        if not mc.sync:  # asyncpg's manual idiom
            conn = await mc.cluster.acquire(readonly=True)
            assert await conn.fetchval(PORT) == standby
            await mc.cluster.arelease(conn)
        stats = mc.cluster.stats()
        assert stats.reads == (5 if mc.sync else 6) and stats.reads_on_primary == 0
        assert stats.primary.in_use == stats.standby.in_use == 0
        assert stats.primary.name.endswith(".primary") and stats.standby.size >= 1


class ModeConnCall:
    """A borrowed connection's ``fetchval`` in either mode."""

    def __init__(self, conn: Any, sync: bool) -> None:
        self.conn, self.sync = conn, sync

    async def fetchval(self, sql: str) -> Any:
        if self.sync:
            return await in_thread(self.conn.fetchval, sql)
        return await self.conn.fetchval(sql)


async def test_reads_go_on_while_the_primary_is_down(
    cluster: Cluster, mode: str, backend: str
) -> None:
    async with open_cluster(mode, cluster.dsn(), backend, max_size=2) as mc:
        standby = cluster.standby.port
        assert await mc.read_port() == standby
        await in_thread(cluster.primary.stop)
        try:
            start, failed, elsewhere = time.monotonic(), 0, 0
            for _ in range(READS):
                try:
                    elsewhere += await mc.read_port() != standby
                except unipool.Error:
                    failed += 1
            took = time.monotonic() - start
        finally:
            await in_thread(cluster.primary.start)
        report("primary down", backend, mode, reads=READS, failed=failed, seconds=took)
        assert failed == 0 and elsewhere == 0
    await in_thread(cluster.wait_streaming)


async def test_no_standby_reads_go_to_the_primary_then_back(
    cluster: Cluster, mode: str, backend: str
) -> None:
    async with open_cluster(mode, cluster.dsn(), backend, max_size=2) as mc:
        primary, standby = cluster.primary.port, cluster.standby.port
        assert await mc.read_port() == standby
        await in_thread(cluster.standby.stop)
        try:
            start, errors, elsewhere = time.monotonic(), [], 0
            for _ in range(READS):
                try:
                    elsewhere += await mc.read_port() != primary
                except unipool.Error as exc:
                    errors.append(exc)
            took, failed = time.monotonic() - start, len(errors)
        finally:
            await in_thread(cluster.standby.start)
        back = await until_port(mc, standby)
        report(
            "no standby", backend, mode, reads=READS, failed=failed, seconds=took, back_after=back
        )
        assert not errors and elsewhere == 0, (errors, mc.cluster.stats())
        assert mc.cluster.stats().reads_on_primary >= READS
    await in_thread(cluster.wait_streaming)


async def test_a_read_that_loses_its_standby_connection_runs_again(
    cluster: Cluster, mode: str, backend: str
) -> None:
    async with open_cluster(mode, cluster.dsn(), backend, max_size=2, check=None) as mc:
        standby = cluster.standby.port
        assert await mc.read_port() == standby
        killed = await in_thread(
            cluster.query,
            cluster.standby,
            "select count(pg_terminate_backend(pid, 5000)) from pg_stat_activity"
            " where backend_type = 'client backend' and pid <> pg_backend_pid()",
        )
        assert killed == mc.cluster.standby.get_size() >= 1
        port = await mc.read_port()  # no error
        report("standby connections killed", backend, mode, killed=killed, failed=0,
               served_by="standby" if port == standby else "primary")  # fmt: skip
        assert port in (cluster.primary.port, standby)


async def test_a_lagging_standby_is_passed_over_until_it_catches_up(
    cluster: Cluster, mode: str, backend: str
) -> None:
    max_lag = 0.3
    options: dict[str, Any] = {"max_size": 2, "max_replica_lag": max_lag}
    async with open_cluster(mode, cluster.dsn(), backend, **options) as mc:
        primary, standby = cluster.primary.port, cluster.standby.port
        await mc.call("fetchval", WRITE)
        assert await mc.read_port() == standby
        await in_thread(cluster.query, cluster.standby, "select pg_wal_replay_pause()")
        try:
            await mc.call("fetchval", WRITE)  # received, not replayed: the lag grows
            paused = time.monotonic()
            left = await until_port(mc, primary)
            # the verdict is at most VERDICT_TTL old: past it, no read may reach the standby
            await anyio.sleep(max(0.0, paused + max_lag + 1.0 - time.monotonic()))
            ports = [await mc.read_port() for _ in range(10)]
            assert ports == [primary] * 10
            lagging = mc.cluster.stats().lagging
            assert lagging >= 1
        finally:
            await in_thread(cluster.query, cluster.standby, "select pg_wal_replay_resume()")
        back = await until_port(mc, standby)
        report("lagging standby", backend, mode, max_lag=max_lag, left_after=left,
               back_after=back, lagging=lagging)  # fmt: skip
        # one verdict's age; two where WAL that is not a transaction (a checkpoint, the
        # running-transactions record) arrives while the verdict is asked (docs/clusters.md)
        assert back <= 2 * VERDICT_TTL + 0.5
    await in_thread(cluster.wait_streaming)


async def test_switchover(cluster: Cluster, mode: str, backend: str) -> None:
    writers = 3
    async with open_cluster(mode, cluster.dsn(), backend, min_size=writers, max_size=writers) as mc:
        old, new = cluster.primary.port, cluster.standby.port
        log: list[tuple[float, int, object]] = []  # (when, writer, port or error)
        stop = anyio.Event()

        async def write(i: int) -> None:
            with anyio.fail_after(20):
                while not stop.is_set():
                    try:
                        log.append((time.monotonic(), i, await mc.call("fetchval", WRITE)))
                    except unipool.Error as exc:
                        log.append((time.monotonic(), i, exc))
                    await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            for i in range(writers):
                tg.start_soon(write, i)
            await anyio.sleep(0.1)
            await in_thread(cluster.promote)
            promoted = time.monotonic()
            await in_thread(cluster.standby.stop)  # the old primary
            stopped = time.monotonic()
            await anyio.sleep(0.4)
            stop.set()

        errors = [(t, i, e) for t, i, e in log if isinstance(e, BaseException)]
        per_writer = max(sum(1 for _, i, _ in errors if i == w) for w in range(writers))
        last_old = max(t for t, _, p in log if p == old)
        on_new = min(t for t, _, p in log if p == new and t > last_old)
        report("switchover", backend, mode, promote_to_stop=stopped - promoted,
               all_writes_on_new_after_promote=on_new - promoted,
               writes=len(log), failed=len(errors), failed_per_writer=per_writer)  # fmt: skip
        # at most one failed write per connection borrowed at the switch (all of them: the
        # writers keep the pool busy); a writer may draw two, the second on a connection
        # another writer had and that died while idle for less than the check threshold
        assert len(errors) <= writers, errors
        assert last_old <= stopped
        assert on_new - promoted <= 1.0

        # no standby up: reads are served by the new primary
        assert await mc.read_port() == new
        await in_thread(cluster.rejoin)
        back = await until_port(mc, old)
        report("old primary back as a standby", backend, mode, reads_back_after=back)
        # the promoted server's connections have left the standby pool
        with anyio.fail_after(SETTLE):
            while (await in_thread(_client_backends, cluster, new)) > mc.cluster.primary.get_size():
                await mc.read_port()
                await anyio.sleep(0.05)
        assert await mc.read_port() == old


def _client_backends(cluster: Cluster, port: int) -> int:
    server = cluster.primary if cluster.primary.port == port else cluster.standby
    sql = (
        "select count(*) from pg_stat_activity where backend_type = 'client backend'"
        " and pid <> pg_backend_pid()"
    )
    count: int = cluster.query(server, sql)  # type: ignore[assignment]
    return count


async def test_a_plain_pool_follows_the_primary(cluster: Cluster, mode: str, backend: str) -> None:
    """The failover of a plain pool (``target_session_attrs=read-write``, no ClusterPool) on
    the real cluster: the standby is promoted and the old primary comes back as a standby;
    writes fail at most once per connection, then every one lands on the new primary."""
    size = 3
    dsn = cluster.dsn(target_session_attrs="read-write")
    async with open_pool(mode, dsn, backend, min_size=size, max_size=size) as pool:
        old = cluster.primary.port
        assert await pool.fetchval(WRITE) == old
        await in_thread(cluster.promote)
        promoted = time.monotonic()
        new = cluster.primary.port
        await in_thread(cluster.rejoin)  # the old primary stops, then follows the new one
        failed = 0
        with anyio.fail_after(20):
            while True:
                try:
                    port = await pool.fetchval(WRITE)
                except unipool.Error:
                    failed += 1
                    continue
                if port == new:
                    break
        report("plain pool failover", backend, mode, failed_writes=failed,
               first_write_on_new_after_promote=time.monotonic() - promoted)  # fmt: skip
        assert failed <= size
        for _ in range(5):
            assert await pool.fetchval(WRITE) == new
