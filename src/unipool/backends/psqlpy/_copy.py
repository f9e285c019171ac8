"""COPY where psqlpy has none: it copies only binary data, and only into a table.

Text and CSV input is parsed here and inserted through the server's input
functions (a cast per column); output is a SELECT of the columns as text,
formatted here.
"""

from __future__ import annotations

import re
from typing import Any

#: The (name, type) of a table's columns, as COPY fills them.
TABLE_COLUMNS = (
    "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped"
    " AND attgenerated = '' ORDER BY attnum"
)
_UNESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", re.S)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPED = {v: "\\" + k for k, v in _ESCAPES.items()} | {"\\": "\\\\"}
_LINES = re.compile(r"\r\n|\r|\n")


async def collected(value: Any) -> Any:
    """``value``, or the list of its items if it is an async iterable."""
    if hasattr(value, "__aiter__"):
        return [item async for item in value]
    return value


def _unescaped(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0] in "01234567":
        return chr(int(code, 8))
    return _ESCAPES.get(code, code)


def _text_fields(line: str, delimiter: str, null: str) -> list[str | None]:
    """One line of COPY text format: split at unescaped delimiters, then unescaped."""
    fields, start, i = [], 0, 0
    while i < len(line):
        if line[i] == "\\":
            i += 1
        elif line[i] == delimiter:
            fields.append(line[start:i])
            start = i + 1
        i += 1
    fields.append(line[start:])
    return [None if f == null else _UNESCAPE.sub(_unescaped, f) for f in fields]


def _csv_rows(text: str, delimiter: str, quote: str, escape: str, null: str) -> list[list[Any]]:
    """CSV as COPY reads it: an unquoted field equal to ``null`` is NULL."""
    rows: list[list[Any]] = []
    row: list[Any] = []
    field: list[str] = []
    quoted = in_quotes = False
    i, end = 0, len(text)
    while i < end:
        c = text[i]
        if in_quotes:
            if (
                c == escape
                and i + 1 < end
                and text[i + 1] in (quote, escape)
                and (escape != quote or text[i + 1] == quote)
            ):
                field.append(text[i + 1])
                i += 1
            elif c == quote:
                in_quotes = False
            else:
                field.append(c)
        elif c == quote:
            in_quotes = quoted = True
        elif c in (delimiter, "\r", "\n"):
            value = "".join(field)
            row.append(None if not quoted and value == null else value)
            field, quoted = [], False
            if c != delimiter:
                rows.append(row)
                row = []
                i += c == "\r" and text[i + 1 : i + 2] == "\n"
        else:
            field.append(c)
        i += 1
    if field or quoted or row:
        value = "".join(field)
        rows.append([*row, None if not quoted and value == null else value])
    return rows


def parse_copy(text: str, options: dict[str, Any]) -> list[list[Any]]:
    """The rows of COPY text or CSV data, fields as text or None."""
    if options.get("format") == "csv":
        quote = options.get("quote", '"')
        rows = _csv_rows(text, options.get("delimiter", ","), quote,
                         options.get("escape", quote), options.get("null", ""))  # fmt: skip
    else:
        delimiter, null = options.get("delimiter", "\t"), options.get("null", "\\N")
        lines = _LINES.split(text)
        if lines and lines[-1] == "":
            lines.pop()
        if "\\." in lines:
            lines = lines[: lines.index("\\.")]
        rows = [_text_fields(line, delimiter, null) for line in lines]
    return rows[1:] if options.get("header") else rows


def _csv_field(value: str | None, delimiter: str, quote: str, escape: str, null: str) -> str:
    if value is None:
        return null
    if value == null or any(c in value for c in (delimiter, quote, "\r", "\n")):
        escaped = "".join(escape + c if c in (quote, escape) else c for c in value)
        return quote + escaped + quote
    return value


def _text_field(value: str | None, delimiter: str, null: str) -> str:
    if value is None:
        return null
    escapes = {delimiter: "\\" + delimiter, **_ESCAPED}
    return "".join(escapes.get(c, c) for c in value)


def format_copy(names: list[str], rows: list[tuple[Any, ...]], options: dict[str, Any]) -> str:
    """Rows of text values as COPY writes them in text or CSV format."""
    if options.get("format") == "csv":
        quote = options.get("quote", '"')
        args = (options.get("delimiter", ","), quote, options.get("escape", quote),
                options.get("null", ""))  # fmt: skip
        delimiter = args[0]
        lines = [delimiter.join(_csv_field(v, *args) for v in row) for row in rows]
        header = delimiter.join(_csv_field(n, *args) for n in names)
    else:
        delimiter, null = options.get("delimiter", "\t"), options.get("null", "\\N")
        lines = [delimiter.join(_text_field(v, delimiter, null) for v in row) for row in rows]
        header = delimiter.join(_text_field(n, delimiter, null) for n in names)
    if options.get("header"):
        lines.insert(0, header)
    return "".join(line + "\n" for line in lines)
