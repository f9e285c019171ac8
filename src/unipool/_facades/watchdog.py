"""Bounds for blocking calls that have no timeout of their own.

A blocking ping, reset or close on a connection whose network froze would
wait for TCP to give up (minutes). The watchdog, one thread per process,
cuts the connection's socket once the call overruns its time: the call then
fails as on a lost connection, in the caller's own thread, and the pool
drops the connection. Cutting is a ``shutdown()`` of the socket (safe while
another thread uses it), or the driver's ``terminate()`` when it has no
socket of its own to show.

The watchdog keeps time with the clock it is given (``time.monotonic`` for
the process's own); :meth:`Watchdog.due` is the whole decision, so a test can
drive it with a fake clock.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .reports import logger


def cut(driver: Any) -> None:
    """Break ``driver``'s connection under whoever is using it."""
    fileno = getattr(driver, "fileno", None)
    fd = fileno() if fileno is not None else None
    try:
        if fd is None:
            driver.terminate()
            return
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception as exc:  # already gone
        logger.debug("cutting a connection: %s", exc)


class Watchdog:
    """Cuts the connection of a guarded call still running at its deadline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._due: list[list[Any]] = []  # heap of [deadline, seq, driver, armed, name]
        self._seq = itertools.count()
        self._nudge = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def guard(self, driver: Any, timeout: float, pool: str = "") -> Iterator[None]:
        """Within the block, ``driver``'s connection (of the pool named ``pool``) is cut
        after ``timeout`` seconds."""
        entry = [self._clock() + timeout, next(self._seq), driver, True, pool]
        with self._lock:
            heapq.heappush(self._due, entry)
            first = self._due[0] is entry
            self._ensure_thread()
        if first:
            self._nudge.set()
        try:
            yield
        finally:
            entry[3] = False  # disarmed; dropped from the heap when it comes up

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid():  # none yet, or forked
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._watch, name="unipool-watchdog")
            self._thread.daemon = True
            self._thread.start()

    def due(self, now: float) -> tuple[list[tuple[Any, str]], float | None]:
        """The guarded calls overrunning at ``now`` (each driver with its pool's name), taken
        off the watch; and how long until the next one is due (None: nothing is guarded)."""
        victims: list[tuple[Any, str]] = []
        with self._lock:
            due = self._due
            while due and (not due[0][3] or due[0][0] <= now):
                entry = heapq.heappop(due)
                if entry[3]:
                    victims.append((entry[2], entry[4]))
            wait = due[0][0] - now if due else None
        return victims, wait

    def _watch(self) -> None:
        while True:
            victims, wait = self.due(self._clock())
            for driver, pool in victims:
                logger.warning("pool %r: a connection did not answer in time: cut", pool)
                cut(driver)
            if not victims:
                self._nudge.wait(wait)
                self._nudge.clear()


#: The process's watchdog.
WATCHDOG = Watchdog()
