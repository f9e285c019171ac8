"""A loopback TCP proxy that breaks the network on demand.

:class:`FaultProxy` listens on ``127.0.0.1:<free port>`` and relays every
connection to a target address. One background thread does all the socket
work (``selectors``), so the proxy serves blocking code, asyncio and trio
alike. Faults are commands carried out on that thread; each call returns once
the fault is in place:

- :meth:`FaultProxy.cut` resets every relayed connection, both sides
  (``SO_LINGER`` 0: the peers see ``ECONNRESET``, as after a crash).
- :meth:`FaultProxy.freeze` turns the proxy into a black hole: sockets stay
  open, no byte moves either way, new connections are accepted but not
  relayed (like a peer that vanished without closing anything).
- :meth:`FaultProxy.thaw` (or :meth:`FaultProxy.restore`) ends a freeze:
  buffered bytes flow again and connections accepted meanwhile are relayed.
- :meth:`FaultProxy.refuse` resets every connection and every new one at once (the
  server's port is closed); :meth:`FaultProxy.restore` ends it.
- ``accept_delay`` delays each new connection's relay by that many seconds
  (a slow network in front of the server's accept).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

_CHUNK = 65536
#: Stop reading a side while this much is waiting to be written to the other.
_HIGH_WATER = 1 << 20
#: SO_LINGER on, 0 s: close() sends RST.
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(eq=False)
class _Pair:
    """One relayed connection: the client's socket and the upstream one."""

    client: socket.socket
    upstream: socket.socket | None = None
    start_at: float = 0.0
    #: bytes waiting to be written, keyed by the socket they go to
    out: dict[socket.socket, bytearray] = field(default_factory=dict)
    #: sockets whose peer sent EOF (their writing half is shut on the other side)
    eof: set[socket.socket] = field(default_factory=set)

    def other(self, sock: socket.socket) -> socket.socket | None:
        return self.upstream if sock is self.client else self.client

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class FaultProxy:
    """A TCP relay from ``127.0.0.1:port`` to ``(host, port)``, with faults on demand.

    Use it as a context manager (or :meth:`start` / :meth:`close`); it leaves
    no thread and no socket behind.
    """

    def __init__(self, host: str, port: int, *, accept_delay: float = 0.0) -> None:
        self.target = (host, port)
        self.accept_delay = accept_delay
        self.accepted = 0  #: connections accepted since start
        self.refused = 0  #: connections reset because the target or refuse() refused them
        self.cuts = 0  #: connections reset by cut()
        self._pairs: set[_Pair] = set()
        self._frozen = False
        self._refusing = False
        self._listener: socket.socket | None = None
        self._selector: selectors.DefaultSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._failure: BaseException | None = None

    # -- public ------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def active(self) -> int:
        """Connections open right now (relayed, or accepted and not yet relayed)."""
        n: int = self._ask(lambda: len(self._pairs))
        return n

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def refusing(self) -> bool:
        return self._refusing

    def dsn(self, dsn: str) -> str:
        """``dsn`` (a ``postgresql://`` URI) pointed at this proxy instead."""
        scheme, rest = dsn.split("://", 1)
        auth, _, tail = rest.rpartition("@")
        _, slash, path = tail.partition("/")
        prefix = f"{auth}@" if auth else ""
        return f"{scheme}://{prefix}{self.host}:{self.port}{slash}{path}"

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop relaying, close every socket and end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake()
        thread.join(10)
        assert not thread.is_alive(), "the proxy thread did not stop"
        self._thread = None
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None

    def cut(self) -> int:
        """Reset every connection, both sides; returns how many were cut."""

        def cut() -> int:
            n = len(self._pairs)
            for pair in list(self._pairs):
                self._drop(pair, reset=True)
            self.cuts += n
            return n

        n: int = self._ask(cut)
        return n

    def freeze(self) -> None:
        """Stop moving bytes both ways; keep every socket open; relay no new connection."""

        def freeze() -> None:
            self._frozen = True
            self._update_interest()

        self._ask(freeze)

    def thaw(self) -> None:
        """Move bytes again, and relay the connections accepted while frozen."""

        def thaw() -> None:
            self._frozen = False
            self._update_interest()

        self._ask(thaw)

    def refuse(self) -> None:
        """Reset every connection, and every new one as soon as it is accepted."""

        def refuse() -> None:
            self._refusing = True

        self._ask(refuse)
        self.cut()

    def restore(self) -> None:
        """End a freeze or a refusal: the proxy relays again."""

        def restore() -> None:
            self._refusing = False

        self._ask(restore)
        self.thaw()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands: carried out on the proxy's thread -------------------------

    def _ask(self, fn: Callable[[], Any]) -> Any:
        if self._thread is None or not self._thread.is_alive() or self._stopping:
            raise RuntimeError("the proxy is not running") from self._failure
        if threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        result: list[Any] = []

        def run() -> None:
            result.append(fn())

        with self._lock:
            self._commands.append((run, done))
        self._wake()
        if not done.wait(10):
            raise RuntimeError("the proxy did not answer") from self._failure
        return result[0]

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    # -- the thread ----------------------------------------------------------

    def _serve(self) -> None:
        sel = self._selector
        assert sel is not None
        try:
            while not self._stopping:
                for key, events in sel.select(self._timeout()):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._run_commands()
                    else:
                        self._io(key.data, key.fileobj, events)  # type: ignore[arg-type]
                self._start_due()
        except BaseException as exc:  # pragma: no cover - reported by the next command
            self._failure = exc
            raise
        finally:
            for pair in list(self._pairs):
                self._drop(pair, reset=False)
            self._run_commands()  # nobody waits forever on a stopped proxy
            sel.close()
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def _timeout(self) -> float | None:
        if self._frozen:
            return None
        due = [p.start_at for p in self._pairs if p.upstream is None]
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _run_commands(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        with self._lock:
            commands, self._commands = self._commands, []
        for run, done in commands:
            try:
                run()
            finally:
                done.set()

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.accepted += 1
            if self._refusing:
                self.refused += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                client.close()
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, start_at=time.monotonic() + self.accept_delay)
            self._pairs.add(pair)
            self._update_interest(pair)

    def _start_due(self) -> None:
        if self._frozen:
            return
        now = time.monotonic()
        for pair in list(self._pairs):
            if pair.upstream is None and pair.start_at <= now:
                self._connect_upstream(pair)

    def _connect_upstream(self, pair: _Pair) -> None:
        assert self._selector is not None
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            self.refused += 1
            self._drop(pair, reset=True)
            return
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair.upstream = upstream
        pair.out = {pair.client: bytearray(), upstream: bytearray()}
        self._update_interest(pair)

    def _io(self, pair: _Pair, sock: socket.socket, events: int) -> None:
        if pair not in self._pairs:
            return
        if pair.upstream is None:
            # Accepted, not relayed: only a hang-up of the client matters here.
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    self._drop(pair, reset=False)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(pair, reset=False)
            return
        if events & selectors.EVENT_WRITE and not self._flush(pair, sock):
            return
        if events & selectors.EVENT_READ:
            self._pump(pair, sock)

    def _pump(self, pair: _Pair, sock: socket.socket) -> None:
        other = pair.other(sock)
        assert other is not None
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(pair, reset=True)
            return
        if not data:
            pair.eof.add(sock)
            if not pair.out[other]:
                with contextlib.suppress(OSError):
                    other.shutdown(socket.SHUT_WR)
            if len(pair.eof) == 2:
                self._drop(pair, reset=False)
                return
        else:
            pair.out[other] += data
            if not self._flush(pair, other):
                return
        self._update_interest(pair)

    def _flush(self, pair: _Pair, sock: socket.socket) -> bool:
        """Write what waits for ``sock``; False if the pair was dropped."""
        buf = pair.out[sock]
        if buf and not self._frozen:
            try:
                sent = sock.send(buf)
                del buf[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(pair, reset=True)
                return False
            if not buf and pair.other(sock) in pair.eof:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
        self._update_interest(pair)
        return True

    def _update_interest(self, only: _Pair | None = None) -> None:
        assert self._selector is not None
        for pair in [only] if only is not None else list(self._pairs):
            if pair not in self._pairs:
                continue
            if pair.upstream is None:
                # Not relayed yet: only a hang-up of the client is watched (not while frozen).
                self._modify(pair.client, 0 if self._frozen else selectors.EVENT_READ, pair)
                continue
            for sock in pair.sockets():
                other = pair.other(sock)
                assert other is not None
                mask = 0
                if not self._frozen:
                    if sock not in pair.eof and len(pair.out[other]) < _HIGH_WATER:
                        mask |= selectors.EVENT_READ
                    if pair.out[sock]:
                        mask |= selectors.EVENT_WRITE
                self._modify(sock, mask, pair)

    def _modify(self, sock: socket.socket, mask: int, pair: _Pair) -> None:
        assert self._selector is not None
        registered = sock in self._selector.get_map()
        if mask and registered:
            self._selector.modify(sock, mask, pair)
        elif mask:
            self._selector.register(sock, mask, pair)
        elif registered:
            self._selector.unregister(sock)

    def _drop(self, pair: _Pair, *, reset: bool) -> None:
        assert self._selector is not None
        self._pairs.discard(pair)
        for sock in pair.sockets():
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            if reset:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            sock.close()
