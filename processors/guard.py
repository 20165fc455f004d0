"""The internal-error guard around every place where our code runs inside the host app.

Telemetry must never break a request: `guarded` calls a function, and when it raises, logs the
error and returns None. The first failure of each kind is logged with its traceback. Repeats are
counted and summarized at most once a minute, so a broken exporter cannot flood the app's log.

Tests set `RAISE_INTERNAL_ERRORS` so a bug in our code fails the test instead of being logged.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, TypeVar

_logger = logging.getLogger(__name__)

RAISE_INTERNAL_ERRORS = False
SUMMARY_INTERVAL_SECONDS = 60.0

_T = TypeVar("_T")
_lock = threading.Lock()
# what -> [failures since the last log line, monotonic time of that line, total failures]
_failures: dict[str, list[float]] = {}


def guarded(function: Callable[..., _T], *args: Any, what: str) -> _T | None:
    """Call ``function(*args)``; on an exception log it (rate-limited) and return None."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - this is the guard
        if RAISE_INTERNAL_ERRORS:
            raise
        report_internal_error(what, error)
        return None


def report_internal_error(what: str, error: BaseException) -> None:
    """Log a caught internal error: the first of its kind fully, repeats as a periodic count."""
    now = time.monotonic()
    with _lock:
        entry = _failures.get(what)
        if entry is None:
            _failures[what] = [0, now, 1]
            first = True
        else:
            entry[0] += 1
            entry[2] += 1
            first = False
            if now - entry[1] < SUMMARY_INTERVAL_SECONDS:
                return
            repeats, entry[0], entry[1] = entry[0], 0, now
    if first:
        _logger.error(
            "raptorflow-otel: %s failed (%s: %s); the app goes on with less telemetry.",
            what,
            type(error).__name__,
            error,
            exc_info=error,
        )
    else:
        _logger.error(
            "raptorflow-otel: %s failed %d more times in the last minute; latest: %s: %s",
            what,
            repeats,
            type(error).__name__,
            error,
        )


def failure_counts() -> dict[str, int]:
    """Return how many failures of each kind were seen since start-up (for health reports)."""
    with _lock:
        return {what: int(entry[2]) for what, entry in _failures.items()}
