"""Drive psqlpy coroutines without asyncio: from a plain thread or from trio.

psqlpy's methods return pyo3 coroutines (``builtins.Coroutine``).  Each
``send(None)`` polls the Rust future and then either finishes
(``StopIteration``), yields ``None`` (woken while being polled: poll again) or
yields a future made by ``asyncio.get_running_loop().create_future()``.  When
the Rust future can make progress, a tokio thread calls
``loop.call_soon_threadsafe(release_waiter, future)``, and ``release_waiter``
calls ``future.done()`` and ``future.set_result(None)``.  That is all of asyncio
it uses (pyo3's ``coroutine/waker.rs``; it calls ``loop.is_closed()`` only if
``call_soon_threadsafe`` raised, which ours never does: an error there panics
the tokio thread, and psqlpy's connection is then closed).

A pump makes a stand-in loop per call, installs it as the thread's running
loop only for the duration of each ``send`` (``asyncio._set_running_loop``),
and sleeps until the stand-in's ``call_soon_threadsafe`` is called: on a queue
(`pump_sync`) or parked in trio (`pump_trio`).  The stand-in loop and future
implement only the calls above; any other attribute makes the pump raise
`RuntimeError` (and ``AttributeError`` where psqlpy asked), so a psqlpy
release that uses more of asyncio fails loudly instead of hanging.
Python code that psqlpy runs during a poll (it converts results there) sees
the stand-in as the running loop.

`pump_works` / `check_pump` accept only `TESTED_PSQLPY` releases that pass a
self-test; callers should fall back (say, to an asyncio loop in a thread)
otherwise.  Any coroutine that awaits only psqlpy awaitables can be pumped.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextvars import Context
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, cast

from .._trio_wakes import trio_wakes

if TYPE_CHECKING:
    import trio

__all__ = ["PUMP_RELIES_ON", "TESTED_PSQLPY", "check_pump", "pump_sync", "pump_trio", "pump_works"]

T = TypeVar("T")

#: psqlpy ``major.minor`` releases the pump was verified with (0.11.0, 0.11.12,
#: 0.12.1 and 0.13.1, all built on pyo3's own coroutine type).
TESTED_PSQLPY: Final = ("0.11", "0.12", "0.13")

#: What the pump relies on, beyond psqlpy's public API.
PUMP_RELIES_ON: Final = (
    "psqlpy awaitables are pyo3 coroutines whose waker is pyo3's AsyncioWaker",
    "the waker calls asyncio.get_running_loop() while polled, on the polling thread",
    "then loop.create_future(), and iterates the future to get the object to yield",
    "tokio threads call loop.call_soon_threadsafe(release_waiter, future) to wake it",
    "release_waiter calls future.done() and future.set_result(None)",
    "asyncio._set_running_loop() / asyncio._get_running_loop() (CPython private API)",
)

#: How long the self-test waits for psqlpy to wake the pump.
_SELF_TEST_TIMEOUT: Final = 5.0

_get_running_loop: Final = asyncio._get_running_loop
# It takes any object: the running loop is just stored in the thread state.
_set_running_loop: Final = cast("Callable[[object], None]", asyncio._set_running_loop)

#: ``call_soon_threadsafe``'s (callback, args, context).
_Call: TypeAlias = "tuple[Callable[..., object], tuple[Any, ...], Context | None]"
#: What a pump is woken with: a call to run, or None for "look at `problem`".
_Item: TypeAlias = "_Call | None"


def _psqlpy_version() -> str:
    try:
        return importlib.metadata.version("psqlpy")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


class _Pump:
    """What one pump call shares with its stand-in loop and futures."""

    __slots__ = ("problem",)

    def __init__(self) -> None:
        self.problem: str | None = None

    def post(self, item: _Item) -> None:
        """Hand ``item`` to the pumping side; called from any thread, must not raise."""
        raise NotImplementedError

    def unsupported(self, what: str) -> AttributeError:
        """Note that psqlpy used ``what``, wake the pump, return the error to raise."""
        message = (
            f"psqlpy {_psqlpy_version()} used {what}, which the psqlpy pump's stand-in "
            f"for asyncio does not implement: this release uses more of asyncio than the "
            f"ones the pump was verified with {TESTED_PSQLPY}; re-verify "
            f"unipool.backends.psqlpy._pump"
        )
        if self.problem is None:
            self.problem = message
            self.post(None)
        return AttributeError(message)

    def failed(self) -> RuntimeError:
        """The error to raise once a `problem` was noted."""
        return RuntimeError(self.problem)


class _Loop:
    """Stand-in for the running asyncio loop: just what psqlpy's waker calls."""

    __slots__ = ("_pump",)

    def __init__(self, pump: _Pump) -> None:
        self._pump = pump

    def create_future(self) -> _Future:
        return _Future(self)

    def call_soon_threadsafe(
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> None:
        # Never raises: psqlpy calls this from a tokio thread, where an error panics.
        try:
            self._pump.post((callback, args, context))
        except BaseException as exc:  # pragma: no cover - post() catches its own errors
            if self._pump.problem is None:
                self._pump.problem = f"psqlpy pump could not be woken: {exc!r}"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._pump.unsupported(f"loop.{name}")


class _Future:
    """Stand-in for ``asyncio.Future``: just what ``release_waiter`` and pyo3 use."""

    __slots__ = ("_done", "_loop")

    def __init__(self, loop: _Loop) -> None:
        self._loop = loop
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: object) -> None:
        self._done = True

    def __iter__(self) -> Iterator[_Future]:
        # asyncio futures yield themselves while pending; pyo3 yields what this yields.
        return iter(()) if self._done else iter((self,))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._loop._pump.unsupported(f"future.{name}")


