"""``unipool check DSN``: what an operator needs to know about each server of a DSN.

Every host of the DSN is checked on its own, in order: the TCP (or unix-socket) connect,
whether the server offers TLS (PostgreSQL's SSLRequest, answered with one byte before any
login), then a login through a unipool pool of that host alone (``min_size=0``,
``max_size=1``), and, once logged in, the server's version, role (primary or standby),
replay lag, connection capacity against the pool's ``max_size``, and round-trip time.

Each finding is one line; a problem gets a second line saying what to do. The exit status
is the most serious problem found on any host (see :data:`EXIT_CODES`). Passwords never
appear: the DSN is shown through :func:`unipool._dsn.redact_dsn`, and the server's
messages pass through :func:`unipool._dsn.scrub`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import socket
import statistics
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._connect import connect
from ._dsn import ConnInfo, parse_dsn, redact_dsn, scrub
from ._errors import ConnectError, Error, PoolTimeout

__all__ = ["EXIT_CODES", "Finding", "HostReport", "check", "check_dsn", "render"]

OK, ATTENTION, USAGE, REFUSED, UNREACHABLE = 0, 1, 2, 3, 4
#: The exit status of ``unipool check``: the most serious problem on any host.
EXIT_CODES = {
    OK: "no problem",
    ATTENTION: "a host answers, but something needs attention (capacity, replication lag)",
    USAGE: "invalid command line or DSN",
    REFUSED: "a host refuses the login (password, role, database, TLS, server full)",
    UNREACHABLE: "a host cannot be reached",
}
#: Replay lag past which a standby is reported, in seconds.
LAG_LIMIT = 10.0
#: How many ``SELECT 1`` the round-trip time is the median of.
PINGS = 5
_DEFAULT_PORT = 5432
_DEFAULT_TIMEOUT = 5.0
_SOCKET_DIRS = ("/var/run/postgresql", "/tmp")  # libpq's default socket places
_TLS_DEMANDED = ("require", "verify-ca", "verify-full")
# Parameters that choose among hosts: each host is checked on its own, whatever its role.
_HOST_CHOICE = ("target_session_attrs", "load_balance_hosts")
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_TLS_ADVICE = "check sslmode, sslrootcert and the server's certificate"
# A failed login: (SQLSTATE prefix, words in the message, finding, what to do); first wins.
_LOGIN_FAILURES = (
    ("28P01", "", "wrong password for {user}",
     "fix the password (in the DSN, PGPASSWORD or ~/.pgpass)"),
    ("28000", "does not exist", "missing role: {user} does not exist",
     "create the role (CREATE ROLE ... LOGIN) or fix the user name"),
    ("28000", "pg_hba", "no pg_hba.conf entry for {user} to database {db} from here",
     "add a line for this client to pg_hba.conf, then reload the server"),
    ("28", "", "authentication failed for {user}: {message}",
     "check the role and pg_hba.conf"),
    ("3D000", "", "missing database: {db} does not exist",
     "create it (createdb {db}) or fix the database name"),
    ("53300", "", "the server is full: too many connections",
     "close idle connections, lower pool sizes, or raise max_connections"),
    ("57P03", "", "the server is starting up or shutting down",
     "wait, then check again; see the server log if it persists"),
)  # fmt: skip

_FACTS = """
select current_setting('server_version') as version,
       pg_is_in_recovery() as standby,
       coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false) as ssl,
       (select version from pg_stat_ssl where pid = pg_backend_pid()) as tls_version,
       current_setting('max_connections')::int as max_connections,
       current_setting('superuser_reserved_connections')::int as su_reserved,
       coalesce(current_setting('reserved_connections', true)::int, 0) as reserved,
       current_setting('is_superuser') = 'on' as superuser,
       (select count(*) from pg_stat_activity where backend_type = 'client backend')::int
           as in_use,
       (select count(*) from pg_stat_activity
         where backend_type = 'client backend' and usename = current_user)::int as role_used,
       (select count(*) from pg_stat_activity
         where backend_type = 'client backend' and datname = current_database())::int
           as db_used,
       (select rolconnlimit from pg_roles where rolname = current_user) as role_limit,
       (select datconnlimit from pg_database where datname = current_database()) as db_limit
"""
# 0 when everything received has been replayed; else the age of the last replayed commit.
_LAG = """
select case when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0::float8
            else extract(epoch from now() - pg_last_xact_replay_timestamp())::float8 end
"""


@dataclass
class Finding:
    """One line of the report; ``advice`` (what to do) is set on problems only."""

    topic: str
    text: str
    status: int = OK
    advice: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: topic, ok, status, text, advice, and the measured values."""
        out = {"topic": self.topic, "ok": self.status == OK, "status": self.status}
        return {**out, "text": self.text, "advice": self.advice, **self.data}


