"""SQL the pool writes itself, and what it can tell from a statement's text."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

#: Returns a session to its connection defaults in one round trip. Never
#: ``DISCARD ALL``: it breaks every driver's prepared-statement cache.
RESET_SESSION = (
    "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; "
    "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP; DISCARD SEQUENCES"
)


def reset_statement(in_transaction: bool, dirty: bool) -> str:
    """What a release's reset sends: a rollback of an open transaction, then
    `RESET_SESSION` if the session may have changed; ``""`` for nothing."""
    parts = ["ROLLBACK"] if in_transaction else []
    if dirty:
        parts.append(RESET_SESSION)
    return "; ".join(parts)


ISOLATION_LEVELS = {
    "read_committed": "READ COMMITTED",
    "repeatable_read": "REPEATABLE READ",
    "serializable": "SERIALIZABLE",
}

_CLEAN_FIRST_WORDS = frozenset(
    {
        "select",
        "copy",
        "insert",
        "update",
        "delete",
        "with",
        "values",
        "table",
        "show",
        "explain",
        "merge",
        "begin",
        "start",
        "commit",
        "end",
        "rollback",
        "abort",
        "savepoint",
        "release",
    }
)
_SESSION_CHANGERS = re.compile(r"set_config|advisory|dblink|\btemp(?:orary)?\b", re.IGNORECASE)
_SELECT_INTO = re.compile(r"\binto\b", re.IGNORECASE)
_COMMENTS = re.compile(r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]+")
_cache: dict[str, bool] = {}
_CACHE_MAX = 4096


def leaves_session_clean(sql: str) -> bool:
    """Whether ``sql`` surely leaves session state (settings, locks, temp tables) as it was.

    Conservative: anything not recognised counts as a change, and so does a
    string of more than one statement (a ``;`` before the end, even one inside
    a literal: it costs a reset, never a leak). Statements that change session
    state only inside a user-defined function are not seen; run those through
    ``conn.raw``, which always counts as a change.
    """
    known = _cache.get(sql)
    if known is not None:
        return known
    first = first_words(sql)[0].lower()
    clean = (
        ";" not in sql.rstrip().rstrip(";")
        and first in _CLEAN_FIRST_WORDS
        and _SESSION_CHANGERS.search(sql) is None
        and not (first in ("select", "with") and _SELECT_INTO.search(sql))
    )
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[sql] = clean
    return clean


@functools.lru_cache(maxsize=1024)
def first_words(sql: str) -> tuple[str, ...]:
    """The first words of a statement, comments skipped, upper-cased, padded with '' to
    three at least."""
    start = _COMMENTS.match(sql).end()  # type: ignore[union-attr]  # it matches ''
    if _WORD.match(sql, start) is None:
        return ("", "", "")
    words = [w.upper() for w in _WORD.findall(sql, start, start + 80)[:6]]
    return (*words, *[""] * (3 - len(words)))


def begin_statement(isolation: str | None, readonly: bool, deferrable: bool) -> str:
    """The ``BEGIN`` for a transaction with these characteristics.

    Raises:
        ValueError: an unknown isolation level.
    """
    parts = ["BEGIN"]
    if isolation is not None:
        try:
            parts.append("ISOLATION LEVEL " + ISOLATION_LEVELS[isolation])
        except KeyError:
            allowed = ", ".join(repr(k) for k in ISOLATION_LEVELS)
            raise ValueError(f"isolation must be one of {allowed}, not {isolation!r}") from None
    if readonly:
        parts.append("READ ONLY")
    if deferrable:
        parts.append("DEFERRABLE")
    return " ".join(parts)


COPY_OPTIONS = frozenset({"format", "delimiter", "null", "header", "quote", "escape", "encoding"})
COPY_FORMATS = frozenset({"text", "csv", "binary"})


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def qualified_name(table: str, schema_name: str | None) -> str:
    """``table``, in ``schema_name`` if given, as a quoted SQL name."""
    name = quote_ident(table)
    return name if schema_name is None else f"{quote_ident(schema_name)}.{name}"


def check_copy_options(options: dict[str, Any]) -> dict[str, Any]:
    """The COPY options that are set, validated.

    Raises:
        TypeError: an unknown option.
        ValueError: an unknown format.
    """
    unknown = sorted(set(options) - COPY_OPTIONS)
    if unknown:
        allowed = ", ".join(sorted(COPY_OPTIONS))
        raise TypeError(f"unknown COPY option {unknown[0]!r}; the options are: {allowed}")
    fmt = options.get("format")
    if fmt is not None and fmt not in COPY_FORMATS:
        raise ValueError(f"format must be one of {sorted(COPY_FORMATS)}, not {fmt!r}")
    return {k: v for k, v in options.items() if v is not None}


def copy_statement(
    table: str,
    schema_name: str | None,
    columns: Sequence[str] | None,
    direction: str,
    options: dict[str, Any],
) -> str:
    """``COPY [schema.]table [(columns)] FROM STDIN | TO STDOUT [WITH (...)]``."""
    target = qualified_name(table, schema_name)
    if columns:
        target += " (" + ", ".join(quote_ident(c) for c in columns) + ")"
    parts = []
    for key, value in options.items():
        if key == "format":
            parts.append(f"FORMAT {value}")
        elif key == "header":
            parts.append(f"HEADER {'true' if value else 'false'}")
        else:
            parts.append(f"{key.upper()} '" + str(value).replace("'", "''") + "'")
    with_clause = f" WITH ({', '.join(parts)})" if parts else ""
    return f"COPY {target} {direction}{with_clause}"
