"""The liveness probe that keeps the GIL: it sees data, EOF and a closed descriptor."""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest

from unipool.backends._quiet import quiet_probe


def test_quiet_until_something_can_be_read() -> None:
    a, b = socket.socketpair()
    with a, b:
        quiet = quiet_probe(a.fileno())
        assert quiet()
        b.send(b"x")
        assert not quiet()  # data
        a.recv(1)
        assert quiet()
        b.close()
        assert not quiet()  # EOF


def test_a_closed_descriptor_is_not_quiet() -> None:
    a, b = socket.socketpair()
    quiet = quiet_probe(a.fileno())
    a.close()
    b.close()
    assert not quiet()


@pytest.mark.skipif(sys.platform == "win32", reason="select releases the GIL on Windows")
def test_it_keeps_the_gil() -> None:
    """A thread that spins on the GIL makes no progress during the probes: with a probe
    that let go of the GIL it would run at each of them."""
    a, b = socket.socketpair()
    with a, b:
        quiet = quiet_probe(a.fileno())
        ran = 0
        stop = False

        def spin() -> None:
            nonlocal ran
            while not stop:
                ran += 1

        old = sys.getswitchinterval()
        sys.setswitchinterval(1.0)  # the spinner gets the GIL only when it is let go
        thread = threading.Thread(target=spin)
        try:
            thread.start()
            time.sleep(0.05)  # the spinner runs; this thread waits for the GIL
            before = ran
            for _ in range(20):
                quiet()
            during = ran - before
        finally:
            stop = True
            sys.setswitchinterval(old)
            thread.join()
    assert during == 0
