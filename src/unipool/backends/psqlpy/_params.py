"""What psqlpy is given to connect: the libpq parameters it takes, those passed its own
way, and those it cannot honour."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psqlpy

from ..._dsn import TCP_PARAMS, ConnInfo, parse_dsn, root_cert, system_ca_file, tcp_options
from .._session import options_with, startup_settings
from ..base import ConnectParams

#: libpq parameters psqlpy's DSN parser takes as they are, ...
_NATIVE = frozenset(
    {
        "options",
        "application_name",
        "connect_timeout",
        "target_session_attrs",
        "load_balance_hosts",
        "channel_binding",
        "hostaddr",
    }
)
#: ... those the adapter passes its own way (`connect_args`) ...
_MAPPED = frozenset({"sslmode", "sslrootcert", *TCP_PARAMS})
#: ... and those it drops, for values that ask for nothing psqlpy would not do anyway.
#: Any other parameter is refused at ``unipool.connect()``.
_MOOT: dict[str, tuple[str, ...] | None] = {
    "gssencmode": ("disable", "prefer", "allow"),
    "sslsni": None,
    "sslcompression": None,
    "fallback_application_name": None,
}
_SSL_MODES = {
    "disable": "Disable",
    "allow": "Allow",
    "prefer": "Prefer",
    "require": "Require",
    "verify-ca": "VerifyCa",
    "verify-full": "VerifyFull",
}


def check_dsn(info: ConnInfo) -> None:
    """Refuse, at ``unipool.connect()``, libpq parameters psqlpy cannot honour."""
    verify = info.params.get("sslmode") in ("verify-ca", "verify-full")
    if verify and root_cert(info) == "system" and system_ca_file() is None:
        raise ValueError(
            "invalid DSN for the psqlpy backend: sslrootcert=system, but no system "
            "certificate bundle was found: give its path"
        )
    for key, value in info.params.items():
        if key in _NATIVE or key in _MAPPED:
            continue
        allowed = _MOOT.get(key, ())
        if key not in _MOOT or (allowed and value not in allowed):
            shown = f"{key}={value}" if allowed else key
            raise ValueError(f"invalid DSN for the psqlpy backend: it cannot honour {shown!r}")


#: The ``application_name`` of the side connection that cancels a query: it is no session
#: of the pool, and is not counted as one by whoever watches the pool's name.
CANCEL_NAME = "unipool cancel"


def connect_args(params: ConnectParams, *, side: bool = False) -> tuple[str, dict[str, Any]]:
    """psqlpy's DSN and keyword arguments for ``params`` (``side``: for a side connection,
    named `CANCEL_NAME`).

    ``server_settings`` and ``command_timeout`` become ``-c`` options; ``sslmode`` and
    ``sslrootcert`` become ``ssl_mode`` and ``ca_file`` (psqlpy's DSN parser ignores the
    former's verify modes and refuses the latter); the TCP options are spelt psqlpy's way
    (its ``tcp_user_timeout`` is in seconds, libpq's in milliseconds).
    """
    info = parse_dsn(params.dsn)
    kwargs = {
        k: v for k, v in params.kwargs.items() if k != "server_settings" and k not in TCP_PARAMS
    }
    # psqlpy ignores credentials passed beside a DSN: they go into it.
    password = kwargs.pop("password", None)
    user = kwargs.pop("user", None) or kwargs.pop("username", None)
    if password is not None or user is not None:
        info = replace(
            info,
            user=info.user if user is None else str(user),
            password=info.password if password is None else str(password),
        )
    query = {k: v for k, v in info.params.items() if k in _NATIVE}
    fallback = info.params.get("fallback_application_name")
    if fallback and "application_name" not in query:
        query["application_name"] = fallback
    settings, application_name = startup_settings(params)
    if application_name is not None:
        query["application_name"] = application_name
    if side:  # a startup parameter of its own wins over an ``options`` one
        query["application_name"] = CANCEL_NAME
    if settings:
        query["options"] = options_with(query.get("options", ""), settings)
    tcp = tcp_options(info.params, params.kwargs)
    query["keepalives"] = "1" if tcp.keepalives else "0"
    if tcp.keepalives:
        for key, value in (
            ("keepalives_idle", tcp.idle),
            ("keepalives_interval", tcp.interval),
            ("keepalives_retries", tcp.count),
        ):
            if value:  # 0: the system's default, as in libpq
                query[key] = str(value)
    if tcp.user_timeout:
        seconds, millis = divmod(tcp.user_timeout, 1000)
        kwargs.setdefault("tcp_user_timeout_sec", seconds)
        kwargs.setdefault("tcp_user_timeout_nanosec", millis * 1_000_000)
    sslmode = info.params.get("sslmode")
    rootcert = info.params.get("sslrootcert")
    if sslmode in ("verify-ca", "verify-full"):
        # psqlpy's verify modes fall back to plain text when the server has no TLS; its
        # "require" with a root certificate verifies the chain and the host name.
        kwargs.setdefault("ssl_mode", psqlpy.SslMode.Require)
        rootcert = root_cert(info)
    elif sslmode in _SSL_MODES:
        kwargs.setdefault("ssl_mode", getattr(psqlpy.SslMode, _SSL_MODES[sslmode]))
    if rootcert == "system":
        rootcert = system_ca_file()
    if rootcert:
        kwargs.setdefault("ca_file", rootcert)
    return replace(info, params=query).to_uri(), kwargs
