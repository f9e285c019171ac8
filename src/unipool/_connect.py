"""connect(): resolve the backend, validate the options, build the Pool (no I/O)."""

from __future__ import annotations

from typing import Any

from . import backends
from ._dsn import check_params, parse_dsn, tcp_options
from ._options import build_options
from ._pool import Pool


def connect(dsn: str | None = None, *, backend: str | Any = "psycopg", **options: Any) -> Pool:
    """Create a pool; it opens on first use, in the mode of that use.

    ``dsn`` is a libpq URI (``postgresql://``) or ``key=value`` string; None
    means the libpq environment variables (``PGHOST``, ``PGUSER``, ...).

    Raises:
        ValueError: an unknown or uninstalled backend, a malformed DSN (or one
            with a parameter the backend cannot honour), or an option out of range.
        TypeError: an unknown option or a value of the wrong type.
    """
    if dsn is not None and not isinstance(dsn, str):
        raise TypeError(f"dsn must be a str or None, not {type(dsn).__name__}")
    resolved = backends.load(backend)
    info = parse_dsn(dsn)  # raises ValueError, without the password, if malformed
    check_params(info)
    check_dsn = getattr(resolved, "check_dsn", None)
    if check_dsn is not None:  # parameters this backend cannot honour
        check_dsn(info)
    given = frozenset(options)
    validated = build_options(**options)
    if not callable(validated.connect_kwargs):
        tcp_options(info.params, validated.connect_kwargs)  # keepalives_idle=... there too
    return Pool(dsn, resolved, validated, given)
