"""ConnInfo, the parts of a DSN, and parse_dsn, which reads them from either form of DSN."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote

from .secret import REDACTED, error_message, is_secret_key
from .syntax import KEY_RE, SCHEME_RE, Invalid, conninfo_token, conninfo_value, skip_space

__all__ = ["ConnInfo", "parse_dsn"]

_SCHEMES = frozenset({"postgresql", "postgres"})
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
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# An invalid port is only quoted if it looks like a mistyped port, not like mangled userinfo.
_PORTLIKE_RE = re.compile(r"[A-Za-z0-9+\-]{1,8}")


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
        return " ".join(f"{key}={conninfo_value(value)}" for key, value in items)


def _redacted_params(params: Mapping[str, str]) -> dict[str, str]:
    return {k: REDACTED if is_secret_key(k) else v for k, v in params.items()}


def _port_text(port: int | None) -> str:
    return "" if port is None else str(port)


def _uri_host(host: str, port: int | None) -> str:
    text = f"[{quote(host, safe=':')}]" if ":" in host else quote(host, safe="")
    return text if port is None else f"{text}:{port}"


def _query_value(key: str, value: str, redact: bool) -> str:
    if redact and is_secret_key(key):
        return REDACTED
    return quote(value, safe="/," if key in ("host", "port") else "")


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
    except Invalid as exc:
        message = error_message(exc, text, environ.get("PGPASSWORD", ""))
    # Raised outside the handler so that no exception holding DSN text is chained to it.
    raise ValueError(message)


def _parse_options(text: str) -> dict[str, str]:
    match = SCHEME_RE.match(text)
    if match is None:
        return _parse_conninfo(text)
    if match.group(1).lower() not in _SCHEMES:
        raise Invalid("invalid DSN: unknown scheme{}", match.group(1))
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
            raise Invalid('invalid DSN: query parameter{} without "="', item)
        if "=" in raw_value:  # as libpq: a "=" in a value must be written %3D
            raise Invalid('invalid DSN: query parameter{} with a second "="', raw_key)
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
            raise Invalid("invalid DSN: malformed IPv6 host{}", item)
        host, after = item[1:end], item[end + 1 :]
        if after and not after.startswith(":"):
            raise Invalid("invalid DSN: unexpected text after IPv6 host{}", after)
        return host, after[1:]
    host, _, port = item.partition(":")
    return host, port


def _decode(text: str, what: str) -> str:
    if "%" not in text:
        return text
    if text.count("%") != len(_PCT_RE.findall(text)) or "%00" in text:
        raise Invalid(f"invalid DSN: bad percent-encoding in {what}")
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise Invalid(f"invalid DSN: {what} is not UTF-8 once percent-decoded") from None


def _check_key(key: str) -> str:
    if not KEY_RE.fullmatch(key):
        raise Invalid("invalid DSN: invalid parameter name{}", key)
    return key


def _parse_conninfo(text: str) -> dict[str, str]:
    """Parse libpq ``key=value`` pairs: values may be quoted, backslash escapes a character."""
    opts: dict[str, str] = {}
    n = len(text)
    i = skip_space(text, 0)
    while i < n:
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        i = skip_space(text, i)
        if i >= n or text[i] != "=":
            shown = key if KEY_RE.fullmatch(key) else None
            raise Invalid('invalid DSN: missing "=" after parameter name{}', shown)
        if not key:
            raise Invalid("invalid DSN: missing parameter name before '='")
        i = skip_space(text, i + 1)  # libpq skips blanks after "=" too
        value, i = conninfo_token(text, i)
        opts[_check_key(key)] = value
        i = skip_space(text, i)
    return opts


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
        raise Invalid(f"invalid DSN: {len(ports)} ports given for {len(hosts)} hosts")
    pairs = tuple(zip(hosts, ports, strict=True))
    return () if all(pair == ("", None) for pair in pairs) else pairs


def _port(text: str, source: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        shown = text if _PORTLIKE_RE.fullmatch(text) else None
        raise Invalid("invalid port{} in " + source, shown, literal=source == "DSN")
    return int(text)
