"""Record: the read-only row every backend returns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

_MISSING: Any = object()


class Record:
    """A read-only row: ``r[0]``, ``r["name"]``, ``r.get()``, ``keys()``, ``dict(r)``.

    Iterating a record gives its values, like a tuple. Records of one result
    share a single name-to-index mapping.
    """

    __slots__ = ("_names", "_values")

    _values: tuple[Any, ...]
    _names: Mapping[str, int]

    def __init__(self, values: Sequence[Any], names: Mapping[str, int]) -> None:
        self._values = values if type(values) is tuple else tuple(values)
        self._names = names

    @overload
    def __getitem__(self, key: int | str) -> Any: ...
    @overload
    def __getitem__(self, key: slice) -> tuple[Any, ...]: ...
    def __getitem__(self, key: int | str | slice) -> Any:
        if type(key) is str:
            try:
                return self._values[self._names[key]]
            except KeyError:
                raise KeyError(key) from None
        return self._values[key]  # type: ignore[index]

    def get(self, key: str, default: Any = None) -> Any:
        """The value of column ``key``, or ``default`` if there is no such column.

        Args:
            key: A column name.
            default: What to answer when the row has no column of that name.

        Returns:
            The value, or ``default``.
        """
        index = self._names.get(key, _MISSING)
        return default if index is _MISSING else self._values[index]

    def keys(self) -> Iterator[str]:
        """Column names, in order."""
        return iter(self._names)

    def values(self) -> Iterator[Any]:
        """Column values, in order."""
        return iter(self._values)

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(name, value)`` pairs, in order."""
        return zip(self._names, self._values, strict=False)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record):
            return self._values == other._values and list(self._names) == list(other._names)
        if isinstance(other, tuple):
            return self._values == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        fields = " ".join(f"{name}={value!r}" for name, value in self.items())
        return f"<Record {fields}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Record, (self._values, dict(self._names)))


def column_index(names: Sequence[str]) -> dict[str, int]:
    """Map each column name to its position; on duplicates the first one wins."""
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        index.setdefault(name, position)
    return index
