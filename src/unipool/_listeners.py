"""Listeners: the pool's events, produced once by the core, delivered to plain objects.

A listener has any of the methods ``on_connect(pool, seconds)``,
``on_connect_error(pool, error)``, ``on_acquire(pool, wait_seconds)``,
``on_release(pool, use_seconds)``, ``on_timeout(pool)`` and
``on_close_connection(pool, cause)``. They run inline, so they must be cheap;
an exception in one is logged (a WARNING with its traceback the first time
that method fails, DEBUG afterwards) and never reaches the pool or the borrower.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ._core import Notify

logger = logging.getLogger("unipool")

EVENTS = ("connect", "connect_error", "acquire", "release", "timeout", "close_connection")


class Listeners:
    """The listeners of one pool, indexed by event."""

    def __init__(self, pool: Any, listeners: Iterable[Any] = ()) -> None:
        self._pool = weakref.ref(pool)
        self._lock = threading.Lock()
        self._all: tuple[Any, ...] = ()
        self._by_event: dict[str, tuple[Callable[..., Any], ...]] = dict.fromkeys(EVENTS, ())
        self._warned: set[tuple[int, str]] = set()
        for listener in listeners:
            self.add(listener)

    def __bool__(self) -> bool:
        return bool(self._all)

    def add(self, listener: Any) -> None:
        """Deliver events to ``listener`` from now on.

        Raises:
            TypeError: it has no ``on_<event>`` method, or one of them is async.
        """
        methods = {e: getattr(listener, f"on_{e}", None) for e in EVENTS}
        found = {e: m for e, m in methods.items() if m is not None}
        if not found:
            names = ", ".join(f"on_{e}" for e in EVENTS)
            raise TypeError(f"a listener needs at least one of these methods: {names}")
        for event, method in found.items():
            if not callable(method):
                raise TypeError(f"listener's on_{event} is not callable")
            if inspect.iscoroutinefunction(method):
                raise TypeError(
                    f"listener's on_{event} is async: listener methods are plain functions "
                    "that run inline (hand slow work to a queue of your own)"
                )
        with self._lock:
            self._rebuild((*self._all, listener))

    def remove(self, listener: Any) -> None:
        """Stop delivering events to ``listener``.

        Raises:
            ValueError: it is not a listener of this pool.
        """
        with self._lock:
            if not any(x is listener for x in self._all):
                raise ValueError("not a listener of this pool")
            self._rebuild(tuple(x for x in self._all if x is not listener))

    def _rebuild(self, listeners: tuple[Any, ...]) -> None:
        self._by_event = {
            e: tuple(m for x in listeners if (m := getattr(x, f"on_{e}", None)) is not None)
            for e in EVENTS
        }
        self._all = listeners

    def deliver(self, notify: Notify) -> None:
        """Call every listener of ``notify.event``; a failure is logged, never raised."""
        pool = self._pool()
        for method in self._by_event[notify.event]:
            try:
                method(pool, *notify.args)
            except Exception:  # noqa: PERF203 - each listener is on its own
                self._failed(method, notify.event)

    def _failed(self, method: Callable[..., Any], event: str) -> None:
        owner = getattr(method, "__self__", method)
        key = (id(owner), event)
        if key in self._warned:
            logger.debug("listener %r failed in on_%s", owner, event, exc_info=True)
            return
        self._warned.add(key)
        logger.warning(
            "listener %r failed in on_%s (logged once; later failures at DEBUG)",
            owner,
            event,
            exc_info=True,
        )
