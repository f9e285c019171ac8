"""DSN parsing, rendering and redaction, without any driver.

Two input forms are accepted, as by libpq: URIs (``postgresql://`` or ``postgres://``) and
``key=value`` conninfo strings. Missing fields are filled from the libpq environment
variables. Passwords never reach ``repr``, redacted renderings or error messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote

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

#: What a password is replaced with.
REDACTED = "***"
#: What :func:`redact_dsn` returns for a DSN it cannot redact with confidence.
UNPARSABLE = "<dsn: unparsable, hidden>"

_SCHEMES = frozenset({"postgresql", "postgres"})
# Keys whose values are hidden: these, any key holding one of _SECRET_WORDS, and near
# misspellings of "password" (a misspelled key is a likely reason to log a DSN).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
_SECRET_WORDS = ("pass", "pwd", "secret")
_NOT_SECRET = frozenset({"passfile"})
_FIELDS = frozenset({"host", "port", "user", "password", "dbname"})
_ENV_VARS = (
    ("PGHOST", "host"),
    ("PGPORT", "port"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
    ("PGDATABASE", "dbname"),
    ("PGSSLMODE", "sslmode"),
    ("PGAPPNAME", "application_name"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGOPTIONS", "options"),
    ("PGTARGETSESSIONATTRS", "target_session_attrs"),
    ("PGSSLROOTCERT", "sslrootcert"),
)

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# Where a redacted value may end at the latest: the next "key=" of a URI query / conninfo.
_NEXT_QUERY_KEY_RE = re.compile(r"&[A-Za-z_%][A-Za-z0-9_.%]*=")
_NEXT_CONNINFO_KEY_RE = re.compile(r"\s+[A-Za-z_][A-Za-z0-9_.]*\s*=")
_VALUE_END_RE = re.compile(r"\s")
_INNER_URI_RE = re.compile(r"://")
_CHUNK_RE = re.compile(r"\S+")
_DELIMITERS_RE = re.compile(r"[\s:@/?&='\"]+")
_QUERY_KEY_RE = re.compile(r"([^=&?]*)=")
_CONNINFO_KEY_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*=")
_BARE_RE = re.compile(r"[^\s'\\]+")
# An invalid port is only quoted if it looks like a mistyped port, not like mangled userinfo.
_PORTLIKE_RE = re.compile(r"[A-Za-z0-9+\-]{1,8}")


class _Invalid(ValueError):
    """Raised when a DSN is malformed; ``template`` has one ``{}`` for the offending value.

    ``literal`` values are copied from the DSN text and are only shown when no occurrence
    of them touches a part of the text that may hold a secret.
    """

    def __init__(self, template: str, value: str | None = None, *, literal: bool = True) -> None:
        super().__init__(template)
        self.template = template
        self.value = value
        self.literal = literal

    def render(self, text: str, spans: list[tuple[int, int]], secrets: list[str]) -> str:
        """Return the message, quoting the offending value only if it cannot be a secret."""
        value = self.value
        hidden = (
            not value
            or _is_secret_key(value)  # e.g. "password0000" for a key whose "=" went missing
            or any(value in secret or secret in value for secret in secrets if secret)
            or (self.literal and _touches(text, value, spans))
        )
        return self.template.format("" if hidden else f" {value!r}")


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


@dataclass(frozen=True)
class ConnInfo:
    """The parts of a PostgreSQL DSN.

    ``hosts`` lists ``(host, port)`` pairs in connection order; a host starting with "/" is
    a unix-socket directory, an empty host means the driver's default host, a ``None`` port
    the driver's default port. ``params`` holds every other option (sslmode, options,
    application_name, target_session_attrs, ...) and is read-only.
    """

    hosts: tuple[tuple[str, int | None], ...] = ()
    user: str | None = None
    password: str | None = None
    dbname: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hosts = tuple((str(host), port) for host, port in self.hosts)
        for _, port in hosts:
            if port is not None and not 0 < port < 65536:
                raise ValueError(f"invalid port {port!r}")
        params = dict(self.params)
        for key in params:
            if key in _FIELDS:
                raise ValueError(f"{key!r} is a ConnInfo field, not a parameter")
        object.__setattr__(self, "hosts", hosts)
        object.__setattr__(self, "params", MappingProxyType(params))

    def __repr__(self) -> str:
        password = None if self.password is None else REDACTED
        return (
            f"ConnInfo(hosts={self.hosts!r}, user={self.user!r}, password={password!r}, "
            f"dbname={self.dbname!r}, params={_redacted_params(self.params)!r})"
        )

    def __str__(self) -> str:
        return self.to_uri(redact=True)

    def __hash__(self) -> int:
        items = frozenset(self.params.items())
        return hash((self.hosts, self.user, self.password, self.dbname, items))

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.hosts, self.user, self.password, self.dbname, dict(self.params))
        return (ConnInfo, args)

    def to_uri(self, redact: bool = False) -> str:
        """Render as a ``postgresql://`` URI; ``redact`` replaces secrets with ``***``."""
        out = ["postgresql://"]
        if self.user or self.password is not None:
            out.append(quote(self.user or "", safe=""))
            if self.password is not None:
                out.append(":" + (REDACTED if redact else quote(self.password, safe="")))
            out.append("@")
        query: dict[str, str] = {}
        if any(host.startswith("/") for host, _ in self.hosts):
            # Socket directories are clearer (and better supported) as query parameters.
            query["host"] = ",".join(host for host, _ in self.hosts)
            if any(port is not None for _, port in self.hosts):
                query["port"] = ",".join(_port_text(port) for _, port in self.hosts)
        else:
            out.append(",".join(_uri_host(host, port) for host, port in self.hosts))
        if self.dbname:
            out.append("/" + quote(self.dbname, safe=""))
        query.update(self.params)
        if query:
            pairs = (f"{quote(k, safe='')}={_query_value(k, v, redact)}" for k, v in query.items())
            out.append("?" + "&".join(pairs))
        return "".join(out)

    def to_conninfo(self, redact: bool = False) -> str:
        """Render as a libpq ``key=value`` string; ``redact`` replaces secrets with ``***``."""
        items: list[tuple[str, str]] = []
        if any(host for host, _ in self.hosts):
            items.append(("host", ",".join(host for host, _ in self.hosts)))
        if any(port is not None for _, port in self.hosts):
            items.append(("port", ",".join(_port_text(port) for _, port in self.hosts)))
        if self.user:
            items.append(("user", self.user))
        if self.password is not None:
            items.append(("password", REDACTED if redact else self.password))
        if self.dbname:
            items.append(("dbname", self.dbname))
        items.extend((_redacted_params(self.params) if redact else self.params).items())
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in items)


