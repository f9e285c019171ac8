"""Half-open connections are bounded: TCP keepalives and tcp_user_timeout on every backend.

The options are read back from the connection's own socket: the test finds, among this
process's file descriptors, the TCP socket whose local port the server sees as the
session's client port, and asks the kernel (Linux) what is set on it. That works the same
for libpq's sockets, asyncpg's (on its loop thread or the test's loop) and psqlpy's (owned
by its Rust runtime).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import sys
from typing import Any

import pytest

from tests._modes import open_pool
from unipool._dsn import TcpOptions, parse_dsn, tcp_options

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads socket options through /proc (Linux)"
)


@dataclasses.dataclass(frozen=True)
class Seen:
    """What the kernel says is set on a socket."""

    keepalive: bool
    idle: int
    interval: int
    count: int
    user_timeout: int


def socket_options(local_port: int) -> Seen:
    """The TCP options of this process's socket bound to ``local_port`` on 127.0.0.1/::1."""
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))  # a second handle: closing it is harmless
        except OSError:
            continue
        with sock:
            try:
                if sock.type != socket.SOCK_STREAM or sock.family not in (
                    socket.AF_INET,
                    socket.AF_INET6,
                ):
                    continue
                if sock.getsockname()[1] != local_port:
                    continue
                tcp = socket.IPPROTO_TCP
                return Seen(
                    bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)),
                    sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
                    sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
                    sock.getsockopt(tcp, socket.TCP_KEEPCNT),
                    sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
                )
            except OSError:
                continue
    raise AssertionError(f"no socket of this process is bound to port {local_port}")


def with_params(dsn: str, **params: str) -> str:
    """``dsn`` as a URI, with ``params`` added to its query."""
    info = parse_dsn(dsn, env={})
    return dataclasses.replace(info, params={**info.params, **params}).to_uri()


CASES: list[tuple[dict[str, str], dict[str, Any], TcpOptions | None]] = [
    # unipool's defaults: on, 60 s idle, 10 s apart, 3 probes; user timeout = that cycle.
    ({}, {}, TcpOptions(True, 60, 10, 3, 90_000)),
    (
        {
            "keepalives_idle": "7",
            "keepalives_interval": "3",
            "keepalives_count": "4",
            "tcp_user_timeout": "1500",
        },
        {},
        TcpOptions(True, 7, 3, 4, 1500),
    ),
    # Given as connect_kwargs (libpq's names, on every backend); the user timeout follows.
    ({}, {"keepalives_idle": 20, "keepalives_count": 5}, TcpOptions(True, 20, 10, 5, 70_000)),
    # Off: no keepalive, no user timeout (the system's, 0).
    ({"keepalives": "0"}, {}, None),
]


@pytest.mark.parametrize(("params", "connect_kwargs", "expected"), CASES)
async def test_tcp_options_reach_the_socket(
    dsn: str,
    mode: str,
    backend: str,
    params: dict[str, str],
    connect_kwargs: dict[str, Any],
    expected: TcpOptions | None,
) -> None:
    if any(host.startswith("/") for host, _ in parse_dsn(dsn).hosts):
        pytest.skip("the test server is reached through a unix socket")
    url = with_params(dsn, **params)
    async with (
        open_pool(mode, url, backend, min_size=1, connect_kwargs=connect_kwargs) as pool,
        pool.acquire() as conn,
    ):
        seen = socket_options(await conn.fetchval("select inet_client_port()"))
    if expected is None:
        assert not seen.keepalive
        assert seen.user_timeout == 0
    else:
        assert seen == Seen(*dataclasses.astuple(expected))


def test_defaults_and_derived_user_timeout() -> None:
    assert tcp_options({}) == TcpOptions(True, 60, 10, 3, 90_000)
    assert tcp_options({"keepalives_idle": "30"}).user_timeout == 60_000
    assert tcp_options({"tcp_user_timeout": "0"}).user_timeout == 0
    assert tcp_options({"keepalives": "0"}) == TcpOptions(False, 60, 10, 3, 0)
    # A keepalive setting left to the system (0) leaves the user timeout to it too.
    assert tcp_options({"keepalives_idle": "0"}).user_timeout == 0
    # Later sources win: the DSN, then connect_kwargs.
    assert tcp_options({"keepalives_count": "5"}, {"keepalives_count": 2}).count == 2
    assert TcpOptions().as_libpq() == {
        "keepalives": "1",
        "keepalives_idle": "60",
        "keepalives_interval": "10",
        "keepalives_count": "3",
        "tcp_user_timeout": "90000",
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"keepalives_idle": "1m"}, "keepalives_idle must be a whole number >= 0, not '1m'"),
        ({"keepalives_count": "-1"}, "keepalives_count must be a whole number >= 0, not '-1'"),
        ({"tcp_user_timeout": "9" * 12}, "tcp_user_timeout must be below 2**31"),
        ({"keepalives": "yes please"}, "keepalives must be a whole number >= 0"),
    ],
)
def test_bad_values_are_named(params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        tcp_options(params)
