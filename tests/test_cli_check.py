"""``unipool check DSN``: findings, problems with what to do, exit status, JSON, no password."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import no_tls_server
from unipool import _check
from unipool.__main__ import main
from unipool._dsn import parse_dsn
from unipool.testing import TempServer

SECRET = "s3cret-Pa55"
WRONG = "wr0ng-Pa55"


@pytest.fixture(scope="module")
def guarded() -> Iterator[TempServer]:
    """A throwaway server that wants a password, and serves TLS where it can."""
    with TempServer(password=SECRET, ssl=no_tls_server() is None) as server:
        yield server


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


def problems(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.lstrip().startswith("PROBLEM")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_sound_server_is_all_ok(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, dsn)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("unipool check ") and "max_size 10" in lines[0]
    topics = [line.split(":")[0].split()[-1] for line in lines[2:-1]]
    assert topics == ["reachable", "tls", "login", "server", "role", "connections", "trip"]
    assert all(line.startswith("  ok ") for line in lines[2:-1])
    assert "role: primary" in out and "PostgreSQL 1" in out
    assert lines[-1] == "no problem found"

    code, out = run(capsys, dsn, "--json", "--backend", "asyncpg")
    data = json.loads(out)
    assert (code, data["status"], data["backend"], len(data["hosts"])) == (0, 0, "asyncpg", 1)
    facts = {f["topic"]: f for f in data["hosts"][0]["findings"]}
    assert facts["role"]["standby"] is False
    assert facts["connections"]["pools_fit"] >= 1
    assert 0 < facts["round trip"]["rtt_ms"] < 1000
    assert all(f["ok"] and f["advice"] is None for f in facts.values())


def test_nothing_listening_is_unreachable(dsn: str) -> None:
    """The command itself: one problem line, what to do, exit status 4."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run(
        [sys.executable, "-m", "unipool", "check", f"postgresql://app:{SECRET}@127.0.0.1:{port}/x"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == _check.UNREACHABLE == 4, proc.stderr
    assert proc.stderr == ""
    assert problems(proc.stdout) == ["PROBLEM reachable: no, connection refused"]
    assert "-> start the server" in proc.stdout
    assert SECRET not in proc.stdout and "app:***@" in proc.stdout


def test_every_host_of_a_multi_host_dsn(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    info = parse_dsn(dsn, env={})
    port = free_port()
    hosts = (*info.hosts, ("127.0.0.1", port))
    code, out = run(capsys, dataclasses.replace(info, hosts=hosts).to_uri())
    assert code == 4
    assert f"127.0.0.1:{port}\n  PROBLEM reachable" in out
    assert out.count("ok      round trip") == 1


def test_wrong_password(guarded: TempServer, capsys: pytest.CaptureFixture[str]) -> None:
    for as_json in (False, True):
        code, out = run(capsys, guarded.dsn(password=WRONG), *(["--json"] * as_json))
        assert code == _check.REFUSED == 3
        assert WRONG not in out and SECRET not in out
        assert "wrong password for postgres" in out
        assert "fix the password" in out
    assert json.loads(out)["hosts"][0]["findings"][-1]["sqlstate"] == "28P01"


def test_missing_database(guarded: TempServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, guarded.dsn(password=SECRET, dbname="nowhere"))
    assert code == 3
    assert problems(out) == ["PROBLEM login: missing database: nowhere does not exist"]
    assert "createdb nowhere" in out and SECRET not in out


def test_missing_role(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    info = parse_dsn(dsn, env={})
    code, out = run(capsys, dataclasses.replace(info, user="no_such_role_xyz").to_uri())
    assert code == 3
    assert problems(out) in (
        ["PROBLEM login: missing role: no_such_role_xyz does not exist"],
        ["PROBLEM login: wrong password for no_such_role_xyz"],  # password auth hides it
    )


def test_tls_negotiated_or_demanded(guarded: TempServer, dsn: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    if guarded.ssl:
        root = f"?sslmode=verify-full&sslrootcert={guarded.ssl_root_cert}"
        code, out = run(capsys, guarded.dsn(password=SECRET) + root)
        assert code == 0, out
        assert "ok      tls: negotiated (TLS" in out and "sslmode verify-full" in out
    info = parse_dsn(dsn, env={})
    if info.hosts and info.hosts[0][0].startswith("/"):
        return
    _, out = run(capsys, dsn)
    if "does not offer it" in out:
        code, out = run(capsys, dataclasses.replace(info, params={"sslmode": "require"}).to_uri())
        assert code == 3
        assert problems(out) == [
            "PROBLEM tls: the server does not offer TLS, and sslmode require demands it"
        ]


def test_max_size_beyond_max_connections(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, dsn, "--max-size", "100000")
    assert code == _check.ATTENTION == 1
    [problem] = problems(out)
    assert problem.startswith("PROBLEM connections:")
    assert problem.endswith("room for 0 pools of max_size 100000")
    assert "-> lower max_size to" in out


def test_invalid_dsn_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", f"postgresql://u:{SECRET}@127.0.0.1:99999/x"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("unipool check: invalid port") and SECRET not in err
    assert main(["check", "postgresql://127.0.0.1/x", "--max-size", "0"]) == 2
    assert "max_size" in capsys.readouterr().err


def _facts(**changes: object) -> dict[str, object]:
    facts: dict[str, object] = {
        "max_connections": 100, "su_reserved": 3, "reserved": 0, "superuser": False,
        "in_use": 11, "role_used": 6, "db_used": 11, "role_limit": -1, "db_limit": -1,
    }  # fmt: skip
    return {**facts, **changes}


def test_capacity_by_hand() -> None:
    """Free connections: max_connections less those in use (not this check's) and reserved;
    a role's or database's own limit counts too."""
    report = _check.HostReport("db", 5432)
    _check._capacity(report, _facts(), 10)
    [found] = report.findings
    assert (found.status, found.data["in_use"], found.data["free"]) == (0, 10, 87)
    assert found.text.endswith("87 free, room for 8 pools of max_size 10")
    _check._capacity(report, _facts(superuser=True), 10)
    assert report.findings[-1].data["free"] == 90
    _check._capacity(report, _facts(role_limit=15), 10)
    assert "role limit 15" in report.findings[-1].text
    assert report.findings[-1].data["free"] == 10 and report.findings[-1].status == 0
    _check._capacity(report, _facts(db_limit=5), 10)
    assert (report.findings[-1].data["free"], report.findings[-1].status) == (0, 1)
    assert report.findings[-1].advice is not None
    assert report.findings[-1].advice.startswith("lower max_size to 0 or less")


def test_standby_lag_by_hand() -> None:
    report = _check.HostReport("db", 5432)
    _check._role(report, False, None)
    _check._role(report, True, 0.0)
    _check._role(report, True, None)
    _check._role(report, True, _check.LAG_LIMIT + 32)
    texts = [(f.status, f.text) for f in report.findings]
    assert texts[:3] == [
        (0, "primary"),
        (0, "standby, replay lag 0.0 s"),
        (0, "standby, replay lag unknown (nothing replayed yet)"),
    ]
    assert texts[3] == (1, "standby 42.0 s behind its primary")
    assert report.status == 1


def test_dsn_from_the_environment(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    info = parse_dsn(dsn, env={})
    [(host, port)] = info.hosts
    env = {"PGHOST": host, "PGPORT": str(port or 5432), "PGUSER": info.user or "",
           "PGDATABASE": info.dbname or "", "PGPASSWORD": info.password or SECRET}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out = run(capsys)
    assert code == 0, out
    assert "(from the environment)" in out.splitlines()[0]
    assert env["PGPASSWORD"] not in out


def test_no_host_of_the_role_asked_for(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each host is checked whatever its role; then the DSN's choice among them."""
    info = parse_dsn(dsn, env={})
    for wanted, code in (("read-write", 0), ("standby", 3)):
        params = {**info.params, "target_session_attrs": wanted}
        got, out = run(capsys, dataclasses.replace(info, params=params).to_uri())
        assert got == code, out
        assert "ok      role: primary" in out
    assert out.splitlines()[-4:-1] == [
        "all hosts",
        "  PROBLEM target_session_attrs: standby, but no host that answered is a standby",
        "          -> point the DSN at a standby, or change target_session_attrs",
    ]
