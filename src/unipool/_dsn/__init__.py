"""DSN parsing, rendering and redaction, without any driver.

Two input forms are accepted, as by libpq: URIs (``postgresql://`` or ``postgres://``) and
``key=value`` conninfo strings. Missing fields are filled from the libpq environment
variables. Passwords never reach ``repr``, redacted renderings or error messages.

``syntax`` holds the lexical rules, ``secret`` finds secrets in DSN text, ``conninfo``
parses, ``redact`` makes DSNs safe to log, ``netparams`` reads what every backend
interprets alike (TCP keepalives, TLS, timeouts).
"""

from __future__ import annotations

from .conninfo import ConnInfo, parse_dsn
from .netparams import (
    SSL_MODES,
    TCP_PARAMS,
    TcpOptions,
    check_params,
    root_cert,
    system_ca_file,
    tcp_options,
)
from .redact import UNPARSABLE, redact_dsn
from .secret import REDACTED, scrub

__all__ = [
    "REDACTED",
    "SSL_MODES",
    "TCP_PARAMS",
    "UNPARSABLE",
    "ConnInfo",
    "TcpOptions",
    "check_params",
    "parse_dsn",
    "redact_dsn",
    "root_cert",
    "scrub",
    "system_ca_file",
    "tcp_options",
]
