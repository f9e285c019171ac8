"""Where a DSN may hold secrets: which keys, which spans of its text, and scrubbing them out.

Secrets are found in text the parser may reject, so the rules here over-approximate: a
misspelled key, a mangled URI or a missing quote hides more, never less.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

from .syntax import SCHEME_RE, Invalid, conninfo_token, skip_space

__all__ = [
    "REDACTED",
    "error_message",
    "is_secret_key",
    "scrub",
    "secret_spans",
    "userinfo_end",
]

#: What a password is replaced with.
REDACTED = "***"

# Keys whose values are hidden: these, any key holding one of _SECRET_WORDS, and near
# misspellings of "password" (a misspelled key is a likely reason to log a DSN).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
_SECRET_WORDS = ("pass", "pwd", "secret")
_NOT_SECRET = frozenset({"passfile"})

# Where a redacted value may end at the latest: the next "key=" of a URI query / conninfo.
_NEXT_QUERY_KEY_RE = re.compile(r"&[A-Za-z_%][A-Za-z0-9_.%]*=")
_NEXT_CONNINFO_KEY_RE = re.compile(r"\s+[A-Za-z_][A-Za-z0-9_.]*\s*=")
_VALUE_END_RE = re.compile(r"\s")
_INNER_URI_RE = re.compile(r"://")
_CHUNK_RE = re.compile(r"\S+")
_DELIMITERS_RE = re.compile(r"[\s:@/?&='\"]+")
_QUERY_KEY_RE = re.compile(r"([^=&?]*)=")
_CONNINFO_KEY_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*=")


def is_secret_key(key: str) -> bool:
    """Tell whether the value of parameter ``key`` is to be hidden."""
    key = key.lower()
    if key in _NOT_SECRET:
        return False
    if key in _SECRET_PARAMS or any(word in key for word in _SECRET_WORDS):
        return True
    return abs(len(key) - 8) <= 2 and _distance(key, "password") <= 2


def _distance(a: str, b: str) -> int:
    """Return the Levenshtein distance between ``a`` and ``b``."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def error_message(exc: Invalid, text: str, env_password: str) -> str:
    """Return the message of ``exc``, raised for ``text``, with no secret in it.

    ``env_password`` (PGPASSWORD, which may have filled in the password) is hidden too.
    """
    spans = secret_spans(text, paranoid=True)
    secrets = _secret_forms([text[start:end] for start, end in spans])
    secrets.append(env_password)
    # Values are only quoted when they cannot be secrets; scrubbing then only matters for
    # a password equal to words of the message, which 1 or 2 characters would mangle.
    return scrub(_render(exc, text, spans, secrets), (s for s in secrets if len(s) > 2))


def _render(exc: Invalid, text: str, spans: list[tuple[int, int]], secrets: list[str]) -> str:
    """Return the message, quoting the offending value only if it cannot be a secret."""
    value = exc.value
    hidden = (
        not value
        or is_secret_key(value)  # e.g. "password0000" for a key whose "=" went missing
        or any(value in secret or secret in value for secret in secrets if secret)
        or (exc.literal and _touches(text, value, spans))
    )
    return exc.template.format("" if hidden else f" {value!r}")


def _touches(text: str, value: str, spans: list[tuple[int, int]]) -> bool:
    """Tell whether ``value`` is missing from ``text`` or an occurrence overlaps a span."""
    found = False
    index = text.find(value)
    while index >= 0:
        found = True
        if any(index < end and start < index + len(value) for start, end in spans):
            return True
        index = text.find(value, index + 1)
    return not found


def secret_spans(text: str, *, paranoid: bool = False) -> list[tuple[int, int]]:
    """Return the ``(start, end)`` index ranges of ``text`` that may hold a secret.

    ``paranoid`` adds everything from the first ":" (after a scheme) to the last "@", the
    userinfo of a URI however mangled: too broad to redact, but not to quote from in errors.
    """
    match = SCHEME_RE.match(text)
    if match is None:
        spans = _conninfo_spans(text)
        for chunk in _CHUNK_RE.finditer(text):
            # "user:password@host" in a value, as in a mangled URI.
            colon, at = text.find(":", *chunk.span()), text.rfind("@", *chunk.span())
            if 0 <= colon < at and "://" not in chunk.group():
                spans.append((colon + 1, at))
    else:
        spans = _uri_spans(text, match.end())
    for inner in _INNER_URI_RE.finditer(text, 0 if match is None else match.end()):
        # A URI inside a value (libpq expands "dbname=postgresql://..."), up to a blank.
        end = _VALUE_END_RE.search(text, inner.end())
        spans += _uri_spans(text[: len(text) if end is None else end.start()], inner.end())
    colon, at = text.find(":", 0 if match is None else match.end()), text.rfind("@")
    if paranoid and 0 <= colon < at:
        spans.append((colon + 1, at))
    return spans


def _secret_forms(pieces: Iterable[str]) -> list[str]:
    """Return the pieces of DSN text that may be secrets, as written and decoded.

    They are also split at delimiters, since a span may hold more than the password
    (as in "alice:secret").
    """
    forms: list[str] = []
    for piece in pieces:
        forms += (piece, unquote(piece))
        try:
            forms.append(conninfo_token(piece, 0)[0])
        except Invalid:
            pass
    forms += [part for form in forms for part in _DELIMITERS_RE.split(form)]
    return [form for form in forms if form]


def _uri_spans(text: str, start: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    at = userinfo_end(text, start)
    colon = text.find(":", start, at) if at >= 0 else -1
    if colon >= 0:
        spans.append((colon + 1, at))
    for match in _QUERY_KEY_RE.finditer(text, start):
        if is_secret_key(unquote(match.group(1))):
            nxt = _NEXT_QUERY_KEY_RE.search(text, match.end())
            spans.append((match.end(), len(text) if nxt is None else nxt.start()))
    return spans


def userinfo_end(text: str, start: int) -> int:
    """Return the index of the "@" ending a URI's userinfo, or -1.

    Passwords pasted without percent-encoding may contain "/", "?" and "@": the userinfo
    ends at the last "@" before the query, and a "?" counts as part of the password when
    the text between it and the next "@" cannot be a ``key=value`` query parameter.
    """
    end = -1
    pos = start
    while True:
        question = text.find("?", pos)
        at = text.rfind("@", pos, len(text) if question < 0 else question)
        end = max(end, at)
        if question < 0:
            return end
        nxt = text.find("@", question + 1)
        if nxt < 0 or "=" in text[question + 1 : nxt] or "&" in text[question + 1 : nxt]:
            return end
        pos = question + 1


def _conninfo_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for match in _CONNINFO_KEY_RE.finditer(text):
        if not is_secret_key(match.group(1)):
            continue
        start = skip_space(text, match.end())
        try:
            _, end = conninfo_token(text, start)
        except Invalid:  # unterminated quote: everything after it may be the secret
            end = len(text)
        nxt = _NEXT_CONNINFO_KEY_RE.search(text, start)
        spans.append((match.end(), max(end, len(text) if nxt is None else nxt.start())))
    return spans


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each non-empty secret, plain or encoded, with ``***``."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.update(
                (
                    secret,
                    quote(secret, safe=""),
                    quote(secret),
                    repr(secret)[1:-1],
                    secret.replace("\\", "\\\\").replace("'", "\\'"),
                )
            )
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text