def _redacted_params(params: Mapping[str, str]) -> dict[str, str]:
    return {k: REDACTED if _is_secret_key(k) else v for k, v in params.items()}


def _is_secret_key(key: str) -> bool:
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


def _port_text(port: int | None) -> str:
    return "" if port is None else str(port)


def _uri_host(host: str, port: int | None) -> str:
    text = f"[{quote(host, safe=':')}]" if ":" in host else quote(host, safe="")
    return text if port is None else f"{text}:{port}"


def _query_value(key: str, value: str, redact: bool) -> str:
    if redact and _is_secret_key(key):
        return REDACTED
    return quote(value, safe="/," if key in ("host", "port") else "")


def _conninfo_value(value: str) -> str:
    if _BARE_RE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- parsing ---------------------------------------------------------------------------------


def parse_dsn(dsn: str | None, *, env: Mapping[str, str] | None = None) -> ConnInfo:
    """Parse a URI or ``key=value`` DSN, filling missing fields from the environment.

    ``None`` or "" takes everything from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
    PGSSLMODE, PGAPPNAME, PGCONNECT_TIMEOUT, PGOPTIONS and PGTARGETSESSIONATTRS; ``env``
    replaces ``os.environ`` as their source. Raises ``ValueError`` naming the problem,
    never the password.
    """
    environ = os.environ if env is None else env
    text = (dsn or "").strip()
    try:
        return _build(_parse_options(text), environ)
    except _Invalid as exc:
        spans = _secret_spans(text, paranoid=True)
        secrets = _secret_forms([text[start:end] for start, end in spans])
        secrets.append(environ.get("PGPASSWORD", ""))
        # Values are only quoted when they cannot be secrets; scrubbing then only matters for
        # a password equal to words of the message, which 1 or 2 characters would mangle.
        message = scrub(exc.render(text, spans, secrets), (s for s in secrets if len(s) > 2))
    # Raised outside the handler so that no exception holding DSN text is chained to it.
    raise ValueError(message)


