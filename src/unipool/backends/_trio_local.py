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
    """``fn``, run with trio's KeyboardInterrupt protection (an interrupt then comes
    through the abort function of the wait it is in); wrapped on first call."""

    __slots__ = ("_fn", "_protected")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._protected: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        protected = self._protected
        if protected is None:
            import trio

            protected = self._protected = trio.lowlevel.enable_ki_protection(self._fn)
        return protected(*args)
