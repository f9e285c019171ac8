"""``python -m unipool bench``: statistics, targets and chart by hand; a tiny run on the server."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import unipool._bench as mod
from unipool.__main__ import main
from unipool._bench import TARGETS, Workload, bench, run_bench, systems
from unipool._bench._chart import write_chart
from unipool._bench._harness import Cell
from unipool._bench._opcodes import count_system, opcodes_table
from unipool._bench._report import _LIMIT_WORKLOAD, Report
from unipool._bench._runners import stats
from unipool._bench._targets import LIMIT, Ref, Target, evaluate, targets_table
from unipool._bench._workloads import MAX_SIZE, QUICK_WORKLOADS, runs

ONLY = ["psycopg_pool.ConnectionPool", "sqlalchemy", "limit psycopg", "unipool psycopg"]
TINY = (
    Workload("acquire", 1),
    Workload("query", 4),
    Workload("query", 8),
    Workload("query", 8, 5),
    Workload("held", 10),
    Workload("query", 10),
    Workload("fetchval", 4),
    Workload("txn", 4),
    Workload("fair", 16),
)


def _cell(system: str, runtime: str, workload: str = "query", workers: int = 50, rnd: int = 0,
          ops_per_s: float = 100.0, p50: float = 10.0, p99: float = 12.0,
          starved: int = 0, cpu: float | None = None) -> Cell:  # fmt: skip
    kind = system.split()[0] if system.split()[0] in ("limit", "unipool") else "native"
    size = 0 if kind == "limit" else 10
    cpu_us = ops_per_s / 10 if cpu is None else cpu
    return Cell(rnd, system, system.split()[-1], runtime, kind, workload, workers, size,
                int(ops_per_s), 1.0, ops_per_s, p50, p99, p99 * 2, starved, cpu_us)  # fmt: skip


def test_stats_by_hand() -> None:
    s = stats([[0.001, 0.002, 0.003], [0.004], [], [0.010, 0.005]])
    assert (s.ops, s.p50_us, s.p99_us, s.max_us) == pytest.approx((6, 3500, 10000, 10000))
    assert s.starved == 2  # one time only (it ended past the deadline), and none at all
    s = stats([[i / 1e6 for i in range(1, 1001)]])
    assert (s.p50_us, s.p99_us, s.max_us, s.starved) == pytest.approx((500.5, 991, 1000, 0))
    assert stats([[], []]) == type(s)(0, 0.0, 0.0, 0.0, 2)


def _hand_made() -> Report:
    cells = []
    for rnd, (mine, limit, p50, p99, starved) in enumerate(
        [(80, 100, 5, 12, 0), (90, 100, 7, 20, 1), (50, 40, 6, 14, 0)]
    ):
        cells += [
            _cell("unipool psycopg", "asyncio", rnd=rnd, ops_per_s=mine),
            _cell("unipool psycopg", "trio", rnd=rnd, ops_per_s=mine / 2),
            _cell("limit psycopg", "asyncio", rnd=rnd, ops_per_s=limit),
            _cell("unipool psycopg", "asyncio", "query", 1000, rnd=rnd, ops_per_s=mine * 0.95),
            _cell("unipool psycopg", "threads", "acquire", 1, rnd=rnd, p50=p50),
            _cell("unipool psycopg", "threads", "fair", 200, rnd=rnd, p99=p99, starved=starved),
        ]
    return Report(cells, {"rounds": 3, "seconds": 1.0, "date": "today"})


def test_targets_are_medians_of_per_round_values() -> None:
    report = _hand_made()
    asyncio, trio = Ref("unipool psycopg", "asyncio"), Ref("unipool psycopg", "trio")
    fair = Ref("unipool psycopg", "threads", "fair", 200)
    growth = Ref("unipool psycopg", "asyncio", "query", 1000)
    checks = (
        Target("limit", asyncio, "ops/s", ">=", 0.85, LIMIT),  # 0.8, 0.9, 1.25
        Target("cross-runtime limit", trio, "ops/s", ">=", 0.5, LIMIT),  # 0.4, 0.45, 0.625
        Target("two systems", trio, "ops/s", ">=", 0.5, asyncio),  # 0.5 each round
        Target("growth", growth, "ops/s", ">=", 0.9, asyncio),  # 0.95 each round
        Target("p50", Ref("unipool psycopg", "threads", "acquire", 1), "p50 us", "<=", 6.0),
        Target("fair", fair, "p99/p50", "<=", 1.5),  # 1.2, 2.0, 1.4
        Target("starved", fair, "starved", "<=", 0),  # worst round: 1
        Target("missing", Ref("unipool asyncpg", "asyncio"), "ops/s", ">=", 1.0, LIMIT),
        Target("cpu over", asyncio, "cpu us", "<=", 3.0, trio, "-"),  # 4, 4.5, 2.5
        Target("cpu over limit", asyncio, "cpu us", "<=", 0.0, LIMIT, "-"),  # -2, -1, 1
    )
    results = evaluate(report, checks)
    got = [(r["value"], r["met"]) for r in results]
    assert got == [
        (pytest.approx(0.9), True),
        (pytest.approx(0.45), False),
        (pytest.approx(0.5), True),
        (pytest.approx(0.95), True),
        (6, True),
        (pytest.approx(1.4), True),
        (1, False),
        (None, None),
        (pytest.approx(4.0), False),
        (pytest.approx(-1.0), True),
    ]
    assert [r["rounds"] for r in results] == [3] * 7 + [0] + [3] * 2
    assert results[1]["measure"] == "unipool psycopg trio query c=50 / limit"
    assert results[3]["measure"] == "unipool psycopg asyncio query c=1000 / query c=50"
    assert results[8]["measure"] == "cpu us: unipool psycopg asyncio query c=50 - trio"
    assert results[9]["measure"] == "cpu us: unipool psycopg asyncio query c=50 - limit"
    text = targets_table(results)
    assert "NOT MET" in text and "not measured" in text and text.endswith("6 of 10 met")
    assert len(evaluate(report)) == len(TARGETS)


def test_summary_ratios_and_fairness_columns() -> None:
    rows = {(r["system"], r["runtime"], r["workload"], r["workers"]): r
            for r in _hand_made().summary()}  # fmt: skip
    assert rows["unipool psycopg", "asyncio", "query", 50]["x_limit"] == pytest.approx(0.9)
    trio = rows["unipool psycopg", "trio", "query", 50]
    assert trio["limit"] == "limit psycopg asyncio" and trio["x_limit"] == pytest.approx(0.45)
    assert rows["unipool psycopg", "asyncio", "query", 1000]["x_c50"] == pytest.approx(0.95)
    fair = rows["unipool psycopg", "threads", "fair", 200]
    assert (fair["wait_ratio"], fair["starved"], fair["x_limit"]) == (pytest.approx(1.4), 1, None)
    assert rows["unipool psycopg", "threads", "acquire", 1]["p50_us"] == 6


def test_cpu_rows_are_medians_of_per_round_differences() -> None:
    cells = []
    for rnd, (a, b, c, d) in enumerate([(20, 22, 30, 40), (30, 30, 31, 50), (25, 24, 40, 45)]):
        cells += [
            _cell("limit psycopg", "asyncio", "query", 10, rnd, cpu=a),
            _cell("unipool psycopg", "asyncio", "held", 10, rnd, cpu=b),
            _cell("unipool psycopg", "asyncio", "query", 10, rnd, cpu=c),
            _cell("psycopg_pool.AsyncConnectionPool", "asyncio", "query", 10, rnd, cpu=d),
            _cell("unipool psycopg", "trio", "held", 10, rnd, cpu=b + 5),
            _cell("unipool psycopg", "trio", "query", 10, rnd, cpu=c + 5),
        ]
    rows = Report(cells).cpu_rows()
    assert [(r["backend"], r["runtime"]) for r in rows] == [("psycopg", "asyncio"),
                                                             ("psycopg", "trio")]  # fmt: skip
    mine, trio = rows
    assert (mine["dedicated_us"], mine["held_us"], mine["borrow_us"], mine["own_pool_us"]) == (
        25, 24, 31, 45)  # fmt: skip
    assert mine["layer_us"] == 0  # 2, 0, -1 (the difference of the medians would be -1)
    assert mine["borrow_cost_us"] == 8  # 8, 1, 16 (of the medians: 7)
    assert mine["dedicated"] == "limit psycopg asyncio"
    assert mine["own_pool"] == "psycopg_pool.AsyncConnectionPool"
    assert (trio["layer_us"], trio["own_pool"], trio["own_pool_us"]) == (5, None, None)
    assert trio["dedicated"] == "limit psycopg asyncio"  # the cross-runtime one
    table = Report(cells).cpu_table().splitlines()
    assert len(table) == 4 and table[3].rstrip().endswith("limit psycopg asyncio")


def test_quick_mode_runs_every_cell_a_target_reads() -> None:
    registry = {(s.name, s.runtime): s.kind for s in systems()}
    for t in TARGETS:
        for ref in (t.ref, t.over if isinstance(t.over, Ref) else t.ref):
            kind = registry[ref.system, ref.runtime]
            # a limit's cells have no pool size (0); it runs the workload of the pools' size
            w = Workload(ref.workload, ref.workers, MAX_SIZE if kind == "limit" else ref.size)
            assert w in QUICK_WORKLOADS, t
            assert runs(kind, ref.runtime, w), t
        if t.over == LIMIT:
            w = Workload(_LIMIT_WORKLOAD[t.ref.workload], t.ref.workers)
            assert w in QUICK_WORKLOADS and runs("limit", t.ref.runtime, w), t


def test_threads_and_limits_are_capped() -> None:
    assert not runs("unipool", "threads", Workload("query", 1000))
    assert runs("unipool", "trio", Workload("query", 1000))
    assert not runs("limit", "asyncio", Workload("query", 200))
    assert not runs("limit", "asyncio", Workload("acquire", 1))
    assert not runs("limit", "asyncio", Workload("query", 50, 20))


def test_chart_of_a_hand_made_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    write_chart(_hand_made(), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_run_has_every_row(dsn: str) -> None:
    report = run_bench(dsn, seconds=0.05, rounds=1, warmup=0.02, workloads=TINY, only=ONLY,
                       say=lambda s: None)  # fmt: skip
    rows = {(r["system"], r["runtime"], r["workload"], r["workers"], r["size"])
            for r in report.summary()}  # fmt: skip
    pools = [("psycopg_pool.ConnectionPool", "threads")]
    if importlib.util.find_spec("sqlalchemy"):
        pools.append(("sqlalchemy.QueuePool", "threads"))
    unipool = [("unipool psycopg", rt) for rt in ("threads", "asyncio", "trio")]
    limits = [("limit psycopg", "threads"), ("limit psycopg", "asyncio")]
    on_limits = [("txn", 4), ("query", 4), ("query", 8), ("query", 10)]
    expected = {(s, rt, w, c, 0) for s, rt in limits for w, c in on_limits}
    for s, rt in pools + unipool:
        expected |= {(s, rt, w.name, w.workers, w.size) for w in TINY
                     if w.name not in ("fetchval", "held")}  # fmt: skip
    expected |= {(s, rt, w, c, 10) for s, rt in unipool for w, c in [("fetchval", 4),
                                                                     ("held", 10)]}  # fmt: skip
    assert rows == expected

    for c in report.cells:
        assert c.ops > 0 and 0 < c.p50_us <= c.p99_us <= c.max_us and c.cpu_us > 0, c
        assert 0 <= c.starved <= c.workers
    for r in report.summary():
        has_limit = r["workload"] != "fair" and r["workers"] in (4, 8, 10)
        assert (r["x_limit"] is not None) == has_limit, r
        assert (r["wait_ratio"] is not None) == (r["workload"] == "fair")

    data = json.loads(report.to_json())
    assert set(data) == {"meta", "summary", "cpu", "targets", "opcodes", "cells"}
    assert data["opcodes"] == []  # counted only when asked
    assert len(data["targets"]) == len(TARGETS) and data["meta"]["wall_s"] > 0
    cpu = {r["runtime"]: r for r in data["cpu"]}
    assert list(cpu) == ["threads", "asyncio", "trio"]
    for r in cpu.values():
        assert r["dedicated_us"] > 0 and r["held_us"] > 0 and r["borrow_us"] > 0, r
        assert r["layer_us"] == pytest.approx(r["held_us"] - r["dedicated_us"])  # one round
        assert r["borrow_cost_us"] == pytest.approx(r["borrow_us"] - r["held_us"])
    assert cpu["threads"]["own_pool"] == "psycopg_pool.ConnectionPool"
    assert cpu["trio"]["dedicated"] == "limit psycopg asyncio"
    assert len(report.cpu_table().splitlines()) == 2 + 3
    layer = [t for t in data["targets"] if t["goal"].startswith("connection layer")]
    assert {t["measure"]: t["value"] for t in layer if t["value"] is not None} == {
        "cpu us: unipool psycopg threads held c=10 - limit": cpu["threads"]["layer_us"],
        "cpu us: unipool psycopg asyncio held c=10 - limit": cpu["asyncio"]["layer_us"],
    }
    assert len(report.table().splitlines()) == 2 + sum(r[2] != "fair" for r in rows)
    assert len(report.fairness_table().splitlines()) == 2 + sum(r[2] == "fair" for r in rows)


def test_command_prints_tables_targets_and_saves(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(mod.QUICK, "seconds", 0.05)
    monkeypatch.setitem(mod.QUICK, "rounds", 1)
    monkeypatch.setitem(mod.QUICK, "warmup", 0.02)
    monkeypatch.setattr(mod, "QUICK_WORKLOADS", (Workload("query", 4), Workload("fair", 12)))
    said: list[str] = []
    path, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    has_chart = importlib.util.find_spec("matplotlib") is not None
    code = bench(dsn, True, str(path), only=["unipool psycopg"], say=said.append,
                 chart_path=str(chart) if has_chart else None)  # fmt: skip
    assert code == 0
    text = "\n".join(said)
    assert "ops/s" in text and "starved" in text and "targets" in text
    assert "p99/p50 of unipool psycopg threads fair c=200" in text  # not run: "not measured"
    cells = json.loads(path.read_text())["cells"]
    assert (
        sorted((c["workload"], c["workers"]) for c in cells)
        == [("fair", 12)] * 3 + [("query", 4)] * 3
    )
    assert chart.exists() == has_chart


def test_json_without_a_path_replaces_the_tables(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(mod.QUICK, "seconds", 0.05)
    monkeypatch.setitem(mod.QUICK, "rounds", 1)
    monkeypatch.setitem(mod.QUICK, "warmup", 0.02)
    monkeypatch.setattr(mod, "QUICK_WORKLOADS", (Workload("query", 4),))
    argv = ["bench", "--dsn", dsn, "--quick", "--json", "--only", "unipool psycopg", "--opcodes"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no progress: stderr is not a terminal
    data = json.loads(out)
    assert set(data) == {"meta", "summary", "cpu", "targets", "opcodes", "cells"}
    assert sorted(c["runtime"] for c in data["cells"]) == ["asyncio", "threads", "trio"]
    assert [(r["backend"], r["runtime"]) for r in data["opcodes"]] == [
        ("psycopg", "threads"),
        ("psycopg", "asyncio"),
        ("psycopg", "trio"),
    ]


def test_opcodes_are_counted_and_unipools_own_do_not_move(dsn: str) -> None:
    (system,) = [s for s in systems() if s.name == "unipool psycopg" and s.runtime == "threads"]
    first, second = count_system(system, dsn), count_system(system, dsn)
    for r in (first, second):
        assert 0 < r["held_own"] < r["held"] and 0 < r["borrow_own"] < r["borrow"], r
        assert r["borrow_cost"] == pytest.approx(r["borrow"] - r["held"])
        assert r["borrow_cost_own"] == pytest.approx(r["borrow_own"] - r["held_own"])
        assert r["borrow_cost_own"] > 100  # a borrow is more than a few calls
    # counted in the workers' threads only: the same code, the same count
    assert second["borrow_own"] == pytest.approx(first["borrow_own"], rel=0.02)
    assert second["held_own"] == pytest.approx(first["held_own"], rel=0.02)
    table = opcodes_table([first]).splitlines()
    assert len(table) == 3 and table[2].split()[:2] == ["psycopg", "threads"]


def test_chart_without_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod, "have_matplotlib", lambda: False)
    said: list[str] = []
    assert bench("postgresql://nowhere", True, None, chart_path="x.png", say=said.append) == 2
    assert "pip install matplotlib" in said[0]
