"""Record, the row every backend returns: a tuple of values with names."""

from __future__ import annotations

import pickle

import pytest

from unipool import Record
from unipool._record import column_index

NAMES = column_index(["id", "name", "id"])


def row(*values: object) -> Record:
    return Record(values, NAMES)


def test_access_by_position_name_and_slice() -> None:
    r = row(1, "x", 2)
    assert (r[0], r[-1], r["name"], r[1:]) == (1, 2, "x", ("x", 2))
    assert r["id"] == 1  # a duplicate column name: the first one wins
    with pytest.raises(KeyError, match="nope"):
        r["nope"]
    assert (r.get("name"), r.get("nope"), r.get("nope", 0)) == ("x", None, 0)


def test_iterates_like_a_tuple() -> None:
    r = row(1, "x", 2)
    assert (len(r), list(r), list(r.values())) == (3, [1, "x", 2], [1, "x", 2])
    assert "x" in r
    assert "name" not in r
    assert list(r.keys()) == ["id", "name"]
    assert dict(row(1, "x")) == {"id": 1, "name": "x"}


def test_equality_and_hash() -> None:
    assert row(1, "x") == row(1, "x")
    assert row(1, "x") != row(1, "y")
    assert row(1, "x") != Record((1, "x"), column_index(["a", "b"]))
    assert row(1, "x") == (1, "x")
    assert row(1, "x") != [1, "x"]
    assert hash(row(1, "x")) == hash((1, "x"))
    assert {row(1, "x"), row(1, "x")} == {row(1, "x")}


def test_repr_names_each_value() -> None:
    assert repr(row(1, "x")) == "<Record id=1 name='x'>"


def test_pickles() -> None:
    r = row(1, "x")
    copy = pickle.loads(pickle.dumps(r))
    assert copy == r
    assert copy["name"] == "x"
