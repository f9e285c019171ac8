"""The lexical rules that parsing and redaction share: schemes, keys, conninfo values."""

from __future__ import annotations

import re

__all__ = ["KEY_RE", "SCHEME_RE", "Invalid", "conninfo_token", "conninfo_value", "skip_space"]

SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_BARE_RE = re.compile(r"[^\s'\\]+")


class Invalid(ValueError):
    """Raised when a DSN is malformed; ``template`` has one ``{}`` for the offending value.

    ``literal`` values are copied from the DSN text and are only shown when no occurrence
    of them touches a part of the text that may hold a secret.
    """

    def __init__(self, template: str, value: str | None = None, *, literal: bool = True) -> None:
        super().__init__(template)
        self.template = template
        self.value = value
        self.literal = literal


def skip_space(text: str, i: int) -> int:
    """Return the index of the first non-blank character of ``text`` from ``i`` on."""
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def conninfo_token(text: str, i: int) -> tuple[str, int]:
    """Read one conninfo value at ``i``; return it and the index just after it."""
    n = len(text)
    quoted = i < n and text[i] == "'"
    if quoted:
        i += 1
    chars: list[str] = []
    while i < n:
        char = text[i]
        if quoted and char == "'":
            return "".join(chars), i + 1
        if not quoted and char.isspace():
            break
        if char == "\\":
            i += 1
            if i >= n:
                break
            char = text[i]
        chars.append(char)
        i += 1
    if quoted:
        raise Invalid("invalid DSN: unterminated quoted value")
    return "".join(chars), i


def conninfo_value(value: str) -> str:
    """Write ``value`` as :func:`conninfo_token` reads it back: bare, or quoted and escaped."""
    if _BARE_RE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
