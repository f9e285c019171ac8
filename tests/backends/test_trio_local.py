"""What the runners serving trio share: a value per trio run, and KeyboardInterrupt protection."""

from __future__ import annotations

import trio

from unipool.backends._trio_local import KiProtected, run_local


def test_a_value_per_trio_run() -> None:
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    async def main() -> tuple[object, object]:
        return run_local("test_value", make), run_local("test_value", make)

    first, again = trio.run(main)
    later, _ = trio.run(main)
    assert first is again  # one per run
    assert later is not first and len(made) == 2  # and a new one in the next run


def test_ki_protection_from_the_first_call_on() -> None:
    async def probe() -> bool:
        return trio.lowlevel.currently_ki_protected()

    wrapped = KiProtected(probe)
    assert getattr(wrapped.fn, "__self__", None) is wrapped  # protects on its first call

    async def main() -> tuple[bool, list[bool]]:
        return await probe(), [await wrapped.fn() for _ in range(3)]

    unwrapped, calls = trio.run(main)
    assert unwrapped is False  # the probe tells: the same function, unprotected
    assert calls == [True, True, True]
    assert getattr(wrapped.fn, "__self__", None) is None  # then the function itself
