"""Pool options: defaults, aliases and validation, all before any I/O (unipool._options)."""

from __future__ import annotations

import math
from typing import Any

import pytest

import unipool
from unipool._options import PoolOptions, build_options

BAD = [
    ({"min_size": 1.5}, TypeError, "min_size must be an int, not float"),
    ({"max_queries": True}, TypeError, "max_queries must be an int, not bool"),
    ({"max_waiting": -1}, ValueError, "max_waiting must not be negative, not -1"),
    ({"acquire_timeout": "30"}, TypeError, "acquire_timeout must be a number of seconds, not str"),
    ({"acquire_timeout": -1}, ValueError, "acquire_timeout must be a non-negative number"),
    ({"max_lifetime": math.nan}, ValueError, "max_lifetime must be a non-negative number"),
    ({"check": True}, TypeError, "check must be a number of seconds, not bool"),
    ({"init": "setup.sql"}, TypeError, "init must be a callable, not str"),
    (
        {"connect_kwargs": [("a", 1)]},
        TypeError,
        "connect_kwargs must be a mapping or a callable, not list",
    ),
    ({"pgbouncer": 1}, TypeError, "pgbouncer must be True or False, not int"),
    ({"name": 7}, TypeError, "name must be a str, not int"),
    ({"max_size": 0}, ValueError, "max_size must be at least 1, not 0"),
    ({"min_size": 5, "max_size": 2}, ValueError, r"min_size \(5\) must not exceed max_size \(2\)"),
    (
        {"max_idle": 1, "max_inactive_connection_lifetime": 2},
        TypeError,
        "pass either 'max_inactive_connection_lifetime' or 'max_idle', not both",
    ),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD)
def test_bad_options_are_refused(options: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        build_options(**options)
    with pytest.raises(error, match=message):
        unipool.connect("postgresql://h/d", **options)


def test_defaults() -> None:
    options = build_options()
    assert (options.min_size, options.max_size, options.acquire_timeout) == (1, 10, 30.0)
    assert options.connect_kwargs == {}
    assert options.name.startswith("pool-")
    assert build_options().name != options.name


def test_asyncpg_alias_sets_max_idle() -> None:
    assert build_options(max_inactive_connection_lifetime=5).max_idle == 5.0


def test_check_false_means_never() -> None:
    assert build_options(check=False).check is None


def test_seconds_become_floats_and_none_stays() -> None:
    options = build_options(acquire_timeout=2, max_lifetime=None, leak_timeout=3)
    assert type(options.acquire_timeout) is float
    assert options.max_lifetime is None
    assert options.leak_timeout == 3.0


def test_min_size_alone_raises_max_size() -> None:
    assert build_options(min_size=3).max_size == PoolOptions.max_size
    assert build_options(min_size=30).max_size == 30


def test_connect_kwargs_are_copied() -> None:
    given = {"application_name": "a"}
    options = build_options(connect_kwargs=given)
    given["application_name"] = "b"
    assert options.connect_kwargs == {"application_name": "a"}


def test_with_changes_validates_again() -> None:
    options = build_options(min_size=2, name="p")
    assert options.with_changes(max_size=4).max_size == 4
    assert options.with_changes(max_size=4).name == "p"
    with pytest.raises(ValueError, match="must not exceed"):
        options.with_changes(max_size=1)


def test_connect_refuses_a_dsn_that_is_not_text() -> None:
    with pytest.raises(TypeError, match="dsn must be a str or None, not bytes"):
        unipool.connect(b"postgresql://h/d")  # type: ignore[arg-type]
