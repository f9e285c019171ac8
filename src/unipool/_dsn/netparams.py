"""The parameters of a DSN that every backend interprets alike: TCP keepalives, TLS, timeouts."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .conninfo import ConnInfo

__all__ = [
    "SSL_MODES",
    "TCP_PARAMS",
    "TcpOptions",
    "check_params",
    "root_cert",
    "system_ca_file",
    "tcp_options",
]

#: libpq's TCP parameters; every backend honours them (see `tcp_options` for the defaults).
TCP_PARAMS = (
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
#: libpq's values for ``sslmode``.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

#: unipool's keepalive defaults, for what a DSN leaves out (libpq leaves them to the system,
#: typically 2 hours of idleness, then 9 probes 75 s apart).
KEEPALIVES_IDLE = 60
KEEPALIVES_INTERVAL = 10
KEEPALIVES_COUNT = 3


@dataclass(frozen=True)
class TcpOptions:
    """How a connection's TCP socket notices a peer that went silent.

    Times in whole seconds except ``user_timeout`` (milliseconds, as libpq's
    ``tcp_user_timeout``); 0 leaves a setting to the operating system.
    """

    keepalives: bool = True
    idle: int = KEEPALIVES_IDLE
    interval: int = KEEPALIVES_INTERVAL
    count: int = KEEPALIVES_COUNT
    user_timeout: int = (KEEPALIVES_IDLE + KEEPALIVES_INTERVAL * KEEPALIVES_COUNT) * 1000

    def as_libpq(self) -> dict[str, str]:
        """The libpq parameters for these options."""
        return {
            "keepalives": "1" if self.keepalives else "0",
            "keepalives_idle": str(self.idle),
            "keepalives_interval": str(self.interval),
            "keepalives_count": str(self.count),
            "tcp_user_timeout": str(self.user_timeout),
        }


def tcp_options(*sources: Mapping[str, Any]) -> TcpOptions:
    """The TCP options that libpq parameters in ``sources`` (later ones win) ask for.

    What is not given takes unipool's defaults: keepalives on, first probe after 60 s of
    idleness, then every 10 s, the connection dropped after 3 unanswered probes; and a
    ``tcp_user_timeout`` as long as that whole keepalive cycle (90 s), so that data the
    peer never acknowledges fails as soon as silence would. With ``keepalives=0``, or a
    keepalive setting left to the system (0), the user timeout is left to the system too.

    Raises:
        ValueError: a value that is not a non-negative whole number.
    """
    given: dict[str, int] = {}
    for source in sources:
        for key in TCP_PARAMS:
            if key in source:
                given[key] = _whole_number(key, source[key])
    keepalives = given.get("keepalives", 1) != 0
    idle = given.get("keepalives_idle", KEEPALIVES_IDLE)
    interval = given.get("keepalives_interval", KEEPALIVES_INTERVAL)
    count = given.get("keepalives_count", KEEPALIVES_COUNT)
    user_timeout = given.get("tcp_user_timeout")
    if user_timeout is None:
        cycle = keepalives and idle > 0 and interval > 0 and count > 0
        user_timeout = (idle + interval * count) * 1000 if cycle else 0
    return TcpOptions(keepalives, idle, interval, count, user_timeout)


def _whole_number(key: str, value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
        shown = f", not {text!r}" if _SHOWN_VALUE_RE.fullmatch(text) else ""
        raise ValueError(f"invalid DSN: {key} must be a whole number >= 0{shown}")
    number = int(text)
    if number > 2**31 - 1:
        raise ValueError(f"invalid DSN: {key} must be below 2**31, not {number}")
    return number


# Values of non-secret parameters are quoted in errors only if short and plain.
_SHOWN_VALUE_RE = re.compile(r"[A-Za-z0-9.+-]{1,12}")


def check_params(info: ConnInfo) -> None:
    """Check the parameters whose values every backend interprets (no I/O).

    Raises:
        ValueError: a bad ``sslmode``, ``connect_timeout`` or TCP parameter, naming it;
            or a certificate check asked for without the root certificate file.
    """
    sslmode = info.params.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        shown = f" {sslmode!r}" if _SHOWN_VALUE_RE.fullmatch(sslmode) else ""
        raise ValueError(f"invalid DSN: sslmode{shown} is not one of {', '.join(SSL_MODES)}")
    if sslmode in ("verify-ca", "verify-full"):
        root = root_cert(info)
        if root != "system" and not os.path.isfile(root):
            raise ValueError(
                f"invalid DSN: sslmode={sslmode} needs the certificate of the server's "
                f"authority, and the sslrootcert file {root!r} does not exist"
            )
    tcp_options(info.params)
    if "connect_timeout" in info.params:
        _whole_number("connect_timeout", info.params["connect_timeout"])


def root_cert(info: ConnInfo) -> str:
    """The ``sslrootcert`` in force: the DSN's, else libpq's default ``~/.postgresql/root.crt``."""
    given = info.params.get("sslrootcert")
    if given:
        return given
    return os.path.join(os.path.expanduser("~"), ".postgresql", "root.crt")


def system_ca_file() -> str | None:
    """The system's bundle of trusted certificates, as OpenSSL finds it (``sslrootcert=system``)."""
    import ssl

    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            return path
    return None
