"""DSNs safe to log: passwords replaced, or the whole DSN hidden when in doubt."""

from __future__ import annotations

from .conninfo import parse_dsn
from .secret import REDACTED, is_secret_key, secret_spans, userinfo_end
from .syntax import SCHEME_RE

__all__ = ["UNPARSABLE", "redact_dsn"]

#: What :func:`redact_dsn` returns for a DSN it cannot redact with confidence.
UNPARSABLE = "<dsn: unparsable, hidden>"


def redact_dsn(dsn: str | None) -> str:
    """Return ``dsn`` with its passwords replaced by ``***``; never raises.

    A DSN that cannot be parsed, or whose structure is ambiguous enough that a password
    might survive, is replaced as a whole by :data:`UNPARSABLE`.
    """
    try:
        return _redact(dsn)
    except Exception:
        return UNPARSABLE


def _redact(dsn: str | None) -> str:
    text = (dsn or "").strip()
    if not text:
        return ""
    masked = _mask(text, secret_spans(text))
    try:
        info = parse_dsn(masked, env={})
    except ValueError:
        return UNPARSABLE
    secrets = [info.password, *(v for k, v in info.params.items() if is_secret_key(k))]
    if any(secret not in (None, "", REDACTED) for secret in secrets):
        return UNPARSABLE
    match = SCHEME_RE.match(masked)
    if match is not None and not _uri_unambiguous(masked, match.end()):
        return UNPARSABLE
    return masked


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(span for span in spans if span[0] < span[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    out: list[str] = []
    last = 0
    for start, end in merged:
        out.extend((text[last:start], REDACTED))
        last = end
    out.append(text[last:])
    return "".join(out)


def _uri_unambiguous(text: str, start: int) -> bool:
    """Tell whether the standard URI reading agrees with the paranoid one on the userinfo."""
    authority_end = len(text)
    for sep in "/?":
        found = text.find(sep, start)
        if found >= 0:
            authority_end = min(authority_end, found)
    standard = text.rfind("@", start, authority_end)
    if standard != userinfo_end(text, start):
        return False
    # "host:port" before an "@" further on may be a password holding "?" or "/".
    return standard >= 0 or ":" not in text[start:authority_end] or "@" not in text[start:]
