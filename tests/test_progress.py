"""Progress of the long commands: on stderr only when it is a terminal."""

from __future__ import annotations

import io

import pytest

from unipool._progress import Progress


def test_steps_with_count_and_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = iter([100.0, 100.0, 110.0, 130.0])
    monkeypatch.setattr("unipool._progress.time.monotonic", lambda: next(now))
    stream = io.StringIO()
    progress = Progress(stream=stream)
    progress.note("starting a server")
    progress.total = 3
    for step in ("a", "b", "c"):
        progress(step)
    assert stream.getvalue().splitlines() == [
        "starting a server",
        "[1/3] a (0:00 so far)",
        "[2/3] b (0:10 so far, about 0:20 left)",
        "[3/3] c (0:30 so far, about 0:15 left)",
    ]


def test_without_a_count() -> None:
    stream = io.StringIO()
    Progress(stream=stream)("one step")
    assert stream.getvalue() == "one step\n"


def test_silent_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(total=2)
    progress.note("a note")
    progress("a step")
    assert progress.done == 1
    assert capsys.readouterr() == ("", "")
