"""``python -m unipool demo``: every installed backend in every mode, as one table."""

from __future__ import annotations

import pytest

from unipool import backends
from unipool.__main__ import main


def test_demo_runs_every_backend_in_every_mode(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--dsn", dsn, "--seconds", "0.05", "--workers", "3"]) == 0
    out = capsys.readouterr().out
    header, rule, *rows = out.split("\n\n")[-1].splitlines()
    assert header.split()[:4] == ["backend", "mode", "workers", "ops"]
    assert set(rule) == {"-", " "}
    cases = [row.split()[:3] for row in rows]
    expected = [[b, m, "3"] for b in backends.installed() for m in ("sync", "asyncio", "trio")]
    assert cases == expected
    for row in rows:
        ops, size = row.split()[3], row.split()[7]
        assert int(ops) > 0
        assert 1 <= int(size.split("/")[0]) <= int(size.split("/")[1]) == 10


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "demo" in capsys.readouterr().err
