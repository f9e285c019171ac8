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
    async def protected() -> bool:
        return trio.lowlevel.currently_ki_protected()

    wrapped = KiProtected(protected)
    assert getattr(wrapped.fn, "__self__", None) is wrapped  # protects on its first call

    async def main() -> list[bool]:
        return [await wrapped.fn() for _ in range(3)]

    assert trio.run(main) == [True, True, True]
    assert getattr(wrapped.fn, "__self__", None) is None  # then the function itself


def test_unprotected_otherwise() -> None:
    async def plain() -> bool:
        return trio.lowlevel.currently_ki_protected()

    assert trio.run(plain) is False
