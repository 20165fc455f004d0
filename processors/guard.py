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

from opentelemetry.sdk.trace import SpanProcessor

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


class GuardedSpanProcessor(SpanProcessor):
    """Span processor wrapper that logs (rate-limited) what the wrapped processor raises, instead of raising it.

    The SDK calls span processors inside ``tracer.start_span`` and ``span.end()``, on the app's
    request thread, and does not catch what they raise. Every processor the distro adds goes
    through this wrapper, so a bug in one costs telemetry, not a request (tests that set
    `RAISE_INTERNAL_ERRORS` get the exception instead).
    """

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self._name = type(inner).__name__

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        guarded(self.inner.on_start, span, parent_context, what=f"{self._name}.on_start")

    def _on_ending(self, span: Any) -> None:
        on_ending = getattr(self.inner, "_on_ending", None)
        if on_ending is not None:
            guarded(on_ending, span, what=f"{self._name}._on_ending")

    def on_end(self, span: Any) -> None:
        guarded(self.inner.on_end, span, what=f"{self._name}.on_end")

    def shutdown(self) -> None:
        guarded(self.inner.shutdown, what=f"{self._name}.shutdown")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return guarded(self.inner.force_flush, timeout_millis, what=f"{self._name}.force_flush") is not False
