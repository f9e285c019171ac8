"""The fault proxy on its own, in front of a tiny echo server."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.proxy import FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
        except OSError:
            pass


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _connect(proxy: FaultProxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=timeout)


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = bytearray()
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return bytes(got)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_relays_both_ways_and_counts(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo) as proxy:
        with _connect(proxy) as a, _connect(proxy) as b:
            assert _roundtrip(a, b"hello") == b"hello"
            big = os.urandom(3 << 20)  # past the proxy's buffer limit: flow control works
            sender = threading.Thread(target=b.sendall, args=(big,))
            sender.start()
            got = bytearray()
            while len(got) < len(big):
                got += b.recv(1 << 20)
            sender.join()
            assert bytes(got) == big
            assert proxy.accepted == 2 and proxy.active == 2
        _wait(lambda: proxy.active == 0)
        assert proxy.accepted == 2


def test_cut_resets_every_connection(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo) as proxy:
        socks = [_connect(proxy) for _ in range(3)]
        for s in socks:
            assert _roundtrip(s, b"x") == b"x"
        assert proxy.cut() == 3
        assert proxy.active == 0 and proxy.cuts == 3
        for s in socks:
            with pytest.raises(ConnectionResetError):
                s.recv(1)
            s.close()
        with _connect(proxy) as s:  # the proxy itself still works
            assert _roundtrip(s, b"again") == b"again"


def test_freeze_blackholes_and_thaw_restores(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo) as proxy:
        old = _connect(proxy, timeout=0.3)
        assert _roundtrip(old, b"1") == b"1"
        proxy.freeze()
        assert proxy.frozen
        old.sendall(b"2")
        with pytest.raises(TimeoutError):
            old.recv(1)
        new = _connect(proxy, timeout=0.3)  # accepted: the connect itself succeeds
        new.sendall(b"3")
        with pytest.raises(TimeoutError):
            new.recv(1)
        assert proxy.active == 2
        proxy.thaw()
        old.settimeout(2)
        new.settimeout(2)
        assert old.recv(1) == b"2"
        assert new.recv(1) == b"3"
        assert _roundtrip(old, b"4") == b"4"
        old.close()
        new.close()


def test_freeze_notices_no_hangup_and_thaw_drops_closed_clients(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo) as proxy:
        proxy.freeze()
        s = _connect(proxy)
        _wait(lambda: proxy.accepted == 1)
        s.close()
        assert proxy.active == 1  # frozen: the hang-up is not seen
        proxy.restore()
        _wait(lambda: proxy.active == 0)


def test_accept_delay(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo, accept_delay=0.2) as proxy, _connect(proxy) as s:
        start = time.monotonic()
        assert _roundtrip(s, b"x") == b"x"
        assert time.monotonic() - start >= 0.19
        start = time.monotonic()
        assert _roundtrip(s, b"y") == b"y"
        assert time.monotonic() - start < 0.15  # the delay is paid once, at connect


def test_refused_target_closes_the_client() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with FaultProxy("127.0.0.1", port) as proxy:
            try:  # the reset may even beat the end of our own connect()
                with _connect(proxy) as s:
                    assert s.recv(1) == b""
            except ConnectionResetError:
                pass
            _wait(lambda: proxy.refused == 1 and proxy.active == 0)


def test_refuse_resets_old_and_new_connections(echo: tuple[str, int]) -> None:
    with FaultProxy(*echo) as proxy:
        old = _connect(proxy)
        assert _roundtrip(old, b"x") == b"x"
        proxy.refuse()
        assert proxy.refusing and proxy.active == 0
        with pytest.raises(ConnectionResetError):
            old.recv(1)
        old.close()
        for _ in range(3):
            try:  # the reset may beat the end of connect() itself
                with _connect(proxy) as s:
                    s.recv(1)
                pytest.fail("a refused connection stayed open")
            except ConnectionResetError:
                pass
        assert proxy.refused == 3
        proxy.restore()
        with _connect(proxy) as s:
            assert _roundtrip(s, b"back") == b"back"


def test_dsn_points_at_the_proxy() -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        port = proxy.port
        assert proxy.dsn("postgresql://u:p@db.example:5433/x?a=b") == (
            f"postgresql://u:p@127.0.0.1:{port}/x?a=b"
        )
        assert proxy.dsn("postgresql://db/x") == f"postgresql://127.0.0.1:{port}/x"


def test_leaves_no_thread_and_no_socket(echo: tuple[str, int]) -> None:
    threads, fds = threading.active_count(), _open_fds()
    for fault in ("cut", "freeze", "none"):
        with FaultProxy(*echo) as proxy:
            socks = [_connect(proxy) for _ in range(4)]
            for s in socks:
                assert _roundtrip(s, b"x") == b"x"
            if fault == "cut":
                proxy.cut()
            elif fault == "freeze":
                proxy.freeze()
        for s in socks:
            s.close()
    _wait(lambda: threading.active_count() == threads)  # the echo server's handlers end too
    assert _open_fds() == fds
    with pytest.raises(RuntimeError, match="not running"):
        proxy.cut()
