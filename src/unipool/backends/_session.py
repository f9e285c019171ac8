"""How a session starts and ends, alike whatever the driver: the settings it starts
with, what a failed connection attempt means, and which errors mean it is lost."""

from __future__ import annotations

import getpass
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._dsn import ConnInfo, parse_dsn, scrub
from .._errors import ConnectError
from .base import ConnectParams

_log = logging.getLogger("unipool")

#: The port every driver uses when neither the DSN, PGPORT nor ``connect_kwargs`` gives one.
_DEFAULT_PORT = "5432"

#: Besides class 08 (connection exception): the server shut the session down.
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})

#: The SQLSTATE of a refused connection attempt, read from the server's message, which is
#: all libpq and psqlpy give.
_REFUSALS = (  # the first match wins
    ("too many clients", "53300"),
    ("too many connections", "53300"),  # ... for role "x" / for database "x": a limit
    ("password authentication failed", "28P01"),
    ('role "', "28000"),  # role "x" does not exist / is not permitted to log in
    ("no pg_hba.conf entry", "28000"),
    ("authentication failed", "28000"),
    ("not currently accepting connections", "55000"),
    ('database "', "3D000"),  # database "x" does not exist
    ("starting up", "57P03"),
    ("shutting down", "57P03"),
    ("in recovery mode", "57P03"),
)

#: libpq's and psqlpy's words for a TLS failure, which no retry can cure.
_TLS_FAILURES = (
    "server does not support ssl",  # libpq: ..., but SSL was required
    "server does not support tls",  # psqlpy
    "certificate verify failed",  # not trusted by the root certificate; host name not in it
    "does not match host name",  # server certificate for "x" does not match host name "y"
    "root certificate file",  # libpq: ... does not exist / could not read ...
    "cannot create set ssl",  # psqlpy: the root certificate file is missing or unreadable
)


def is_lost(sqlstate: str | None) -> bool:
    """Whether an error with ``sqlstate`` means the session is gone."""
    return sqlstate is not None and (sqlstate[:2] == "08" or sqlstate in _LOST_SQLSTATES)


def refusal_sqlstate(message: str) -> str | None:
    """The SQLSTATE of the server's refusal of a connection, read from its message."""
    lowered = message.lower()
    return next((code for text, code in _REFUSALS if text in lowered), None)


def tls_failed(message: str) -> bool:
    """Whether a connection attempt failed with ``message`` for TLS."""
    lowered = message.lower()
    return any(text in lowered for text in _TLS_FAILURES)


def connect_failed(
    message: str,
    params: ConnectParams,
    sqlstate: str | None,
    *,
    tls: bool = False,
    last_host: bool = False,
) -> ConnectError:
    """The error of a failed connection attempt: permanent if it failed for TLS (``tls``),
    else as its SQLSTATE says.

    Its message names the server (`server_named`) before the driver's ``message``;
    ``last_host``: the driver's message is that of the last host of the DSN.
    """
    text = scrub(f"{server_named(params, last_host=last_host)}: {message}", params.secrets)
    return ConnectError(text, dsn=params.dsn, sqlstate=sqlstate, permanent=True if tls else None)


def server_named(params: ConnectParams, *, last_host: bool = False) -> str:
    """What a connect error says of the server: each host and port, the database and the
    user, as the DSN, the environment and ``connect_kwargs`` give them (else as libpq
    defaults them); never the password.

    ``server 127.0.0.1:5432, database "app", user "me"``, or with several hosts
    ``servers h1:5432, h2:5433 (error from h2:5433), ...`` where ``last_host`` says the
    error is the last host's.
    """
    hosts, dbname, user = _target(params)
    names = [_host_text(host, port) for host, port in hosts] or [_host_text("", "")]
    where = f"server {names[0]}" if len(names) == 1 else "servers " + ", ".join(names)
    if last_host and len(names) > 1:
        where += f" (error from {names[-1]})"
    user = user or _os_user()
    return f'{where}, database "{dbname or user}", user "{user}"'