def _run_call(call: _Call) -> None:
    callback, args, context = call
    if context is None:
        callback(*args)
    else:
        context.run(callback, *args)


def _check_yielded(pump: _Pump, loop: _Loop, yielded: object) -> _Future | None:
    if yielded is None or (type(yielded) is _Future and yielded._loop is loop):
        return yielded
    pump.problem = pump.problem or (
        f"psqlpy {_psqlpy_version()} yielded {yielded!r} to the psqlpy pump, which expected "
        f"one of its own futures: re-verify unipool.backends.psqlpy._pump"
    )
    return None


class _SyncPump(_Pump):
    """Drives a coroutine from the calling thread, sleeping on a queue."""

    __slots__ = ("_abort", "_queue", "waits")

    def __init__(self) -> None:
        super().__init__()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._abort: BaseException | None = None
        self.waits = 0

    def post(self, item: _Item) -> None:
        self._queue.put(item)

    def abort(self, error: BaseException) -> None:
        """Stop waiting (from any thread): `run` drops the coroutine and raises ``error``."""
        self._abort = error
        self._queue.put(None)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        loop = _Loop(self)
        get = self._queue.get
        try:
            while True:
                _set_running_loop(loop)
                try:
                    yielded = coro.send(None)
                except StopIteration as stop:
                    value: T = stop.value
                    return value
                finally:
                    _set_running_loop(None)
                future = _check_yielded(self, loop, yielded)
                if self.problem is not None:
                    raise self.failed()
                if future is None:
                    continue
                self.waits += 1
                while not future._done:
                    try:
                        item = get(timeout=timeout)
                    except queue.Empty:
                        raise RuntimeError(
                            f"psqlpy did not wake the pump within {timeout} s"
                        ) from None
                    if item is not None:
                        _run_call(item)
                    if self.problem is not None:
                        raise self.failed()
                    if self._abort is not None:
                        raise self._abort
        except BaseException as exc:
            coro.close()
            if self.problem is not None and not isinstance(exc, RuntimeError):
                raise self.failed() from exc
            raise


def pump_sync(coro: Coroutine[Any, Any, T], pump: _SyncPump | None = None) -> T:
    """Drive a psqlpy coroutine to completion from a plain thread (no event loop running in it).

    Blocks the calling thread (without spinning) until psqlpy's tokio threads
    are done.  On an exception in the waiting thread (``KeyboardInterrupt``),
    the coroutine is closed as in `pump_trio`.

    Raises:
        RuntimeError: an asyncio loop runs in this thread (the coroutine is
            closed), or psqlpy used asyncio beyond what the pump provides.
    """
    if _get_running_loop() is not None:
        coro.close()
        raise RuntimeError(
            "pump_sync() called with an asyncio loop running in this thread: await the "
            "psqlpy coroutine instead"
        )
    return (pump or _SyncPump()).run(coro)


class _TrioPump(_Pump):
    """Drives a coroutine from a trio task, parked while tokio works."""

    __slots__ = ("_error", "_future", "_parked", "_reschedule", "_task", "_wakes")

    def __init__(self) -> None:
        """Made in the trio task that is to run the pump."""
        import trio

        super().__init__()
        self._task: trio.lowlevel.Task = trio.lowlevel.current_task()
        self._wakes = trio_wakes()
        self._reschedule = trio.lowlevel.reschedule
        self._future: _Future | None = None
        self._parked = False
        self._error: BaseException | None = None

    def post(self, item: _Item) -> None:
        self._wakes.add(functools.partial(self._deliver, item))

    def abort(self, error: BaseException) -> None:
        """Stop waiting (from any thread): `run` drops the coroutine and raises ``error``.

        Once `run` has returned, it is ignored.
        """
        self._error = error
        self.post(None)

    def _deliver(self, item: _Item) -> None:
        # Runs in trio's scheduler, where an exception would crash the run.
        try:
            if item is not None and self._parked:
                _run_call(item)
        except BaseException as exc:
            if self.problem is None:
                self.problem = f"psqlpy pump: waking psqlpy's future failed: {exc!r}"
        future = self._future
        if self._parked and (
            self.problem is not None
            or self._error is not None
            or (future is not None and future._done)
        ):
            self._parked = False
            self._reschedule(self._task)

    def _abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        import trio

        self._parked = False
        return trio.lowlevel.Abort.SUCCEEDED

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        import trio

        loop = _Loop(self)
        parked = False
        try:
            while True:
                if self._error is not None:
                    raise self._error
                previous = _get_running_loop()
                _set_running_loop(loop)
                try:
                    yielded = coro.send(None)
                except StopIteration as stop:
                    result: T = stop.value
                    break
                finally:
                    _set_running_loop(previous)
                future = _check_yielded(self, loop, yielded)
                if self.problem is not None:
                    raise self.failed()
                if future is None or future._done:
                    continue
                self._future = future
                self._parked = parked = True
                await trio.lowlevel.wait_task_rescheduled(self._abort)
                if self.problem is not None:
                    raise self.failed()
                if self._error is not None:
                    raise self._error
        except BaseException as exc:
            self._parked = False
            self._future = None
            coro.close()
            if self.problem is not None and not isinstance(exc, RuntimeError):
                raise self.failed() from exc
            raise
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return result


