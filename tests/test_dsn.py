"""DSN parsing, rendering and redaction, without any driver."""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unipool._dsn import (
    REDACTED,
    UNPARSABLE,
    ConnInfo,
    check_params,
    parse_dsn,
    redact_dsn,
    root_cert,
    scrub,
)

PG_ENV = (
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
    "PGOPTIONS",
    "PGTARGETSESSIONATTRS",
    "PGSSLROOTCERT",
)
SETTINGS = settings(max_examples=300, deadline=None, database=None)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PG_ENV:
        monkeypatch.delenv(var, raising=False)


# -- URIs ------------------------------------------------------------------------------------


def test_uri_all_parts() -> None:
    info = parse_dsn(
        "postgresql://alice:s%40cr%2Fet@db.example:6432/my%20db"
        "?sslmode=verify-full&application_name=worker%201&connect_timeout=5"
    )
    assert info.hosts == (("db.example", 6432),)
    assert info.user == "alice"
    assert info.password == "s@cr/et"
    assert info.dbname == "my db"
    assert dict(info.params) == {
        "sslmode": "verify-full",
        "application_name": "worker 1",
        "connect_timeout": "5",
    }


def test_postgres_scheme_and_minimal_uris() -> None:
    assert parse_dsn("postgres://h/d") == ConnInfo(hosts=(("h", None),), dbname="d")
    assert parse_dsn("postgresql://") == ConnInfo()
    assert parse_dsn("postgresql:///d") == ConnInfo(dbname="d")
    assert parse_dsn("postgresql://u@h") == ConnInfo(hosts=(("h", None),), user="u")
    assert parse_dsn("POSTGRESQL://h") == ConnInfo(hosts=(("h", None),))


def test_uri_ipv6_hosts() -> None:
    assert parse_dsn("postgresql://[::1]:5433/d").hosts == (("::1", 5433),)
    assert parse_dsn("postgresql://u:p@[2001:db8::7]/d").hosts == (("2001:db8::7", None),)
    assert parse_dsn("postgresql://[fe80::1%25eth0]/d").hosts == (("fe80::1%eth0", None),)


def test_uri_multi_host() -> None:
    info = parse_dsn("postgresql://h1:5432,h2:5433,[::1]:5434/d?target_session_attrs=read-write")
    assert info.hosts == (("h1", 5432), ("h2", 5433), ("::1", 5434))
    assert info.params == {"target_session_attrs": "read-write"}
    assert parse_dsn("postgresql://h1,h2:5433/d").hosts == (("h1", None), ("h2", 5433))
    assert parse_dsn("postgresql://h1,h2/d").hosts == (("h1", None), ("h2", None))


def test_uri_query_overrides_authority() -> None:
    info = parse_dsn("postgresql://u:p@h:1/d?host=other&user=v&password=q&dbname=e&port=2")
    assert info == ConnInfo(hosts=(("other", 2),), user="v", password="q", dbname="e")


def test_uri_unix_socket_hosts() -> None:
    expected = (("/var/run/postgresql", None),)
    assert parse_dsn("postgresql:///d?host=/var/run/postgresql").hosts == expected
    assert parse_dsn("postgresql://%2Fvar%2Frun%2Fpostgresql/d").hosts == expected
    info = parse_dsn("postgresql://u@/d?host=/tmp,db.example&port=,5433")
    assert info.hosts == (("/tmp", None), ("db.example", 5433))


def test_uri_port_without_host_and_empty_password() -> None:
    assert parse_dsn("postgresql://:5433/d").hosts == (("", 5433),)
    assert parse_dsn("postgresql://u:@h").password == ""
    assert parse_dsn("postgresql://u@h").password is None


def test_uri_ssl_true_means_require() -> None:
    assert parse_dsn("postgresql://h?ssl=true").params == {"sslmode": "require"}


def test_uri_unencoded_at_in_password() -> None:
    info = parse_dsn("postgresql://u:p@ss@h/d")
    assert (info.user, info.password, info.hosts) == ("u", "p@ss", (("h", None),))


# -- key=value -------------------------------------------------------------------------------


def test_conninfo_basic() -> None:
    info = parse_dsn(
        "host=db.example port=6432 user=alice password=secret dbname=app sslmode=disable"
    )
    assert info == ConnInfo(
        hosts=(("db.example", 6432),),
        user="alice",
        password="secret",
        dbname="app",
        params={"sslmode": "disable"},
    )


