"""What both faces share: errors they raise and the logger."""

from __future__ import annotations

import logging

from .._core import PoolCore
from .._errors import PoolTimeout

logger = logging.getLogger("unipool")


def pool_timeout(core: PoolCore, name: str, timeout: float) -> PoolTimeout:
    """The PoolTimeout for a request that waited ``timeout`` seconds in vain.

    Its ``__cause__`` is the last connection error, if the pool is failing to
    connect.
    """
    error = PoolTimeout(
        f"no connection available from pool {name!r} within {timeout:g} s "
        f"(size {core.size}, idle {core.idle}, waiting {core.waiting})"
    )
    error.__cause__ = core.last_connect_error
    return error


def is_fatal(error: BaseException) -> bool:
    """Whether a connect error cannot be cured by waiting (bad password, no database)."""
    sqlstate = getattr(error, "sqlstate", None) or ""
    return sqlstate[:2] in ("28", "3D")
