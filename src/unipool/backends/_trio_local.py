"""What the runners that serve trio share: a value per trio run, and a coroutine function
run with trio's KeyboardInterrupt protection (trio imported on first use)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import trio

T = TypeVar("T")

_vars: dict[str, trio.lowlevel.RunVar[Any]] = {}
_making = threading.Lock()


def run_local(name: str, make: Callable[[], T]) -> T:
    """This trio run's value named ``name``, made by ``make()`` on first use; call it in
    trio."""
    import trio

    var = _vars.get(name)
    if var is None:
        with _making:  # trio runs in other threads may get here at the same time
            var = _vars.setdefault(name, trio.lowlevel.RunVar(f"unipool_{name}"))
    try:
        value: T = var.get()
    except LookupError:
        value = make()
        var.set(value)
    return value


class KiProtected:
    """``fn`` with trio's KeyboardInterrupt protection (an interrupt then comes through the
    abort function of the wait it is in): call ``.fn``, which wraps ``fn`` on its first
    call and is the protected function itself from then on, with no frame of its own."""

    __slots__ = ("_unprotected", "fn")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._unprotected = fn
        self.fn: Callable[..., Any] = self._protect_and_call

    def _protect_and_call(self, *args: Any) -> Any:
        import trio

        self.fn = trio.lowlevel.enable_ki_protection(self._unprotected)
        return self.fn(*args)