def test_conninfo_quoting_and_escapes() -> None:
    info = parse_dsn(
        r"user = 'o\'brien' password='a b\\c' dbname=my\ db options='-c search_path=x,y'"
    )
    assert info.user == "o'brien"
    assert info.password == "a b\\c"
    assert info.dbname == "my db"
    assert info.params == {"options": "-c search_path=x,y"}
    assert parse_dsn("password=''").password == ""
    assert parse_dsn("host=h\\").hosts == (("h", None),)  # a final backslash escapes nothing


def test_conninfo_multi_host() -> None:
    assert parse_dsn("host=a,b port=1,2").hosts == (("a", 1), ("b", 2))
    assert parse_dsn("host=a,b port=7").hosts == (("a", 7), ("b", 7))
    assert parse_dsn("host=a,b,/tmp").hosts == (("a", None), ("b", None), ("/tmp", None))
    assert parse_dsn("host=a,b port=,5433").hosts == (("a", None), ("b", 5433))
    assert parse_dsn("port=5433").hosts == (("", 5433),)


def test_conninfo_later_keys_win() -> None:
    assert parse_dsn("dbname=a dbname=b").dbname == "b"


def test_blank_dsn_is_empty() -> None:
    assert parse_dsn(None) == ConnInfo()
    assert parse_dsn("") == ConnInfo()
    assert parse_dsn("   ") == ConnInfo()


# -- environment -----------------------------------------------------------------------------


def test_environment_supplies_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PGHOST": "h1,h2",
        "PGPORT": "5432,5433",
        "PGUSER": "envuser",
        "PGPASSWORD": "envpass",
        "PGDATABASE": "envdb",
        "PGSSLMODE": "require",
        "PGAPPNAME": "app",
        "PGCONNECT_TIMEOUT": "7",
        "PGOPTIONS": "-c work_mem=64MB",
        "PGTARGETSESSIONATTRS": "primary",
        "PGSSLROOTCERT": "/etc/ca.crt",
    }
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    expected = ConnInfo(
        hosts=(("h1", 5432), ("h2", 5433)),
        user="envuser",
        password="envpass",
        dbname="envdb",
        params={
            "sslmode": "require",
            "application_name": "app",
            "connect_timeout": "7",
            "options": "-c work_mem=64MB",
            "target_session_attrs": "primary",
            "sslrootcert": "/etc/ca.crt",
        },
    )
    assert parse_dsn(None) == expected
    assert parse_dsn("") == expected
    assert parse_dsn(None, env=env) == expected
    assert parse_dsn(None, env={}) == ConnInfo()


def test_environment_fills_missing_fields_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGUSER", "envuser")
    monkeypatch.setenv("PGPASSWORD", "envpass")
    monkeypatch.setenv("PGPORT", "6543")
    monkeypatch.setenv("PGSSLMODE", "require")
    info = parse_dsn("postgresql://alice@db.example/app?sslmode=disable")
    assert info.user == "alice"
    assert info.password == "envpass"
    assert info.hosts == (("db.example", 6543),)
    assert info.params == {"sslmode": "disable"}
    assert parse_dsn("host=h port=1").hosts == (("h", 1),)


def test_environment_host_with_dsn_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "/var/run/postgresql")
    assert parse_dsn("port=5433 dbname=d").hosts == (("/var/run/postgresql", 5433),)


def test_empty_environment_values_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "")
    monkeypatch.setenv("PGUSER", "")
    assert parse_dsn(None) == ConnInfo()