def _target(params: ConnectParams) -> tuple[list[tuple[str, str]], str | None, str | None]:
    """The hosts and ports, database and user of ``params``: the DSN's, overridden by the
    keyword arguments the drivers take for them."""
    try:
        info = parse_dsn(params.dsn)
    except ValueError:  # refused at unipool.connect(); a connect hook may still take it
        info = ConnInfo()
    hosts = [(host, str(port or "")) for host, port in info.hosts]
    kwargs = params.kwargs
    if kwargs.get("host") or kwargs.get("port"):
        names = str(kwargs.get("host") or ",".join(h for h, _ in hosts)).split(",")
        ports = str(kwargs.get("port") or ",".join(p for _, p in hosts)).split(",")
        ports += [ports[-1]] * (len(names) - len(ports))  # one port for all, as in libpq
        hosts = list(zip(names, ports, strict=False))
    user = kwargs.get("user") or kwargs.get("username") or info.user
    dbname = kwargs.get("dbname") or kwargs.get("database") or kwargs.get("db_name")
    return hosts, str(dbname or info.dbname or "") or None, str(user or "") or None


def _host_text(host: str, port: str) -> str:
    port = port.strip() or _DEFAULT_PORT
    if host.startswith("/"):  # a unix-socket directory: its socket, as libpq names it
        return f"{host.rstrip('/')}/.s.PGSQL.{port}"
    if ":" in host:
        host = f"[{host}]"
    return f"{host or '(default host)'}:{port}"


