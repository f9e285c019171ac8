"""What psqlpy does not report, told from the statements run: their command tags and
the transaction status they leave."""

from __future__ import annotations

import functools
import re
from typing import Final

from ..._sql import first_words
from ..base import TxStatus

_TOKENS = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|(\$[A-Za-z_0-9]*\$).*?\1|;", re.S
)
_MODIFIERS = frozenset({"OR", "REPLACE", "TEMP", "TEMPORARY", "UNLOGGED", "UNIQUE", "GLOBAL",
                        "LOCAL", "RECURSIVE", "TRUSTED", "PROCEDURAL"})  # fmt: skip
_TWO_WORDS = frozenset({"MATERIALIZED", "FOREIGN", "EVENT", "ACCESS", "DEFAULT", "USER"})
_TX_AFTER = {"BEGIN": TxStatus.INTRANS, "START": TxStatus.INTRANS, "COMMIT": TxStatus.IDLE,
             "END": TxStatus.IDLE, "ABORT": TxStatus.IDLE}  # fmt: skip


def split_statements(sql: str) -> list[str]:
    """``sql`` split at its top-level semicolons, without empty statements."""
    if ";" not in sql:
        return [sql]
    parts, start = [], 0
    for token in _TOKENS.finditer(sql):
        if token.group() == ";":
            parts.append(sql[start : token.start()])
            start = token.end()
    parts.append(sql[start:])
    return [p for p in parts if first_words(p)[0]]


def command_tag(sql: str, rows: int) -> str:
    """The tag the server sends for ``sql`` once done with ``rows`` rows."""
    first, *rest = first_words(sql)
    if first in ("SELECT", "WITH", "VALUES", "TABLE", "FETCH", "MOVE", "COPY"):
        return f"{first if first in ('FETCH', 'MOVE', 'COPY') else 'SELECT'} {rows}"
    if first == "INSERT":
        return f"INSERT 0 {rows}"
    if first in ("UPDATE", "DELETE", "MERGE"):
        return f"{first} {rows}"
    if first in ("CREATE", "DROP", "ALTER"):
        kind = [w for w in rest if w not in _MODIFIERS][:2] or ["TABLE"]
        return f"{first} {' '.join(kind if kind[0] in _TWO_WORDS else kind[:1])}"
    if first == "START":
        return "START TRANSACTION"
    return first


def tx_after(sql: str, before: TxStatus) -> TxStatus:
    """The transaction status once ``sql`` succeeded."""
    after = _tx_effect(sql)
    if after is None:
        return before
    if isinstance(after, TxStatus):
        return after
    return TxStatus.INTRANS if before is TxStatus.INERROR else before  # ROLLBACK TO


#: What ``ROLLBACK TO [SAVEPOINT]`` does: ends a failed transaction's error state only.
_ROLLBACK_TO_SAVEPOINT: Final = "rollback to savepoint"


@functools.lru_cache(maxsize=1024)
def _tx_effect(sql: str) -> TxStatus | str | None:
    """The status ``sql`` leaves whatever the status before, `_ROLLBACK_TO_SAVEPOINT`, or
    None: the status before stays."""
    words = first_words(sql)
    first, second = words[0], words[1]
    if "CHAIN" in words and "NO" not in words:  # COMMIT/ROLLBACK AND CHAIN
        return TxStatus.INTRANS
    if first == "ROLLBACK":
        return _ROLLBACK_TO_SAVEPOINT if second == "TO" else TxStatus.IDLE
    if first == "PREPARE" and second == "TRANSACTION":
        return TxStatus.IDLE
    return _TX_AFTER.get(first)