def test_bad_environment_port_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPORT", "nope")
    with pytest.raises(ValueError, match="invalid port 'nope' in PGPORT"):
        parse_dsn("host=h")


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("mysql://u:pw@h/d", "invalid DSN: unknown scheme 'mysql'"),
        ("postgresql://h:abc/d", "invalid port 'abc' in DSN"),
        ("postgresql://h:0/d", "invalid port '0' in DSN"),
        ("postgresql://h:65536/d", "invalid port '65536' in DSN"),
        ("host=h port=abc", "invalid port 'abc' in DSN"),
        ("host=a,b,c port=1,2", "invalid DSN: 2 ports given for 3 hosts"),
        ("host=h password='open", "invalid DSN: unterminated quoted value"),
        ("host=h dbname", "invalid DSN: missing \"=\" after parameter name 'dbname'"),
        ("host=h =x", "invalid DSN: missing parameter name before '='"),
        ("host=h bad-key=1", "invalid DSN: invalid parameter name 'bad-key'"),
        ("postgresql://h/d?sslmode", "invalid DSN: query parameter 'sslmode' without \"=\""),
        ("postgresql://h/d?a=b=c", "invalid DSN: query parameter 'a' with a second \"=\""),
        ("postgresql://h/d%zz", "invalid DSN: bad percent-encoding in database name"),
        ("postgresql://h/d%00", "invalid DSN: bad percent-encoding in database name"),
        ("postgresql://h/%ff", "invalid DSN: database name is not UTF-8 once percent-decoded"),
        ("postgresql://[::1/d", "invalid DSN: malformed IPv6 host '[::1'"),
        ("postgresql://[::1]x/d", "invalid DSN: unexpected text after IPv6 host 'x'"),
    ],
)
def test_invalid_dsn_messages(dsn: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_dsn(dsn)
    assert str(info.value) == message
    assert info.value.__context__ is None
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:hunter22@h:hunter22/d",  # the bad port is the password
        "postgresql://u:hunter2?2@h/d",  # unencoded "?" in the password
        "postgresql://u:hunter22db.example:5432/d",  # missing "@"
        "host=h password=hunter 22 dbname=d",  # unquoted blank in the password
        "host=h password='hunter22",  # unterminated quote
        "user='alice password='hunter22 dbname=d",  # quote in the wrong place
        "postgresql//u:hunter22@h/d",  # broken scheme, read as key=value
    ],
)
def test_errors_never_show_the_password(dsn: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_dsn(dsn)
    for fragment in ("hunter", "22"):
        assert fragment not in str(info.value)


def test_errors_never_show_the_environment_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "1234567")
    monkeypatch.setenv("PGPORT", "1234567")
    with pytest.raises(ValueError) as info:
        parse_dsn(None)
    assert "1234567" not in str(info.value)


# -- ConnInfo --------------------------------------------------------------------------------


def test_conninfo_is_frozen_hashable_and_picklable() -> None:
    info = parse_dsn("postgresql://u:p@h1,h2:5433/d?sslmode=require")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.user = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.params["sslmode"] = "disable"  # type: ignore[index]
    assert hash(info) == hash(parse_dsn(info.to_uri()))
    assert {info, parse_dsn(info.to_conninfo())} == {info}
    assert pickle.loads(pickle.dumps(info)) == info
    assert dataclasses.replace(info, user="v").user == "v"


def test_conninfo_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="field"):
        ConnInfo(params={"password": "x"})
    with pytest.raises(ValueError, match="invalid port"):
        ConnInfo(hosts=(("h", 0),))
    assert ConnInfo(params={"a": "b"}).params == {"a": "b"}


def test_conninfo_repr_and_str_hide_secrets() -> None:
    info = parse_dsn("host=h user=u password=hunter22 sslpassword=keypass22 dbname=d")
    assert info.password == "hunter22"
    assert info.params == {"sslpassword": "keypass22"}
    for text in (repr(info), str(info), info.to_uri(redact=True), info.to_conninfo(redact=True)):
        assert "hunter22" not in text
        assert "keypass22" not in text
        assert REDACTED in text
    assert str(info) == "postgresql://u:***@h/d?sslpassword=***"
    assert info.to_conninfo(redact=True) == "host=h user=u password=*** dbname=d sslpassword=***"


def test_to_uri_and_to_conninfo() -> None:
    info = ConnInfo(
        hosts=(("db.example", 5432), ("::1", None)),
        user="al ice",
        password="p@ss:w/rd",
        dbname="my/db",
        params={"options": "-c a=b", "application_name": "x"},
    )
    assert info.to_uri() == (
        "postgresql://al%20ice:p%40ss%3Aw%2Frd@db.example:5432,[::1]/my%2Fdb"
        "?options=-c%20a%3Db&application_name=x"
    )
    assert info.to_conninfo() == (
        "host=db.example,::1 port=5432, user='al ice' password=p@ss:w/rd dbname=my/db "
        "options='-c a=b' application_name=x"
    )
    sockets = ConnInfo(hosts=(("/tmp", None), ("h", 5433)), dbname="d")
    assert sockets.to_uri() == "postgresql:///d?host=/tmp,h&port=,5433"
    assert ConnInfo(password="").to_conninfo() == "password=''"


