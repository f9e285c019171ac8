"""The backend registry: one module per driver, imported on first use."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .base import Backend

#: backend name -> (module, the driver package it needs)
KNOWN: dict[str, tuple[str, str]] = {
    "psycopg": ("unipool.backends.psycopg", "psycopg"),
    "asyncpg": ("unipool.backends.asyncpg", "asyncpg"),
    "psqlpy": ("unipool.backends.psqlpy", "psqlpy"),
}


def installed() -> list[str]:
    """Names of the backends whose driver is importable."""
    return [name for name, (_, pkg) in KNOWN.items() if importlib.util.find_spec(pkg)]


def load(backend: str | Any) -> Backend:
    """The backend called ``backend`` (or ``backend`` itself, if it is one).

    Raises:
        ValueError: an unknown backend, or one whose driver is not installed or does not
            import.
    """
    if not isinstance(backend, str):
        if callable(getattr(backend, "connect_sync", None)):
            return backend  # type: ignore[no-any-return]
        raise TypeError(f"backend must be a name or a Backend, not {type(backend).__name__}")
    try:
        module_name, package = KNOWN[backend]
    except KeyError:
        known = ", ".join(f"{n!r}" for n in KNOWN)
        have = ", ".join(installed()) or "none"
        raise ValueError(
            f"unknown backend {backend!r}; known backends: {known} (installed: {have})"
        ) from None
    install = f'pip install "unipool[{backend}]"'
    if importlib.util.find_spec(package) is None:
        raise ValueError(
            f"backend {backend!r} needs the {package} driver, which is not installed: {install}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # installed, but broken (a missing library, a partial install)
        raise ValueError(
            f"backend {backend!r} cannot import the {package} driver ({exc}); "
            f"reinstall it: {install}"
        ) from exc
    return module.BACKEND  # type: ignore[no-any-return]
