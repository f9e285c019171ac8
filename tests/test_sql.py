"""What the pool tells from a statement's text: whether the session surely stays clean."""

from __future__ import annotations

import pytest

from unipool._sql import leaves_session_clean


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
