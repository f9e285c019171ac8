"""connect(): resolve the backend, validate the options, build the Pool (no I/O)."""

from __future__ import annotations

from typing import Any

from . import backends
from ._dsn import check_params, parse_dsn, tcp_options
from ._options import build_options
from ._pool import Pool


def connect(dsn: str | None = None, *, backend: str | Any = "psycopg", **options: Any) -> Pool:
    """Create a pool; it opens on first use, in the mode of that use.

    No I/O happens here: what can be checked is checked at once, and connections are
    opened by ``with pool:`` / ``async with pool:``, ``open()`` / ``aopen()``, or the
    first ``acquire()``, which also binds the pool to blocking use or to the running
    event loop.

    Args:
        dsn: A libpq URI (``postgresql://``, multi-host allowed) or a ``key=value``
            string; ``None`` means the libpq environment variables (``PGHOST``,
            ``PGUSER``, ...).
        backend: ``"psycopg"`` (the default), ``"asyncpg"`` or ``"psqlpy"``.
        **options: The pool's options (``min_size``, ``max_size``, ``acquire_timeout``,
            ``max_waiting``, ``max_queries``, ``max_lifetime``, ``max_idle``,
            ``connect_timeout``, ``command_timeout``, ``reconnect_timeout``, ``check``,
            ``leak_timeout``, ``connect``, ``init``, ``setup``, ``reset``,
            ``connect_kwargs``, ``password``, ``name``, ``pgbouncer``, ``listeners``),
            as in the README's table and :class:`PoolOptions`.

    Returns:
        A :class:`Pool`, not yet open.

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