@dataclass
class HostReport:
    """What was found on one host of the DSN."""

    host: str
    port: int
    findings: list[Finding] = field(default_factory=list)
    #: Whether the server was reached over a unix-domain socket.
    unix: bool = False
    #: What the report is about when it is not one host (the DSN's hosts as a whole).
    name: str | None = None

    @property
    def status(self) -> int:
        """The most serious status among the findings (0: no problem)."""
        return max((f.status for f in self.findings), default=OK)

    @property
    def label(self) -> str:
        """``host:port`` (a socket directory or "default host" as the host)."""
        return self.name or f"{self.host or 'default host'}:{self.port}"

    def add(self, topic: str, text: str, **data: Any) -> Finding:
        """Record a finding without a problem."""
        finding = Finding(topic, text, data=data)
        self.findings.append(finding)
        return finding

    def problem(self, status: int, topic: str, text: str, advice: str, **data: Any) -> None:
        """Record a problem of the given exit status, with what to do about it."""
        self.findings.append(Finding(topic, text, status, advice, data))


def check_dsn(
    dsn: str | None, *, backend: str = "psycopg", max_size: int = 10
) -> tuple[ConnInfo, list[HostReport]]:
    """Check every host of ``dsn``; raises ``ValueError`` for a malformed DSN (no password)."""
    info = parse_dsn(dsn)
    connect(dsn, backend=backend, max_size=max_size)  # the backend, options and DSN; no I/O
    timeout = _timeout(info)
    hosts = info.hosts or (("", None),)
    reports = []
    with _quiet_pool_logs():
        for host, port in hosts:
            report = HostReport(host, port or _DEFAULT_PORT)
            _check_host(report, info, backend, max_size, timeout)
            reports.append(report)
    choice = _host_choice(info, reports)
    return info, [*reports, choice] if choice.findings else reports


def _host_choice(info: ConnInfo, reports: list[HostReport]) -> HostReport:
    """Whether a host that answered has the role ``target_session_attrs`` asks for."""
    choice = HostReport("", 0, name="all hosts")
    wanted = info.params.get("target_session_attrs", "any")
    roles = [f.data["standby"] for r in reports for f in r.findings if "standby" in f.data]
    standby = {"read-write": False, "primary": False, "standby": True}
    if roles and wanted in standby and standby[wanted] not in roles:
        want = "standby" if standby[wanted] else "primary"
        choice.problem(REFUSED, "target_session_attrs",
                       f"{wanted}, but no host that answered is a {want}",
                       f"point the DSN at a {want}, or change target_session_attrs",
                       wanted=wanted)  # fmt: skip
    return choice


def _timeout(info: ConnInfo) -> float:
    text = info.params.get("connect_timeout", "")
    try:
        value = float(text)
    except ValueError:
        return _DEFAULT_TIMEOUT
    return value if value > 0 else _DEFAULT_TIMEOUT