def _parse_options(text: str) -> dict[str, str]:
    match = _SCHEME_RE.match(text)
    if match is None:
        return _parse_conninfo(text)
    if match.group(1).lower() not in _SCHEMES:
        raise _Invalid("invalid DSN: unknown scheme{}", match.group(1))
    return _parse_uri(text[match.end() :])


def _parse_uri(rest: str) -> dict[str, str]:
    main, _, query = rest.partition("?")
    authority, slash, path = main.partition("/")
    userinfo, at, hostspec = authority.rpartition("@")
    opts: dict[str, str] = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            opts["user"] = _decode(user, "user name")
        if colon:
            opts["password"] = _decode(password, "password")
    if hostspec:
        pairs = [_split_host_port(item) for item in hostspec.split(",")]
        opts["host"] = ",".join(_decode(host, "host") for host, _ in pairs)
        if any(port for _, port in pairs):
            opts["port"] = ",".join(port for _, port in pairs)
    if slash and path:
        opts["dbname"] = _decode(path, "database name")
    for item in query.split("&") if query else ():
        if not item:
            continue
        raw_key, eq, raw_value = item.partition("=")
        if not eq:
            raise _Invalid('invalid DSN: query parameter{} without "="', item)
        if "=" in raw_value:  # as libpq: a "=" in a value must be written %3D
            raise _Invalid('invalid DSN: query parameter{} with a second "="', raw_key)
        key = _check_key(_decode(raw_key, "parameter name"))
        value = _decode(raw_value, "query parameter value")
        if key == "ssl" and value == "true":  # as libpq, for JDBC compatibility
            key, value = "sslmode", "require"
        opts[key] = value
    return opts


def _split_host_port(item: str) -> tuple[str, str]:
    if item.startswith("["):
        end = item.find("]")
        if end < 2:
            raise _Invalid("invalid DSN: malformed IPv6 host{}", item)
        host, after = item[1:end], item[end + 1 :]
        if after and not after.startswith(":"):
            raise _Invalid("invalid DSN: unexpected text after IPv6 host{}", after)
        return host, after[1:]
    host, _, port = item.partition(":")
    return host, port


def _decode(text: str, what: str) -> str:
    if "%" not in text:
        return text
    if text.count("%") != len(_PCT_RE.findall(text)) or "%00" in text:
        raise _Invalid(f"invalid DSN: bad percent-encoding in {what}")
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise _Invalid(f"invalid DSN: {what} is not UTF-8 once percent-decoded") from None


def _check_key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise _Invalid("invalid DSN: invalid parameter name{}", key)
    return key


def _parse_conninfo(text: str) -> dict[str, str]:
    """Parse libpq ``key=value`` pairs: values may be quoted, backslash escapes a character."""
    opts: dict[str, str] = {}
    n = len(text)
    i = _skip_space(text, 0)
    while i < n:
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        i = _skip_space(text, i)
        if i >= n or text[i] != "=":
            shown = key if _KEY_RE.fullmatch(key) else None
            raise _Invalid('invalid DSN: missing "=" after parameter name{}', shown)
        if not key:
            raise _Invalid("invalid DSN: missing parameter name before '='")
        i = _skip_space(text, i + 1)  # libpq skips blanks after "=" too
        value, i = _conninfo_token(text, i)
        opts[_check_key(key)] = value
        i = _skip_space(text, i)
    return opts


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _conninfo_token(text: str, i: int) -> tuple[str, int]:
    """Read one value at ``i``; return it and the index just after it."""
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
        raise _Invalid("invalid DSN: unterminated quoted value")
    return "".join(chars), i


def _build(opts: dict[str, str], environ: Mapping[str, str]) -> ConnInfo:
    port_source = "DSN"
    for var, key in _ENV_VARS:
        if key not in opts and environ.get(var):
            opts[key] = environ[var]
            if key == "port":
                port_source = var
    hosts = _hosts(opts.pop("host", None), opts.pop("port", None), port_source)
    user = opts.pop("user", None) or None
    password = opts.pop("password", None)
    dbname = opts.pop("dbname", None) or None
    return ConnInfo(hosts, user, password, dbname, opts)


