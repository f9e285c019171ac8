"""Values psqlpy cannot decode, or decodes unlike the other drivers, and numbers it
cannot send.

psqlpy cannot decode ``void``, ``char(n)`` or arrays holding NULL: these get
decoders of ours; ``uuid`` (a ``str`` from psqlpy) becomes `uuid.UUID`. What a
statement's results need is learnt on its first run (`Shape`). ``int`` and
``float`` values for ``numeric`` parameters, which psqlpy sends malformed,
become `Decimal`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import re
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal
from math import prod
from typing import Any

from psqlpy import exceptions as pe

from ..._errors import InterfaceError
from ..._record import column_index

_INT4 = struct.Struct(">i")
_ARRAY_HEAD = struct.Struct(">iiI")
_NUMERIC_HEAD = struct.Struct(">hhHh")
_INTERVAL = struct.Struct(">qii")
_NUMERIC_SPECIAL = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}
_Y2K = dt.datetime(2000, 1, 1)
_Y2K_UTC = _Y2K.replace(tzinfo=dt.timezone.utc)
_UUID_OID = 2950
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _unpacker(fmt: str) -> Callable[[bytes], Any]:
    unpack = struct.Struct(fmt).unpack
    return lambda b: unpack(b)[0]


def _numeric(b: bytes) -> Decimal:
    ndigits, weight, sign, dscale = _NUMERIC_HEAD.unpack_from(b)
    if sign in _NUMERIC_SPECIAL:
        return Decimal(_NUMERIC_SPECIAL[sign])
    digits = "".join(f"{d:04d}" for d in struct.unpack_from(f">{ndigits}H", b, 8))
    exponent = 4 * (weight + 1 - ndigits)
    if exponent < -dscale:  # trailing zeros of the last base-10000 digit
        digits = digits[: len(digits) + exponent + dscale]
    else:
        digits += "0" * (exponent + dscale)
    return Decimal((sign == 0x4000, tuple(int(c) for c in digits or "0"), -dscale))


def _interval(b: bytes) -> dt.timedelta:
    micros, days, months = _INTERVAL.unpack(b)
    return dt.timedelta(days=days + 30 * months, microseconds=micros)


_int8 = _unpacker(">q")


def _time(b: bytes) -> dt.time:
    return (_Y2K + dt.timedelta(microseconds=_int8(b))).time()


#: Binary decoders of array elements, by type OID (psqlpy's own cannot take NULLs).
_ELEMENTS: dict[int, Callable[[bytes], Any]] = {
    16: lambda b: b != b"\x00",
    17: bytes,
    18: bytes.decode, 19: bytes.decode, 25: bytes.decode, 142: bytes.decode,
    1042: bytes.decode, 1043: bytes.decode,
    20: _int8, 21: _unpacker(">h"), 23: _unpacker(">i"), 26: _unpacker(">I"),
    700: _unpacker(">f"), 701: _unpacker(">d"),
    114: json.loads, 3802: lambda b: json.loads(b[1:]),
    1082: lambda b: _Y2K.date() + dt.timedelta(days=_INT4.unpack(b)[0]),
    1083: _time,
    1114: lambda b: _Y2K + dt.timedelta(microseconds=_int8(b)),
    1184: lambda b: _Y2K_UTC + dt.timedelta(microseconds=_int8(b)),
    1186: _interval,
    1700: _numeric,
    _UUID_OID: lambda b: _uuid(b),
}  # fmt: skip


_MIXED = "columns sharing a name must have one type: give them distinct names"


def _array(b: bytes) -> list[Any]:
    """A binary array, NULLs included."""
    ndim, flags, oid = _ARRAY_HEAD.unpack_from(b)
    if not 0 <= ndim <= 6 or flags not in (0, 1):
        raise ValueError(f"not an array: {_MIXED}")
    if ndim == 0:
        return []
    element = _ELEMENTS.get(oid)
    if element is None:
        raise ValueError(f"psqlpy cannot decode arrays of type OID {oid} holding NULL")
    dims = [_INT4.unpack_from(b, 12 + 8 * i)[0] for i in range(ndim)]
    pos = 12 + 8 * ndim
    values: list[Any] = []
    for _ in range(prod(dims)):
        (size,) = _INT4.unpack_from(b, pos)
        pos += 4
        if size < 0:
            values.append(None)
        else:
            values.append(element(b[pos : pos + size]))
            pos += size
    if pos != len(b):
        raise ValueError(f"not an array: {_MIXED}")
    for size in reversed(dims[1:]):
        values = [values[i : i + size] for i in range(0, len(values), size)]
    return values


def _array_or_element(oid: int, b: bytes) -> Any:
    """An array, or else one ``oid`` value: the columns sharing an array's name may be either.

    (A cast names its column after the type: ``x::numeric, y::numeric[]`` are both "numeric".)
    """
    with contextlib.suppress(ValueError, struct.error):
        return _array(b)
    return _ELEMENTS[oid](b)


def _void(b: bytes) -> None:
    if b:
        raise ValueError(f"not a void: {_MIXED}")


def _text(b: bytes) -> str:
    text = b.decode()
    if "\x00" in text:  # never in PostgreSQL text: another type's binary form
        raise ValueError(f"not a text: {_MIXED}")
    return text


#: Element type OIDs by name, as psqlpy names array types ("_" + this).
_OIDS = {"bool": 16, "bytea": 17, "char": 18, "name": 19, "int8": 20, "int2": 21, "int4": 23,
         "text": 25, "oid": 26, "json": 114, "xml": 142, "float4": 700, "float8": 701,
         "bpchar": 1042, "varchar": 1043, "date": 1082, "time": 1083, "timestamp": 1114,
         "timestamptz": 1184, "interval": 1186, "numeric": 1700, "uuid": 2950,
         "jsonb": 3802}  # fmt: skip

#: Decoders for the types psqlpy refuses, by the type name in its error.
_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "void": _void,
    "bpchar": _text,
    "citext": _text,
}
_FAILED_TYPE = re.compile(r"Cannot convert (?:PostgreSQL type )?(\S+) into Python type")


def _decoder_for(error: BaseException) -> tuple[str, Callable[[bytes], Any] | None]:
    """The type named in psqlpy's decoding error, and a decoder of ours for it."""
    text = str(error)
    match = _FAILED_TYPE.search(text)
    name = match.group(1) if match else text.rsplit(": ", 1)[-1].strip()
    if name.startswith("_"):
        oid = _OIDS.get(name[1:])
        return name, _array if oid is None else functools.partial(_array_or_element, oid)
    return name, _DECODERS.get(name)


