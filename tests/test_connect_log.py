"""Failed connection attempts are logged without flooding the log during an outage."""

from __future__ import annotations

import logging

import pytest

from unipool import ConnectError
from unipool._core.connect_log import ConnectLog


def test_an_outage_logs_a_warning_a_minute_and_the_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="unipool")
    log = ConnectLog("p")
    error = ConnectError("connection refused", sqlstate="08001")
    for i in range(600):  # ten a second for a minute
        log.failed(error, 100.0 + i / 10)
    log.failed(error, 100.0 + ConnectLog.EVERY)
    log.succeeded(161.5)
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    warnings = [m for level, m in levels if level == logging.WARNING]
    assert warnings == [
        "pool 'p': connection failed: connection refused",
        "pool 'p': connection failed (601 attempts failed in 60 s): connection refused",
    ]
    assert sum(level == logging.DEBUG for level, _ in levels) == 599
    assert levels[-1] == (
        logging.INFO,
        "pool 'p': connected again after 601 failed attempts in 61.5 s",
    )
    caplog.clear()
    log.failed(error, 200.0)  # a new streak warns at once
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
