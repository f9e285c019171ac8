"""Sources and destinations of COPY data: a path, a file object or an iterable of bytes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

CHUNK = 64 * 1024


def _as_bytes(chunk: Any) -> bytes:
    return chunk.encode() if isinstance(chunk, str) else bytes(chunk)


def chunks(source: Any) -> Iterator[bytes]:
    """The bytes of ``source``: a path, a readable file object, bytes, or an iterable of bytes."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            yield from iter(lambda: file.read(CHUNK), b"")
    elif hasattr(source, "read"):
        while chunk := source.read(CHUNK):
            yield _as_bytes(chunk)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
    else:
        for chunk in source:
            yield _as_bytes(chunk)


async def achunks(source: Any) -> AsyncIterator[bytes]:
    """:func:`chunks`, also accepting an async iterable of bytes."""
    if hasattr(source, "__aiter__"):
        async for chunk in source:
            yield _as_bytes(chunk)
    else:
        for chunk in chunks(source):
            yield chunk


@contextmanager
def sink(output: Any) -> Iterator[Any]:
    """A writable binary file for ``output``: a path (opened here) or a file object."""
    if isinstance(output, (str, os.PathLike)):
        with open(output, "wb") as file:
            yield file
    elif hasattr(output, "write"):
        yield output
    else:
        raise TypeError(f"output must be a path or a writable file, not {type(output).__name__}")