def _raw(b: bytes) -> bytes:
    return b


_new_uuid = object.__new__
_set = object.__setattr__


def _uuid(b: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=b)``, as ``UUID.__init__`` ends, without its checks (a third faster)."""
    if len(b) != 16:
        raise ValueError("not a uuid")
    value: uuid.UUID = _new_uuid(uuid.UUID)
    _set(value, "int", int.from_bytes(b, "big"))
    _set(value, "is_safe", uuid.SafeUUID.unknown)
    return value


def _first_value(rows: list[tuple[Any, ...]], i: int) -> Any:
    return next((row[i] for row in rows if row[i] is not None), None)


def _first_scalar(value: Any) -> Any:
    while type(value) is list:
        value = next((v for v in value if v is not None), None)
    return value


def _to_uuid(value: Any) -> Any:
    if type(value) is list:
        return [_to_uuid(v) for v in value]
    return None if value is None else uuid.UUID(value)


def _is_uuid(raw: bytes, value: Any) -> bool:
    """Whether psqlpy's raw bytes for ``value`` are a uuid, or an array of uuid."""
    if type(value) is list:
        return bool(_ARRAY_HEAD.unpack_from(raw)[2] == _UUID_OID)
    return len(raw) == 16


class Stale(Exception):
    """A statement's results no longer decode as learnt (or never did)."""


