"""What both faces share: what they hold, and the reads and settings that are the same
in both (made under the face's lock, where it has one)."""

from __future__ import annotations

from collections import deque
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from .._core import Notify, Overdue, PoolCore, Slot
from .._credentials import rotates
from .._listeners import Listeners
from .._options import PoolOptions
from .._stats import PoolStats
from ..backends.base import Backend, ConnectParams
from .reports import borrow_site, logger, report_overdue


class Face:
    """The core, what to connect with, the hooks and the listeners of one pool."""

    def __init__(
        self,
        core: PoolCore,
        backend: Backend,
        params: ConnectParams,
        options: PoolOptions,
        listeners: Listeners,
    ) -> None:
        self.core = core
        self.backend = backend
        self.params = params
        self.options = options
        self.listeners = listeners
        core.observed = bool(listeners)
        self._rotates = rotates(options)  # connect arguments worked out per connection
        self._leak_reports = options.leak_timeout is not None
        self._abandoned: deque[Slot] = deque()  # garbage-collected borrows, to reap

    def _locked(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def stats(self, closing: bool) -> PoolStats:
        """A snapshot of the core's gauges and counters."""
        with self._locked():
            return self.core.stats(closing)

    def observe(self) -> None:
        """The listeners changed: produce events only while there are some."""
        with self._locked():
            self.core.observed = bool(self.listeners)

    def set_params(self, params: ConnectParams, writable: bool) -> None:
        """Connect with ``params`` from now on."""
        with self._locked():
            self.params = params
            self.core.config.writable = writable

    def _lend(self, slot: Slot) -> None:
        """Note who borrows ``slot``, for a leak report (with ``leak_timeout``)."""
        slot.lent_by = borrow_site()

    def _report(self, action: Notify | Overdue) -> None:
        if action.__class__ is Notify:
            self.listeners.deliver(action)
        else:
            report_overdue(self.options.name, action)  # type: ignore[arg-type]


def terminate(driver: Any) -> None:
    """Drop ``driver``'s connection now; it is being dropped whatever this raises."""
    if driver is not None:
        try:
            driver.terminate()
        except Exception as exc:  # its event loop has ended, say: dropped all the same
            logger.debug("error terminating a connection: %s", exc)