def _hosts(
    host_text: str | None, port_text: str | None, source: str
) -> tuple[tuple[str, int | None], ...]:
    hosts = [host.strip() for host in host_text.split(",")] if host_text is not None else []
    ports = [_port(p, source) for p in port_text.split(",")] if port_text is not None else []
    if not hosts:
        hosts = [""] if ports else []
    if not ports:
        ports = [None] * len(hosts)
    elif len(ports) == 1:
        ports *= len(hosts)
    elif len(ports) != len(hosts):
        raise _Invalid(f"invalid DSN: {len(ports)} ports given for {len(hosts)} hosts")
    pairs = tuple(zip(hosts, ports, strict=True))
    return () if all(pair == ("", None) for pair in pairs) else pairs


def _port(text: str, source: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        shown = text if _PORTLIKE_RE.fullmatch(text) else None
        raise _Invalid("invalid port{} in " + source, shown, literal=source == "DSN")
    return int(text)


# -- redaction -------------------------------------------------------------------------------


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
    masked = _mask(text, _secret_spans(text))
    try:
        info = parse_dsn(masked, env={})
    except ValueError:
        return UNPARSABLE
    secrets = [info.password, *(v for k, v in info.params.items() if _is_secret_key(k))]
    if any(secret not in (None, "", REDACTED) for secret in secrets):
        return UNPARSABLE
    match = _SCHEME_RE.match(masked)
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


def _secret_spans(text: str, *, paranoid: bool = False) -> list[tuple[int, int]]:
    """Return the ``(start, end)`` index ranges of ``text`` that may hold a secret.

    ``paranoid`` adds everything from the first ":" (after a scheme) to the last "@", the
    userinfo of a URI however mangled: too broad to redact, but not to quote from in errors.
    """
    match = _SCHEME_RE.match(text)
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
            forms.append(_conninfo_token(piece, 0)[0])
        except _Invalid:
            pass
    forms += [part for form in forms for part in _DELIMITERS_RE.split(form)]
    return [form for form in forms if form]


def _uri_spans(text: str, start: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    at = _userinfo_end(text, start)
    colon = text.find(":", start, at) if at >= 0 else -1
    if colon >= 0:
        spans.append((colon + 1, at))
    for match in _QUERY_KEY_RE.finditer(text, start):
        if _is_secret_key(unquote(match.group(1))):
            nxt = _NEXT_QUERY_KEY_RE.search(text, match.end())
            spans.append((match.end(), len(text) if nxt is None else nxt.start()))
    return spans


def _userinfo_end(text: str, start: int) -> int:
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


def _uri_unambiguous(text: str, start: int) -> bool:
    """Tell whether the standard URI reading agrees with the paranoid one on the userinfo."""
    authority_end = len(text)
    for sep in "/?":
        found = text.find(sep, start)
        if found >= 0:
            authority_end = min(authority_end, found)
    standard = text.rfind("@", start, authority_end)
    if standard != _userinfo_end(text, start):
        return False
    # "host:port" before an "@" further on may be a password holding "?" or "/".
    return standard >= 0 or ":" not in text[start:authority_end] or "@" not in text[start:]


def _conninfo_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for match in _CONNINFO_KEY_RE.finditer(text):
        if not _is_secret_key(match.group(1)):
            continue
        start = _skip_space(text, match.end())
        try:
            _, end = _conninfo_token(text, start)
        except _Invalid:  # unterminated quote: everything after it may be the secret
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


# -- TCP and TLS parameters ------------------------------------------------------------------

#: libpq's TCP parameters; every backend honours them (see `tcp_options` for the defaults).
TCP_PARAMS = (
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
#: libpq's values for ``sslmode``.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

#: unipool's keepalive defaults, for what a DSN leaves out (libpq leaves them to the system,
#: typically 2 hours of idleness, then 9 probes 75 s apart).
KEEPALIVES_IDLE = 60
KEEPALIVES_INTERVAL = 10
KEEPALIVES_COUNT = 3


@dataclass(frozen=True)
class TcpOptions:
    """How a connection's TCP socket notices a peer that went silent.

    Times in whole seconds except ``user_timeout`` (milliseconds, as libpq's
    ``tcp_user_timeout``); 0 leaves a setting to the operating system.
    """

    keepalives: bool = True
    idle: int = KEEPALIVES_IDLE
    interval: int = KEEPALIVES_INTERVAL
    count: int = KEEPALIVES_COUNT
    user_timeout: int = (KEEPALIVES_IDLE + KEEPALIVES_INTERVAL * KEEPALIVES_COUNT) * 1000

    def as_libpq(self) -> dict[str, str]:
        """The libpq parameters for these options."""
        return {
            "keepalives": "1" if self.keepalives else "0",
            "keepalives_idle": str(self.idle),
            "keepalives_interval": str(self.interval),
            "keepalives_count": str(self.count),
            "tcp_user_timeout": str(self.user_timeout),
        }


def tcp_options(*sources: Mapping[str, Any]) -> TcpOptions:
    """The TCP options that libpq parameters in ``sources`` (later ones win) ask for.

    What is not given takes unipool's defaults: keepalives on, first probe after 60 s of
    idleness, then every 10 s, the connection dropped after 3 unanswered probes; and a
    ``tcp_user_timeout`` as long as that whole keepalive cycle (90 s), so that data the
    peer never acknowledges fails as soon as silence would. With ``keepalives=0``, or a
    keepalive setting left to the system (0), the user timeout is left to the system too.

    Raises:
        ValueError: a value that is not a non-negative whole number.
    """
    given: dict[str, int] = {}
    for source in sources:
        for key in TCP_PARAMS:
            if key in source:
                given[key] = _whole_number(key, source[key])
    keepalives = given.get("keepalives", 1) != 0
    idle = given.get("keepalives_idle", KEEPALIVES_IDLE)
    interval = given.get("keepalives_interval", KEEPALIVES_INTERVAL)
    count = given.get("keepalives_count", KEEPALIVES_COUNT)
    user_timeout = given.get("tcp_user_timeout")
    if user_timeout is None:
        cycle = keepalives and idle > 0 and interval > 0 and count > 0
        user_timeout = (idle + interval * count) * 1000 if cycle else 0
    return TcpOptions(keepalives, idle, interval, count, user_timeout)


def _whole_number(key: str, value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
        shown = f", not {text!r}" if _SHOWN_VALUE_RE.fullmatch(text) else ""
        raise ValueError(f"invalid DSN: {key} must be a whole number >= 0{shown}")
    number = int(text)
    if number > 2**31 - 1:
        raise ValueError(f"invalid DSN: {key} must be below 2**31, not {number}")
    return number


# Values of non-secret parameters are quoted in errors only if short and plain.
_SHOWN_VALUE_RE = re.compile(r"[A-Za-z0-9.+-]{1,12}")


def check_params(info: ConnInfo) -> None:
    """Check the parameters whose values every backend interprets (no I/O).

    Raises:
        ValueError: a bad ``sslmode``, ``connect_timeout`` or TCP parameter, naming it;
            or a certificate check asked for without the root certificate file.
    """
    sslmode = info.params.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        shown = f" {sslmode!r}" if _SHOWN_VALUE_RE.fullmatch(sslmode) else ""
        raise ValueError(f"invalid DSN: sslmode{shown} is not one of {', '.join(SSL_MODES)}")
    if sslmode in ("verify-ca", "verify-full"):
        root = root_cert(info)
        if root != "system" and not os.path.isfile(root):
            raise ValueError(
                f"invalid DSN: sslmode={sslmode} needs the certificate of the server's "
                f"authority, and the sslrootcert file {root!r} does not exist"
            )
    tcp_options(info.params)
    if "connect_timeout" in info.params:
        _whole_number("connect_timeout", info.params["connect_timeout"])


def root_cert(info: ConnInfo) -> str:
    """The ``sslrootcert`` in force: the DSN's, else libpq's default ``~/.postgresql/root.crt``."""
    given = info.params.get("sslrootcert")
    if given:
        return given
    return os.path.join(os.path.expanduser("~"), ".postgresql", "root.crt")


def system_ca_file() -> str | None:
    """The system's bundle of trusted certificates, as OpenSSL finds it (``sslrootcert=system``)."""
    import ssl

    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            return path
    return None