class Shape:
    """What one statement's results need: names, decoders for psqlpy, uuid columns."""

    __slots__ = ("decoders", "index", "keys", "names", "pending", "uuids")

    def __init__(self, names: tuple[str, ...], decoders: dict[str, Any] | None) -> None:
        self.names = names
        self.index = column_index(names)
        #: psqlpy's ``custom_decoders``: by lower-cased column name
        self.keys = [name.lower() for name in names]
        self.decoders = decoders or None
        #: uuid columns sharing their name with another: converted after decoding
        self.uuids: tuple[int, ...] = ()
        #: columns not seen holding a value yet (they may turn out to be uuid)
        self.pending = tuple(i for i, key in enumerate(self.keys) if key not in (decoders or ()))

    def decode(self, result: Any) -> list[tuple[Any, ...]]:
        """The rows of ``result``.

        Raises:
            Stale: a value psqlpy or a decoder of ours cannot decode, or a row of
                another width: the statement changed, or needs what is not known.
        """
        try:
            rows: list[tuple[Any, ...]] = result.result(
                as_tuple=True, custom_decoders=self.decoders
            )
        except Exception as exc:  # psqlpy's RustToPyValueMappingError, or a decoder's
            raise Stale(str(exc)) from exc
        if rows and len(rows[0]) != len(self.names):
            raise Stale(f"{len(rows[0])} columns, not {len(self.names)}")
        if not self.uuids:
            return rows
        uuids = self.uuids
        fixed = []
        for row in rows:
            values = list(row)
            for i in uuids:
                values[i] = _to_uuid(values[i])
            fixed.append(tuple(values))
        return fixed

    def learn_uuids(self, result: Any, rows: list[tuple[Any, ...]]) -> bool:
        """Settle the pending columns holding a value in ``rows``; True if a uuid was found."""
        pending, candidates = [], []
        for i in self.pending:
            scalar = _first_scalar(_first_value(rows, i))
            if scalar is None:
                pending.append(i)
            elif type(scalar) is str and _UUID_TEXT.fullmatch(scalar):
                candidates.append(i)
        self.pending = tuple(pending)
        if not candidates:
            return False
        probe = {**(self.decoders or {}), **{self.keys[i]: _raw for i in candidates}}
        raw = result.result(as_tuple=True, custom_decoders=probe)
        found = [i for i in candidates if _is_uuid(_first_value(raw, i), _first_value(rows, i))]
        decoders, uuids = dict(self.decoders or {}), list(self.uuids)
        for i in found:
            if self.keys.count(self.keys[i]) > 1:
                uuids.append(i)
            else:
                decoders[self.keys[i]] = _array if type(_first_value(rows, i)) is list else _uuid
        self.decoders, self.uuids = decoders or None, tuple(uuids)
        return bool(found)


NO_SHAPE = Shape((), None)


def decode_new(shape: Shape, result: Any) -> list[tuple[Any, ...]]:
    """The rows of ``result`` by a shape just learnt: what it cannot decode is an error."""
    try:
        return shape.decode(result)
    except Stale as exc:
        raise InterfaceError(f"psqlpy: cannot decode a value: {exc}") from exc.__cause__


def find_decoders(result: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Decoders for the columns psqlpy cannot decode, found one column at a time."""
    keys = [n.lower() for n in names]
    decoders: dict[str, Any] = {}
    for key in dict.fromkeys(keys):
        others = {k: _raw for k in keys if k != key}
        try:
            result.result(as_tuple=True, custom_decoders=others)
        except pe.RustToPyValueMappingError as exc:
            type_name, decoder = _decoder_for(exc)
            if decoder is None:
                raise InterfaceError(
                    f"psqlpy cannot decode column {key!r} of type {type_name}: cast it in "
                    f"SQL (e.g. {key}::text)"
                ) from exc
            decoders[key] = decoder  # also for the columns sharing its name: it checks
    return decoders


def is_numeric(value: Any) -> bool:
    kind = type(value)
    if kind is list:
        return any(is_numeric(v) for v in value)
    return kind is int or kind is float


def as_decimal(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [as_decimal(v) for v in value]
    if kind is int:
        return Decimal(value)
    if kind is float:
        return Decimal(repr(value))
    return value
