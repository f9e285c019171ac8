"""TLS: libpq's ``sslmode`` and ``sslrootcert`` mean the same on every backend.

The server (a throwaway one with ``ssl=on`` and a certificate for localhost and
127.0.0.1 from an authority of its own) is the judge: ``pg_stat_ssl`` says whether the
session is encrypted.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import unipool
from tests._modes import in_thread, open_pool
from tests.conftest import no_tls_server
from unipool._dsn import parse_dsn
from unipool.testing import CertificateAuthority, TempServer

ENCRYPTED = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TempServer]:
    why = no_tls_server()
    if why is not None:
        pytest.skip(why)
    with TempServer(ssl=True) as server:
        yield server


def tls_dsn(server: TempServer, host: str = "127.0.0.1", **params: str) -> str:
    info = parse_dsn(server.dsn(dbname="test"), env={})
    return dataclasses.replace(info, hosts=((host, server.port),), params=params).to_uri()


@pytest.mark.parametrize(
    ("host", "sslmode", "verified"),
    [
        ("127.0.0.1", "require", False),
        ("127.0.0.1", "verify-ca", True),
        ("127.0.0.1", "verify-full", True),  # the certificate names the IP address
        ("localhost", "verify-full", True),
    ],
)
async def test_sessions_are_encrypted(
    tls_server: TempServer, mode: str, backend: str, host: str, sslmode: str, verified: bool
) -> None:
    params = {"sslmode": sslmode}
    if verified:
        params["sslrootcert"] = str(tls_server.ssl_root_cert)
    async with open_pool(mode, tls_dsn(tls_server, host, **params), backend) as pool:
        assert await pool.fetchval(ENCRYPTED) is True


async def test_sslmode_disable_is_plain(tls_server: TempServer, mode: str, backend: str) -> None:
    async with open_pool(mode, tls_dsn(tls_server, sslmode="disable"), backend) as pool:
        assert await pool.fetchval(ENCRYPTED) is False


@pytest.fixture(scope="module")
def other_authority(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make certificates")
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), "other CA").cert


async def fails_at_once(dsn: str, mode: str, backend: str) -> unipool.ConnectError:
    """A TLS failure is permanent: ``open`` and ``acquire`` raise it without waiting."""
    pool = unipool.connect(dsn, backend=backend, connect_timeout=2)
    try:
        start = time.monotonic()
        with pytest.raises(unipool.ConnectError) as info:
            if mode == "sync":
                await in_thread(pool.open, wait=True, timeout=10)
            else:
                await pool.aopen(wait=True, timeout=10)
        assert time.monotonic() - start < 3.0  # not the 10 s of the timeout
        assert info.value.sqlstate == "08001"
        assert info.value.permanent is True
        assert pool.get_size() == 0
    finally:
        if mode == "sync":
            await in_thread(pool.close)
        else:
            await pool.aclose()
    async with open_pool(
        mode, dsn, backend, wait=False, connect_timeout=2, acquire_timeout=10
    ) as lazy:
        start = time.monotonic()
        with pytest.raises(unipool.ConnectError) as acquired:  # not PoolTimeout
            async with lazy.acquire():
                pass
        assert time.monotonic() - start < 3.0
        assert acquired.value.permanent is True
    return info.value


@pytest.mark.parametrize("root", ["other", "system"])
async def test_verify_full_with_the_wrong_root_fails(
    tls_server: TempServer, other_authority: Path, mode: str, backend: str, root: str
) -> None:
    """Another authority, or the system's (``sslrootcert=system``), does not vouch for it."""
    rootcert = str(other_authority) if root == "other" else "system"
    dsn = tls_dsn(tls_server, sslmode="verify-full", sslrootcert=rootcert)
    error = await fails_at_once(dsn, mode, backend)
    assert "certificate" in str(error).lower(), str(error)


@pytest.fixture(scope="module")
def plain_server() -> Iterator[TempServer]:
    with TempServer() as server:
        yield server


@pytest.mark.parametrize("sslmode", ["require", "verify-ca", "verify-full"])
async def test_tls_required_from_a_plain_server_fails(
    plain_server: TempServer, other_authority: Path, mode: str, backend: str, sslmode: str
) -> None:
    """Never a silent fallback to plain text (psqlpy's own verify modes would do that)."""
    params = {"sslmode": sslmode}
    if sslmode != "require":
        params["sslrootcert"] = str(other_authority)
    await fails_at_once(tls_dsn(plain_server, **params), mode, backend)