HOSTS = st.sampled_from(["db.example", "10.0.0.1", "::1", "fe80::1%eth0", "/tmp/pg sock", "h_2"])
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
CONNINFOS = st.builds(
    ConnInfo,
    hosts=st.lists(st.tuples(HOSTS, st.none() | st.integers(1, 65535)), max_size=3).map(tuple),
    user=st.none() | TEXT.filter(bool),
    password=st.none() | TEXT,
    dbname=st.none() | TEXT.filter(bool),
    params=st.dictionaries(
        st.sampled_from(["sslmode", "options", "application_name", "target_session_attrs"]),
        TEXT,
        max_size=3,
    ),
)


@SETTINGS
@given(CONNINFOS)
def test_renderings_round_trip(info: ConnInfo) -> None:
    assert parse_dsn(info.to_uri(), env={}) == info
    assert parse_dsn(info.to_conninfo(), env={}) == info
    if info.password is not None:
        other = dataclasses.replace(info, password="other")
        assert repr(info) == repr(other)
        assert str(info) == str(other)
        assert info.to_conninfo(redact=True) == other.to_conninfo(redact=True)


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        ("postgresql://u:hunter2@h:5432/d", "postgresql://u:***@h:5432/d"),
        ("postgres://u:p%40ss@h1,h2/d?sslmode=require", "postgres://u:***@h1,h2/d?sslmode=require"),
        (
            "postgresql://u@h/d?password=hunter2&sslmode=x",
            "postgresql://u@h/d?password=***&sslmode=x",
        ),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("postgresql://u:@h/d", "postgresql://u:@h/d"),
        (
            "postgresql://u:p@h/d?application_name=a@b",
            "postgresql://u:***@h/d?application_name=a@b",
        ),
        ("postgresql://u:ab/cd@h/d", "postgresql://u:***@h/d"),
        ("postgresql://u:ab?cd@h/d", "postgresql://u:***@h/d"),
        ("postgresql://u:a@b@h/d", "postgresql://u:***@h/d"),
        ("host=h password=hunter2 dbname=d", "host=h password=*** dbname=d"),
        ("host=h password = 'hun ter\\'2' dbname=d", "host=h password =*** dbname=d"),
        ("host=h password=hun ter2 dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='hunter2", "host=h password=***"),
        ("host=h passwd=hunter2 pwd=x sslpassword=y", "host=h passwd=*** pwd=*** sslpassword=***"),
        ("host=h pasword=hunter2", "host=h pasword=***"),
        ("host=h passfile=/home/u/.pgpass", "host=h passfile=/home/u/.pgpass"),
        ("  host=h  ", "host=h"),
        ("", ""),
        (None, ""),
        ("mysql://u:hunter2@h/d", UNPARSABLE),
        ("postgresql://u:hun?te=r2@h/d", UNPARSABLE),
        ("postgresql://u:12?a=b@h/d", UNPARSABLE),
        ("password hunter2", UNPARSABLE),
        ("postgresql://u:hunter2@h:abc/d", UNPARSABLE),
        ("postgresql://h/d@x", UNPARSABLE),  # "h/d" may be userinfo with a "/" in a password
    ],
)
def test_redact_dsn(dsn: str | None, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted
    assert redact_dsn(redact_dsn(dsn)) == redacted


def test_redact_dsn_never_raises() -> None:
    for junk in ("\x00", "'", "=", "postgresql://[", "%", "a=b=c", "postgresql://@@@:::???"):
        assert isinstance(redact_dsn(junk), str)


# -- TLS parameters --------------------------------------------------------------------------


def test_certificate_checks_need_the_root_certificate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    default = tmp_path / ".postgresql" / "root.crt"
    info = parse_dsn("host=h sslmode=verify-ca")
    assert root_cert(info) == str(default)  # libpq's default
    missing = f"the sslrootcert file '{default}' does not exist"
    with pytest.raises(ValueError, match=re.escape(missing)):
        check_params(info)
    default.parent.mkdir()
    default.write_text("")
    check_params(info)
    given = parse_dsn(f"host=h sslmode=verify-full sslrootcert={tmp_path / 'ca.crt'}")
    assert root_cert(given) == str(tmp_path / "ca.crt")
    with pytest.raises(ValueError, match=re.escape("ca.crt' does not exist")):
        check_params(given)
    check_params(parse_dsn("host=h sslmode=verify-full sslrootcert=system"))


# -- scrub -----------------------------------------------------------------------------------


def test_scrub() -> None:
    message = (
        'connection to "postgresql://u:p%2Fss%21@h/d" failed: password "p/ss!" rejected '
        "(also p/ss%21)"
    )
    assert scrub(message, ["p/ss!", ""]) == (
        'connection to "postgresql://u:***@h/d" failed: password "***" rejected (also ***)'
    )
    assert scrub("nothing here", []) == "nothing here"
    assert scrub("a 'it\\'s' b", ["it's"]) == "a '***' b"


# -- properties: passwords never leak --------------------------------------------------------

PASSWORDS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00*"), min_size=4, max_size=16
)
NOISE = st.sampled_from(list("'\"=@:/?&[]% \\,#;aZ9"))

