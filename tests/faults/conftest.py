"""Fixtures of the fault scenarios: throwaway servers, the proxy, a pool name."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import psycopg.conninfo
import pytest

from tests.faults.proxy import FaultProxy
from tests.faults.tools import app_name
from unipool.testing import TempServer


@pytest.fixture(scope="module")
def module_server() -> Iterator[TempServer]:
    """A throwaway server shared by one module's tests; each may stop or restart it."""
    with TempServer() as server:
        yield server


@pytest.fixture
def server(module_server: TempServer) -> Iterator[TempServer]:
    """The module's throwaway server, running, with no client left from an earlier test."""
    module_server.start()
    _terminate_clients(module_server.dsn())
    yield module_server
    module_server.start()


def _terminate_clients(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "select pg_terminate_backend(pid, 5000) from pg_stat_activity"
            " where backend_type = 'client backend' and pid <> pg_backend_pid()"
        )


@pytest.fixture
def name() -> str:
    """A fresh ``application_name`` for this test's pool (see ``tools.named``)."""
    return app_name()


@pytest.fixture
def proxy(dsn: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the shared server."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    host = str(info.get("host") or "127.0.0.1")
    if host.startswith("/"):
        pytest.skip("the test server is reached over a unix socket; the proxy speaks TCP")
    with FaultProxy(host, int(info.get("port") or 5432)) as p:
        yield p


def via(proxy: FaultProxy, dsn: str) -> str:
    """``dsn``, reaching the server through ``proxy``."""
    return psycopg.conninfo.make_conninfo(dsn, host=proxy.host, port=str(proxy.port))
