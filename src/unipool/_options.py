"""Pool options: names, defaults and validation (no I/O)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_names = itertools.count(1)

#: Accepted for compatibility with asyncpg's pool.
ALIASES = {"max_inactive_connection_lifetime": "max_idle"}


@dataclass(frozen=True)
class PoolOptions:
    """Every option of a pool, validated: the keywords of :func:`unipool.connect`.

    Sizes are counts, times are seconds, and ``None`` turns a time limit off.

    Attributes:
        min_size: Connections kept open at least (default 1).
        max_size: Connections open at most, counting ones being opened (default 10).
        acquire_timeout: How long ``acquire()`` waits before ``PoolTimeout`` (30).
        max_waiting: Queued requests allowed; past it, ``TooManyWaiters`` at once
            (0: unbounded).
        max_queries: A connection is replaced after this many queries (50 000).
        max_lifetime: A connection is replaced after this age, less up to 10 %
            jitter (3600).
        max_idle: Idle connections above ``min_size`` close after this long (600;
            alias ``max_inactive_connection_lifetime``).
        connect_timeout: Per connection attempt (10).
        command_timeout: Per statement; past it, ``CommandTimeout`` (none).
        reconnect_timeout: How long the pool keeps refilling to ``min_size`` in the
            background while the server is down (300).
        check: A connection idle this long is pinged before it is handed out (1;
            psqlpy's default 50 ms); ``None`` pings only suspect connections.
        leak_timeout: A borrow held longer is logged once with the borrower's stack
            (none).
        connect: A connection factory called as ``connect(dsn, **driver_kwargs)``
            instead of the driver's (a coroutine function for asyncpg and psqlpy,
            and for psycopg in an async pool).
        init: A hook run on each new connection.
        setup: A hook run on each acquire.
        reset: A hook run on each release, after the pool's own reset.
        connect_kwargs: Driver arguments (``server_settings`` works on every
            backend), or a callable answering them for every new connection.
        password: Overrides the DSN's password: a str, or a callable (a coroutine
            function allowed in an async pool) called for every new connection.
        name: Shown in logs, ``repr`` and stats (default ``pool-N``).
        pgbouncer: The DSN points at PgBouncer in transaction mode (or a pooler like
            it): no prepared statement outlives a transaction.
        listeners: Objects told of the pool's events.
    """

    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float = 30.0
    max_waiting: int = 0
    max_queries: int = 50_000
    max_lifetime: float | None = 3600.0
    max_idle: float | None = 600.0
    connect_timeout: float | None = 10.0
    command_timeout: float | None = None
    reconnect_timeout: float | None = 300.0
    check: float | None = 1.0
    leak_timeout: float | None = None
    connect: Callable[..., Any] | None = None
    init: Callable[..., Any] | None = None
    setup: Callable[..., Any] | None = None
    reset: Callable[..., Any] | None = None
    #: A mapping, or a callable answering one for every new connection.
    connect_kwargs: Mapping[str, Any] | Callable[[], Any] = field(default_factory=dict)
    #: Overrides the DSN's password: a str, or a callable (a coroutine function allowed
    #: in an async pool) called for every new connection.
    password: str | Callable[[], Any] | None = None
    name: str = ""
    #: The DSN points at PgBouncer (or a pooler like it) in transaction or statement
    #: mode: no backend relies on server-side session state between transactions.
    pgbouncer: bool = False
    #: Objects told of the pool's events (see ``unipool._listeners``).
    listeners: tuple[Any, ...] = ()

    def with_changes(self, **changes: Any) -> PoolOptions:
        """A validated copy with ``changes`` applied.

        Args:
            **changes: Options to replace, by name.

        Returns:
            The new options.

        Raises:
            TypeError: an unknown option, or a value of the wrong type.
            ValueError: a value out of range, or ``min_size > max_size``.
        """
        return build_options(**{**self._as_dict(), **changes})

    def _as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_OPTION_NAMES = frozenset(f.name for f in fields(PoolOptions))
_INTS = ("min_size", "max_size", "max_waiting", "max_queries")
_SECONDS = ("acquire_timeout",)
_OPTIONAL_SECONDS = (
    "max_lifetime",
    "max_idle",
    "connect_timeout",
    "command_timeout",
    "reconnect_timeout",
    "check",
    "leak_timeout",
)
_HOOKS = ("connect", "init", "setup", "reset")


def build_options(**options: Any) -> PoolOptions:
    """Validate ``options`` and return them with defaults filled in.

    Raises:
        TypeError: an unknown option, or a value of the wrong type.
        ValueError: a value out of range, or ``min_size > max_size``.
    """
    for alias, canonical in ALIASES.items():
        if alias in options:
            if canonical in options:
                raise TypeError(f"pass either {alias!r} or {canonical!r}, not both")
            options[canonical] = options.pop(alias)
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        allowed = ", ".join(sorted(_OPTION_NAMES | set(ALIASES)))
        raise TypeError(f"unknown option {unknown[0]!r}; the options are: {allowed}")
    if "max_size" not in options and "min_size" in options:
        options["max_size"] = max(options["min_size"], PoolOptions.max_size)
    for name in _INTS:
        if name in options:
            _check_int(name, options[name])
    for name in _SECONDS:
        if name in options:
            options[name] = _check_seconds(name, options[name])
    if options.get("check") is False:
        options["check"] = None
    for name in _OPTIONAL_SECONDS:
        if options.get(name) is not None:
            options[name] = _check_seconds(name, options[name])
    for name in _HOOKS:
        hook = options.get(name)
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be a callable, not {type(hook).__name__}")
    kwargs = options.get("connect_kwargs")
    if kwargs is None:
        options["connect_kwargs"] = {}
    elif callable(kwargs):
        pass  # called for every new connection
    elif not isinstance(kwargs, Mapping):
        raise TypeError(
            f"connect_kwargs must be a mapping or a callable, not {type(kwargs).__name__}"
        )
    else:
        options["connect_kwargs"] = dict(kwargs)
    password = options.get("password")
    if password is not None and not isinstance(password, str) and not callable(password):
        raise TypeError(f"password must be a str or a callable, not {type(password).__name__}")
    _check_pgbouncer(options)
    listeners = options.get("listeners")
    if listeners is None:
        options.pop("listeners", None)
    else:
        if isinstance(listeners, (str, bytes)) or not isinstance(listeners, Iterable):
            raise TypeError(
                f"listeners must be a list of listener objects, not {type(listeners).__name__}"
            )
        options["listeners"] = tuple(listeners)
    label: Any = options.get("name")
    if label is None or label == "":
        options["name"] = f"pool-{next(_names)}"
    elif not isinstance(label, str):
        raise TypeError(f"name must be a str, not {type(label).__name__}")
    result = PoolOptions(**options)
    if result.max_size < 1:
        raise ValueError(f"max_size must be at least 1, not {result.max_size}")
    if result.min_size > result.max_size:
        raise ValueError(
            f"min_size ({result.min_size}) must not exceed max_size ({result.max_size})"
        )
    return result


def _check_pgbouncer(options: dict[str, Any]) -> None:
    preset = options.get("pgbouncer", False)
    if not isinstance(preset, bool):
        raise TypeError(f"pgbouncer must be True or False, not {type(preset).__name__}")


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")


def _check_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, not {value}")
    return float(value)