# A DSN form: the text before the password (ending with what announces it, which is left
# alone: a mangled "password=" no longer says that a password follows), the password as
# written, and the text after it (whose first character, the delimiter, is left alone).
Form = Callable[[str], tuple[str, str, str, str]]


def _uri(password: str) -> tuple[str, str, str, str]:
    suffix = "@db.example:5432/app?sslmode=require"
    return "postgresql://alice", ":", quote(password, safe=""), suffix


def _uri_raw(password: str) -> tuple[str, str, str, str]:
    return "postgresql://alice", ":", password, "@db.example:5432/app?sslmode=require"


def _uri_query(password: str) -> tuple[str, str, str, str]:
    prefix = "postgresql://alice@db.example:5432/app?sslmode=require&"
    return prefix, "password=", quote(password, safe=""), "&application_name=x"


def _uri_query_raw(password: str) -> tuple[str, str, str, str]:
    assume("&" not in password)  # "&" ends a raw query value: the rest is not the password
    prefix = "postgresql://alice@db.example:5432/app?sslmode=require&"
    return prefix, "password=", password, "&application_name=x"


def _conninfo(password: str) -> tuple[str, str, str, str]:
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return "host=db.example port=5432 user=alice ", "password='", escaped, "' dbname=app"


def _conninfo_raw(password: str) -> tuple[str, str, str, str]:
    # A raw value ends at a blank and may not start with a quote: those are other DSNs.
    assume(not any(char.isspace() for char in password) and not password.startswith("'"))
    return "host=db.example port=5432 user=alice ", "password=", password, " dbname=app"


FORMS: list[Form] = [_uri, _uri_raw, _uri_query, _uri_query_raw, _conninfo, _conninfo_raw]


@st.composite
def _mutated(draw: st.DrawFn, text: str, keep: int) -> str:
    """``text`` with one random edit, leaving the character at index ``keep`` alone."""
    kind = draw(st.sampled_from(["none", "insert", "delete", "replace"]))
    positions = [i for i in range(len(text) + (kind == "insert")) if i != keep]
    if kind == "none" or not positions:
        return text
    i = draw(st.sampled_from(positions))
    if kind == "insert":
        return text[:i] + draw(NOISE) + text[i:]
    if kind == "delete":
        return text[:i] + text[i + 1 :]
    return text[:i] + draw(NOISE) + text[i + 1 :]


@SETTINGS
@given(PASSWORDS, st.sampled_from(FORMS), st.data())
def test_password_never_leaks(password: str, form: Form, data: st.DataObject) -> None:
    """For DSNs that say where the password is, however mangled elsewhere, it never shows."""
    head, announce, secret, suffix = form(password)
    prefix = data.draw(_mutated(head, len(head))) + announce
    suffix = data.draw(_mutated(suffix, 0))
    if data.draw(st.booleans()):
        suffix = suffix.replace("5432", "54x2").replace("sslmode=require", "sslmode")
    if data.draw(st.booleans()):
        prefix = prefix.replace("postgresql", "mysql")
    assume(password not in prefix and password not in suffix and password not in UNPARSABLE)
    dsn = prefix + secret + suffix

    assert password not in redact_dsn(dsn)
    try:
        info = parse_dsn(dsn, env={})
    except ValueError as exc:
        assert password not in str(exc)
        assert exc.__context__ is None
    else:
        # Once parsed, the password field never shows (a mangled DSN may of course have put
        # the password elsewhere: in a host, a port or a parameter).
        other = dataclasses.replace(info, password=None if info.password is None else "x")
        assert repr(info) == repr(other)
        assert str(info) == str(other)
