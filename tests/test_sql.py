"""What the pool tells from a statement's text, and from a refused connection's message."""

from __future__ import annotations

import pytest

from unipool._sql import leaves_session_clean
from unipool.backends._session import refusal_sqlstate


@pytest.mark.parametrize(
    "sql",
    [
        "select 1",
        "SELECT 1;",
        "  -- a comment\n select 1 ;  ",
        "insert into t values ($1)",
        "with x as (select 1) select * from x",
        "begin",
        "commit",
    ],
)
def test_statements_that_leave_the_session_clean(sql: str) -> None:
    assert leaves_session_clean(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "set search_path to x",
        "select set_config('a.b', 'c', false)",
        "select pg_advisory_lock(1)",
        "create temp table t (x int)",
        "select * into t from u",
        "select 1; set statement_timeout = '777s'",
        "select 1;select 2",  # the pool cannot tell what the second one did
        "select ';' ; select 2",
        "select 'a;b'",  # a literal: counted as two statements, a reset too many, no leak
        "discard all",
    ],
)
def test_statements_that_may_change_the_session(sql: str) -> None:
    assert not leaves_session_clean(sql)


@pytest.mark.parametrize(
    ("message", "sqlstate"),
    [
        ('FATAL:  too many connections for role "app"', "53300"),  # a limit, not a login error
        ('FATAL:  too many connections for database "db"', "53300"),
        ("FATAL:  sorry, too many clients already", "53300"),
        ('FATAL:  password authentication failed for user "app"', "28P01"),
        ('FATAL:  role "nobody" does not exist', "28000"),
        ('FATAL:  database "nodb" does not exist', "3D000"),
        ('FATAL:  database "db" is not currently accepting connections', "55000"),
        ("FATAL:  the database system is starting up", "57P03"),
        ("something else", None),
    ],
)
def test_a_refused_connect_is_classified_by_its_message(message: str, sqlstate: str | None) -> None:
    assert refusal_sqlstate(message) == sqlstate
