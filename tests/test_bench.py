"""``python -m unipool bench``: a tiny run of a few systems, table and JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from unipool._bench import bench, run_bench

ONLY = ["psycopg_pool.ConnectionPool", "limit psycopg", "unipool psycopg"]


def test_tiny_run_has_every_row_and_positive_rates(dsn: str) -> None:
    said: list[str] = []
    report = run_bench(dsn, seconds=0.05, rounds=1, warmup=0.05, only=ONLY, say=said.append)
    rows = {(r["system"], r["runtime"], r["workload"], r["workers"]) for r in report.summary()}
    expected = set()
    for workers in (10, 50):
        expected |= {
            ("psycopg_pool.ConnectionPool", "threads", "query", workers),
            ("limit psycopg", "threads", "query", workers),
            ("limit psycopg", "asyncio", "query", workers),
        }
        expected |= {("unipool psycopg", rt, "query", workers) for rt in ("threads", "asyncio")}
    expected |= {("psycopg_pool.ConnectionPool", "threads", "acquire", 1)}
    expected |= {("unipool psycopg", rt, "acquire", 1) for rt in ("threads", "asyncio")}
    if importlib.util.find_spec("trio") is not None:
        expected |= {("unipool psycopg", "trio", w, c) for w, c in
                     [("query", 10), ("query", 50), ("acquire", 1)]}  # fmt: skip
    assert rows == expected

    data = json.loads(report.to_json())
    assert data["meta"]["rounds"] == 1
    assert {(c["system"], c["runtime"], c["workload"], c["workers"]) for c in data["cells"]} == rows
    assert all(c["ops_per_s"] > 0 and c["p50_us"] > 0 for c in data["cells"])
    for r in data["summary"]:
        if r["kind"] == "limit":
            assert r["x_limit"] == 1.0
        elif r["workload"] == "query":
            assert r["x_limit"] > 0
        else:
            assert r["x_limit"] is None

    table = report.table().splitlines()
    assert table[0].split()[:4] == ["workload", "c", "system", "runtime"]
    assert len(table) == 2 + len(rows)


def test_command_prints_the_table_and_saves_json(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unipool._bench as mod

    monkeypatch.setitem(mod.QUICK, "seconds", 0.05)
    monkeypatch.setitem(mod.QUICK, "rounds", 1)
    monkeypatch.setitem(mod.QUICK, "warmup", 0.05)
    said: list[str] = []
    path = tmp_path / "bench.json"
    assert bench(dsn, True, str(path), only=["psycopg_pool.ConnectionPool"], say=said.append) == 0
    text = "\n".join(said)
    assert "psycopg_pool.ConnectionPool" in text and "ops/s" in text
    cells = json.loads(path.read_text())["cells"]
    assert [(c["workload"], c["workers"]) for c in cells] == [("query", 10), ("query", 50),
                                                              ("acquire", 1)]  # fmt: skip
    assert all(c["ops_per_s"] > 0 for c in cells)