@contextlib.contextmanager
def _quiet_pool_logs() -> Iterator[None]:
    """The pool's own warnings about failed connects repeat what the check reports."""
    logger = logging.getLogger("unipool")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_host(
    report: HostReport, info: ConnInfo, backend: str, max_size: int, timeout: float
) -> None:
    if not _reach(report, timeout):
        return
    offered = _tls_offered(report.host, report.port, timeout)
    single = dataclasses.replace(
        info,
        hosts=((report.host, report.port),),
        params={k: v for k, v in info.params.items() if k not in _HOST_CHOICE},
    )
    pool = connect(
        single.to_uri(), backend=backend, min_size=0, max_size=1, name="unipool-check",
        connect_timeout=timeout, acquire_timeout=timeout + 1, reconnect_timeout=0,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        with pool, pool.acquire() as conn:
            login_ms = (time.perf_counter() - started) * 1e3
            facts = dict(conn.fetchrow(_FACTS) or {})
            lag = conn.fetchval(_LAG) if facts["standby"] else None
            rtts = []
            for _ in range(PINGS):
                t0 = time.perf_counter()
                conn.fetchval("select 1")
                rtts.append((time.perf_counter() - t0) * 1e3)
    except ConnectError as exc:
        _tls_finding(report, info, offered, None, None)
        _login_failed(report, info, exc)
        return
    except PoolTimeout:
        _tls_finding(report, info, offered, None, None)
        report.problem(REFUSED, "login", f"no login within {timeout + 1:g} s",
                       "see the server log; a server that accepts TCP but never answers may "
                       "be overloaded, or not PostgreSQL")  # fmt: skip
        return
    except Error as exc:
        report.problem(REFUSED, "server", f"query failed: {_scrubbed(str(exc), info)}",
                       "check the role's privileges on this server")  # fmt: skip
        return
    _tls_finding(report, info, offered, facts["ssl"], facts["tls_version"])
    who = f"as {info.user or 'the default user'} to database {_dbname(info)}"
    report.add("login", f"{who} in {login_ms:.1f} ms", login_ms=round(login_ms, 2))
    report.add("server", f"PostgreSQL {facts['version']}", version=facts["version"])
    _role(report, facts["standby"], lag)
    _capacity(report, facts, max_size)
    rtt = statistics.median(rtts)
    report.add("round trip", f"{rtt:.2f} ms (median of {PINGS} SELECT 1)", rtt_ms=round(rtt, 3))


def _dbname(info: ConnInfo) -> str:
    return info.dbname or info.user or "(default)"


def _reach(report: HostReport, timeout: float) -> bool:
    """Connect a bare socket: the time, or the problem."""
    host, port = report.host, report.port
    started = time.perf_counter()
    try:
        sock = _open_socket(host, port, timeout)
    except socket.gaierror as exc:
        report.problem(UNREACHABLE, "reachable", f"no, unknown host ({exc.strerror})",
                       "fix the host name, or the DNS", reachable=False)  # fmt: skip
        return False
    except TimeoutError:
        report.problem(UNREACHABLE, "reachable", f"no answer within {timeout:g} s",
                       "check the address, and any firewall that drops packets on the way",
                       reachable=False)  # fmt: skip
        return False
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        report.problem(UNREACHABLE, "reachable", f"no, {reason}",
                       "start the server, or fix the host and port (is it listening there? "
                       "see listen_addresses and port in postgresql.conf)",
                       reachable=False)  # fmt: skip
        return False
    sock.close()
    ms = (time.perf_counter() - started) * 1e3
    report.unix = sock.family == socket.AF_UNIX
    how = "unix-socket" if report.unix else "TCP"
    report.add("reachable", f"{how} connect in {ms:.1f} ms", reachable=True,
               connect_ms=round(ms, 3))  # fmt: skip
    return True


def _open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A connected socket to a TCP host, a socket directory, or libpq's default host."""
    if host.startswith("/"):
        return _unix(f"{host}/.s.PGSQL.{port}", timeout)
    if not host:
        for directory in _SOCKET_DIRS:
            with contextlib.suppress(OSError):
                return _unix(f"{directory}/.s.PGSQL.{port}", timeout)
        host = "localhost"
    return socket.create_connection((host, port), timeout=timeout)


def _unix(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def _tls_offered(host: str, port: int, timeout: float) -> bool | None:
    """Whether the server answers PostgreSQL's SSLRequest with "S"; None over a unix socket
    or when it does not answer at all."""
    try:
        with _open_socket(host, port, timeout) as sock:
            if sock.family == socket.AF_UNIX:
                return None
            sock.sendall(_SSL_REQUEST)
            answer = sock.recv(1)
    except OSError:
        return None
    return {b"S": True, b"N": False}.get(answer)


def _tls_finding(
    report: HostReport, info: ConnInfo, offered: bool | None, used: bool | None, version: Any
) -> None:
    mode = info.params.get("sslmode", "prefer")
    demanded = mode in _TLS_DEMANDED
    data = {"tls": used, "tls_offered": offered, "sslmode": mode}
    if report.unix:
        report.add("tls", f"not used over a unix socket (sslmode {mode})", **data)
    elif used:
        report.add("tls", f"negotiated ({version or 'TLS'}), sslmode {mode}", **data)
    elif offered is False and demanded:
        report.problem(REFUSED, "tls", f"the server does not offer TLS, and sslmode {mode} "
                       "demands it", "turn ssl on in the server (ssl = on, a certificate), "
                       "or lower sslmode", **data)  # fmt: skip
    elif offered is False:
        report.add("tls", f"not negotiated: the server does not offer it (sslmode {mode} "
                   "allows plain text)", **data)  # fmt: skip
    elif used is None and offered:
        report.add("tls", f"offered by the server, sslmode {mode}", **data)
    elif used is None:
        report.add("tls", f"unknown: no answer to the TLS request (sslmode {mode})", **data)
    elif offered is None:
        report.add("tls", f"not negotiated (sslmode {mode})", **data)
    elif mode == "disable":
        report.add("tls", "not negotiated: sslmode disable (the server offers it)", **data)
    else:
        report.add("tls", f"not negotiated although the server offers it (sslmode {mode})",
                   **data)  # fmt: skip


def _login_failed(report: HostReport, info: ConnInfo, exc: ConnectError) -> None:
    state, message = exc.sqlstate or "", _scrubbed(exc.message, info)
    lowered = message.lower()
    names = {"user": info.user or "the default user", "db": _dbname(info), "message": message}
    known = (
        (text, advice)
        for prefix, words, text, advice in _LOGIN_FAILURES
        if state.startswith(prefix) and words in lowered
    )
    found = next(known, None)
    if found is None and any(word in lowered for word in ("ssl", "tls", "certificate")):
        if any(f.topic == "tls" and f.status for f in report.findings):
            return  # already said, with what to do
        found = ("TLS failed: {message}", _TLS_ADVICE)
    text, advice = found or ("login failed: {message}", "see the server log for the reason")
    report.problem(REFUSED, "login", text.format(**names), advice.format(**names),
                   sqlstate=exc.sqlstate)  # fmt: skip


def _scrubbed(text: str, info: ConnInfo) -> str:
    secrets = [info.password or "", *(v for k, v in info.params.items() if "password" in k)]
    return " ".join(scrub(text, secrets).split())


def _role(report: HostReport, standby: bool, lag: float | None) -> None:
    if not standby:
        report.add("role", "primary", standby=False)
    elif lag is None:
        report.add("role", "standby, replay lag unknown (nothing replayed yet)", standby=True,
                   lag_s=None)  # fmt: skip
    elif lag > LAG_LIMIT:
        report.problem(ATTENTION, "role", f"standby {lag:.1f} s behind its primary",
                       "check replication (pg_stat_replication on the primary, the standby's "
                       "log); reads here see old data", standby=True, lag_s=lag)  # fmt: skip
    else:
        report.add("role", f"standby, replay lag {lag:.1f} s", standby=True, lag_s=lag)


def _capacity(report: HostReport, facts: dict[str, Any], max_size: int) -> None:
    """Connections free to this role against the pool's ``max_size`` (this check's own
    connection is not counted as in use)."""
    total = facts["max_connections"]
    reserved = facts["su_reserved"] + facts["reserved"]
    in_use = facts["in_use"] - 1
    free = total - in_use - (0 if facts["superuser"] else reserved)
    limits = []
    for what, limit, used in (("role", facts["role_limit"], facts["role_used"]),
                              ("database", facts["db_limit"], facts["db_used"])):  # fmt: skip
        if limit is not None and limit >= 0:
            limits.append(f"{what} limit {limit}")
            free = min(free, limit - (used - 1))
    free = max(free, 0)
    fit = free // max_size
    limit_text = f", {', '.join(limits)}" if limits else ""
    text = (f"{in_use} of max_connections {total} in use ({reserved} reserved for superusers"
            f"{limit_text}): {free} free, room for {fit} pool{'s' * (fit != 1)} of max_size "
            f"{max_size}")  # fmt: skip
    data = {"max_connections": total, "in_use": in_use, "reserved": reserved, "free": free,
            "max_size": max_size, "pools_fit": fit}  # fmt: skip
    if fit == 0:
        report.problem(ATTENTION, "connections", text,
                       f"lower max_size to {free} or less, raise max_connections (a restart), "
                       "or put PgBouncer in front", **data)  # fmt: skip
    else:
        report.add("connections", text, **data)


def render(shown: str, backend: str, max_size: int, reports: list[HostReport]) -> str:
    """The human report: a header (``shown``: the redacted DSN), one block per host, and a
    summary line."""
    lines = [f"unipool check {shown} (backend {backend}, max_size {max_size})"]
    for report in reports:
        lines.append(report.label)
        for f in report.findings:
            lines.append(f"  {'ok' if f.status == OK else 'PROBLEM':7} {f.topic}: {f.text}")
            if f.advice:
                lines.append(f"          -> {f.advice}")
    problems = sum(f.status != OK for r in reports for f in r.findings)
    status = max((r.status for r in reports), default=OK)
    if problems:
        plural = "s" * (problems != 1)
        lines.append(f"{problems} problem{plural}; exit status {status}: {EXIT_CODES[status]}")
    else:
        lines.append("no problem found")
    return "\n".join(lines)


def as_json(shown: str, backend: str, max_size: int, reports: list[HostReport]) -> dict[str, Any]:
    """The JSON report: the redacted DSN, the exit status, and every host's findings."""
    return {
        "dsn": shown,
        "backend": backend,
        "max_size": max_size,
        "status": max((r.status for r in reports), default=OK),
        "hosts": [
            {"host": r.name or r.host, "port": r.port, "status": r.status,
             "findings": [f.as_dict() for f in r.findings]}
            for r in reports
        ],
    }  # fmt: skip


def check(dsn: str | None, backend: str, max_size: int, as_json_output: bool = False) -> int:
    """The ``check`` command: print the report (or its JSON); the exit status."""
    try:
        info, reports = check_dsn(dsn, backend=backend, max_size=max_size)
    except (ValueError, TypeError) as exc:
        print(f"unipool check: {exc}", file=sys.stderr)
        return USAGE
    shown = redact_dsn(dsn) if dsn else f"{info} (from the environment)"
    if as_json_output:
        print(json.dumps(as_json(shown, backend, max_size, reports), indent=2))
    else:
        print(render(shown, backend, max_size, reports))
    return max((r.status for r in reports), default=OK)