def _os_user() -> str:
    """The operating system's user name, libpq's default user."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no LOGNAME, USER... nor a passwd entry
        return "(unknown)"


#: The server checks this often, while a query runs, that the client is still there, and
#: ends the session when it is not (PostgreSQL 14+, Linux servers): a session the pool
#: dropped mid-query ends within about this long even when no cancel request got through.
CLIENT_CHECK = ("client_connection_check_interval", "1s")


#: Seconds the cancel of a user's interrupted query (the request, then the query's end)
#: may take before the connection is dropped instead: on a network that answers it takes
#: a few milliseconds; past this one the network is taken to be silent, and a dropped
#: session ends on the server by itself (`CLIENT_CHECK`) once the network answers.
CANCEL_WAIT = 0.1
#: How long a driver's cancel request already sent may go on after its connection is
#: dropped (it reaches the server, so the query ends there), before it is cut short.
CANCEL_REQUEST_BOUND = 5.0


def cancel_in_background(send: Callable[[], object], secrets: Iterable[str] = ()) -> None:
    """Send a cancel request for the query of a connection the pool cuts, in a thread of
    its own, so that the cut returns at once and the query ends on the server even where
    the server does not check for its client (PostgreSQL 13, `CLIENT_CHECK` turned off).

    ``send`` bounds itself (`CANCEL_REQUEST_BOUND`); a failure is logged (DEBUG), its
    message without ``secrets``. The thread is a daemon: the process never waits for it.
    At most `MAX_CANCEL_THREADS` run at once; past that the request is not sent (logged):
    the server's own check is left to end the query. Never raises.
    """
    global _cancel_threads
    secrets = tuple(secrets)

    def run() -> None:
        global _cancel_threads
        try:
            send()
        except Exception as exc:  # the server may be gone: the cut stands either way
            log_unsent(exc, secrets)
        finally:
            with _cancel_guard:
                _cancel_threads -= 1

    with _cancel_guard:
        if _cancel_threads >= MAX_CANCEL_THREADS:
            _log.debug(
                "cancel request before a cut not sent: %d already under way", _cancel_threads
            )
            return
        _cancel_threads += 1
    try:
        threading.Thread(target=run, name="unipool-cancel", daemon=True).start()
    except Exception as exc:  # no thread to be had (at interpreter exit, say)
        with _cancel_guard:
            _cancel_threads -= 1
        log_unsent(exc, secrets)


def log_unsent(exc: BaseException, secrets: Iterable[str] = ()) -> None:
    """Log (DEBUG) that a cancel request before a cut failed with ``exc``."""
    _log.debug("cancel request before a cut failed: %s", scrub(repr(exc), tuple(secrets)))


#: Cancel requests sent at once, at most; `_cancel_threads` are under way.
MAX_CANCEL_THREADS = 32
_cancel_threads = 0
_cancel_guard = threading.Lock()


def born_here(pid: int) -> bool:
    """Whether a connection opened by process ``pid`` belongs to this process (not one
    inherited through ``os.fork()``, whose session is the parent's)."""
    return pid == os.getpid()


#: The servers (by DSN and host) that refused `CLIENT_CHECK`: PostgreSQL 13 and older do
#: not know it, and a pooler (PgBouncer in session mode) may refuse the startup parameter.
_NO_CLIENT_CHECK: set[tuple[str, str]] = set()


def _server_key(params: ConnectParams) -> tuple[str, str]:
    return params.dsn or "", str(params.kwargs.get("host", ""))


def with_client_check(settings: Mapping[str, Any] | None, params: ConnectParams) -> dict[str, Any]:
    """``settings`` with `CLIENT_CHECK` unless they set it (a ``None`` value: not sent),
    the pool is behind PgBouncer, which refuses such a startup parameter, or the server
    refused it before."""
    settings = dict(settings or {})
    if not params.pgbouncer and _server_key(params) not in _NO_CLIENT_CHECK:
        settings.setdefault(*CLIENT_CHECK)
    return {key: value for key, value in settings.items() if value is not None}


def refused_client_check(params: ConnectParams, error: BaseException) -> bool:
    """Whether a connection attempt failed with ``error`` for the `CLIENT_CHECK` it sent,
    unasked: it is then no longer sent to that server, and the attempt may be repeated."""
    user_set = CLIENT_CHECK[0] in (params.kwargs.get("server_settings") or {})
    key = _server_key(params)
    message = str(error)
    # PgBouncer: "unsupported startup parameter: options" (psycopg and psqlpy send the
    # setting in ``options``, maybe only for it) or ": client_connection_check_interval"
    refused = CLIENT_CHECK[0] in message or "unsupported startup parameter" in message
    if user_set or params.pgbouncer or key in _NO_CLIENT_CHECK or not refused:
        return False
    if len(_NO_CLIENT_CHECK) > 100:  # bounded: a process rarely talks to many servers
        _NO_CLIENT_CHECK.clear()
    _NO_CLIENT_CHECK.add(key)
    return True


def startup_settings(params: ConnectParams) -> tuple[dict[str, Any], str | None]:
    """The settings a connection starts with, and an ``application_name`` to pass as a
    startup parameter of its own.

    These are ``server_settings``, `CLIENT_CHECK`, and ``statement_timeout`` for
    ``command_timeout``. Behind PgBouncer, which refuses ``options`` but takes
    ``application_name``, that one is taken out of the settings.
    """
    settings = with_client_check(params.kwargs.get("server_settings"), params)
    application_name = None
    if params.pgbouncer and "application_name" in settings:
        application_name = str(settings.pop("application_name"))
    if params.command_timeout is not None:
        settings.setdefault("statement_timeout", f"{int(params.command_timeout * 1000)}ms")
    return settings, application_name


def options_with(options: str, settings: Mapping[str, Any]) -> str:
    """The ``options`` startup parameter: ``options`` and a ``-c name=value`` for each
    setting."""
    parts = [options]
    for key, value in settings.items():
        escaped = str(value).replace("\\", "\\\\").replace(" ", "\\ ")
        parts.append(f"-c {key}={escaped}")
    return " ".join(part for part in parts if part)
