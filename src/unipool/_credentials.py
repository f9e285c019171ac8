"""What a pool connects with: the parameters built from the DSN and the options, and
credentials that rotate — a ``password`` or ``connect_kwargs`` given as a callable is
called for every new connection (IAM tokens, a secrets manager), in the thread or task
that opens it; a coroutine function is awaited in an async pool."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

from ._dsn import parse_dsn
from ._errors import ConnectError
from ._options import PoolOptions
from .backends.base import ConnectParams


def rotates(options: PoolOptions) -> bool:
    """Whether connection arguments must be worked out for each new connection."""
    return callable(options.password) or callable(options.connect_kwargs)


def resolve(params: ConnectParams, options: PoolOptions) -> ConnectParams:
    """``params`` with the callables' answers for one new connection (blocking pool).

    Raises:
        ConnectError: a callable failed, answered a coroutine, or answered nonsense.
    """
    kwargs = _call("connect_kwargs", options.connect_kwargs, asynchronous=False)
    password = _call("password", options.password, asynchronous=False)
    return _with(params, kwargs, password)


async def aresolve(params: ConnectParams, options: PoolOptions) -> ConnectParams:
    """:func:`resolve` for an async pool: a callable's awaitable answer is awaited."""
    kwargs = _call("connect_kwargs", options.connect_kwargs, asynchronous=True)
    if inspect.isawaitable(kwargs):
        kwargs = await _awaited("connect_kwargs", options.connect_kwargs, kwargs)
    password = _call("password", options.password, asynchronous=True)
    if inspect.isawaitable(password):
        password = await _awaited("password", options.password, password)
    return _with(params, kwargs, password)


def _call(option: str, value: Any, *, asynchronous: bool) -> Any:
    if not callable(value):
        return value
    try:
        answer = value()
    except Exception as exc:
        raise _failed(option, value, exc) from exc
    if inspect.isawaitable(answer) and not asynchronous:
        close = getattr(answer, "close", None)
        if close is not None:
            close()  # never awaited: no "coroutine was never awaited" warning
        raise ConnectError(
            f"the {option} callable {_name(value)} is async: a blocking pool needs a plain "
            "function (or open the pool in async use)",
            permanent=True,  # waiting cannot mend the program
        )
    return answer


async def _awaited(option: str, value: Any, answer: Any) -> Any:
    try:
        return await answer
    except Exception as exc:
        raise _failed(option, value, exc) from exc


def _with(params: ConnectParams, kwargs: Any, password: Any) -> ConnectParams:
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ConnectError(
            f"connect_kwargs must answer a mapping, not {type(kwargs).__name__}", permanent=True
        )
    if password is not None and not isinstance(password, str):
        raise ConnectError(
            f"the password must be a str, not {type(password).__name__}", permanent=True
        )
    merged = {**(kwargs or {}), **params.kwargs}  # set_connect_args() wins: it came later
    secrets = params.secrets
    if password:
        merged["password"] = password
    if merged.get("password"):
        secrets = (*secrets, str(merged["password"]))
    return dataclasses.replace(params, kwargs=merged, secrets=secrets)


def _failed(option: str, value: Any, exc: Exception) -> ConnectError:
    # The callable's own message may carry a secret: only its type is shown (the
    # exception itself is the __cause__).
    return ConnectError(f"the {option} callable {_name(value)} failed: {type(exc).__name__}")


def _name(value: Any) -> str:
    return getattr(value, "__qualname__", None) or type(value).__name__


def connect_params(dsn: str | None, options: PoolOptions, extra: dict[str, Any]) -> ConnectParams:
    """What a pool connects with: the DSN, the options' driver arguments (``extra``, from
    ``set_connect_args()``, over them) and the secrets no message may show."""
    secrets: tuple[str, ...] = ()
    try:
        password = parse_dsn(dsn).password
        secrets = (password,) if password else ()
    except ValueError:
        pass
    static = dict(options.connect_kwargs) if isinstance(options.connect_kwargs, Mapping) else {}
    if isinstance(options.password, str):
        static["password"] = options.password
    kwargs = {**static, **extra}
    if kwargs.get("password"):
        secrets += (str(kwargs["password"]),)
    return ConnectParams(
        dsn=dsn,
        connect_timeout=options.connect_timeout,
        command_timeout=options.command_timeout,
        kwargs=kwargs,
        secrets=secrets,
        factory=options.connect,
        pgbouncer=options.pgbouncer,
    )


def wants_writable(dsn: str | None) -> bool:
    """Whether the DSN asks for a server that takes writes (``target_session_attrs``)."""
    try:
        attrs = parse_dsn(dsn).params.get("target_session_attrs")
    except ValueError:
        return False
    return attrs in ("read-write", "primary")