async def pump_trio(coro: Coroutine[Any, Any, T], pump: _TrioPump | None = None) -> T:
    """Drive a psqlpy coroutine from a trio task, parking the task while tokio works.

    A checkpoint, as trio functions are: in an already cancelled scope the
    coroutine is closed without running.  On cancellation (or
    ``KeyboardInterrupt``) while parked, the pump stops driving: it closes the
    coroutine, which drops the Rust future, and lets ``Cancelled`` propagate.
    psqlpy sends no cancel request, so a statement already sent keeps running
    on the server to its end, and the connection's next statement waits behind
    it: the caller must cancel it (``pg_cancel_backend(pid)`` from another
    connection) or close the connection.  ``pump``, made in the calling task,
    lets another thread or task stop the wait (`_TrioPump.abort`).

    Raises:
        RuntimeError: psqlpy used asyncio beyond what the pump provides.
    """
    import trio

    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except BaseException:
        coro.close()
        raise
    return await (pump or _TrioPump()).run(coro)


def _self_test() -> str | None:
    """Pump a psqlpy connect to a local server that hangs up: the problem, or None."""
    try:
        import psqlpy
    except ImportError:
        return "psqlpy is not installed"
    from . import _fork

    _fork.ran()
    found: str | None = _NOT_EXERCISED
    for _ in range(3):
        try:
            found = _self_test_once(psqlpy)
        except OSError as exc:
            return f"the self-test could not listen on 127.0.0.1: {exc}"
        if found != _NOT_EXERCISED:
            break
    return found


_NOT_EXERCISED: Final = "psqlpy never made the pump wait: its wake-up path was not exercised"


def _self_test_once(psqlpy: Any) -> str | None:
    outcome: list[str | None] = []
    done_r, done_w = socket.socketpair()
    with socket.create_server(("127.0.0.1", 0)) as server, done_r, done_w:
        port = server.getsockname()[1]

        def pump_connect() -> None:  # in a new thread: no asyncio loop there
            pump = _SyncPump()
            coro = psqlpy.connect(host="127.0.0.1", port=port, username="u", db_name="d")
            try:
                conn = pump.run(coro, timeout=_SELF_TEST_TIMEOUT)
            except psqlpy.Error:
                outcome.append(None if pump.waits else _NOT_EXERCISED)
            except BaseException as exc:
                outcome.append(f"{type(exc).__name__}: {exc}")
            else:
                conn.close()
                outcome.append("psqlpy connected to a server that hung up")
            try:
                done_w.send(b"!")
            except OSError:
                pass

        thread = threading.Thread(target=pump_connect, name="unipool-pump-test", daemon=True)
        thread.start()
        ready, _, _ = select.select([server, done_r], [], [], _SELF_TEST_TIMEOUT)
        if server in ready:
            peer, _ = server.accept()
            with peer:
                peer.settimeout(_SELF_TEST_TIMEOUT)
                try:
                    peer.recv(4096)  # psqlpy's startup packet: it now waits for a reply
                except OSError:
                    pass
                time.sleep(0.01)  # not too soon, so that psqlpy's first poll can't see it
        thread.join(_SELF_TEST_TIMEOUT * 2)
    return outcome[0] if outcome else "the psqlpy pump self-test hung"


@functools.cache
def _problem() -> str | None:
    version = _psqlpy_version()
    found = _self_test()
    if found is not None:
        return f"the psqlpy pump cannot drive psqlpy {version}: {found}"
    if ".".join(version.split(".")[:2]) not in TESTED_PSQLPY:
        return (
            f"psqlpy {version} is not among the releases the psqlpy pump was verified with "
            f"{TESTED_PSQLPY} (its self-test passes): re-verify the pump's assumptions "
            f"(PUMP_RELIES_ON) and add it to TESTED_PSQLPY"
        )
    return None


def pump_works() -> bool:
    """Whether the pump works with the installed psqlpy (cached).

    True only for a `TESTED_PSQLPY` release on which a self-test needing no
    database passes: a connect, pumped from a new thread, to a local socket
    that hangs up on it must end with psqlpy's own error, after psqlpy woke
    the pump at least once.  Takes about 15 ms, once.
    """
    return _problem() is None


def check_pump() -> None:
    """Raise RuntimeError naming the problem if the pump cannot drive the installed psqlpy."""
    problem = _problem()
    if problem is not None:
        raise RuntimeError(problem)
