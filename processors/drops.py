"""Counts of telemetry that never reached its destination, and rate-limited log lines about them.

A destination that is down must not flood the app's log or grow its memory: exporters drop what
they cannot send, and `record_dropped` counts it by destination and reason for
`get_health_status()`. The first drop of a destination is logged at once. After that, one line a
minute at most sums up what was dropped since the previous line, so a receiver that stays down for
an hour adds about 60 lines to the log.

`RateLimitFilter` applies the same rule to the log lines of the OpenTelemetry exporters and batch
processors, which log one line per failed batch or per dropped span.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable

_logger = logging.getLogger(__name__)

SUMMARY_INTERVAL_SECONDS = 60.0

_lock = threading.Lock()
_dropped: dict[str, Counter] = {}
# destination -> (monotonic time of the last log line, Counter of drops since that line)
_pending_log: dict[str, tuple[float, Counter]] = {}

_HINTS = {
    "sentry": "Check SENTRY_DSN and that the Sentry server is reachable",
    "otlp": "Check OTEL_EXPORTER_OTLP_ENDPOINT and that the Collector is running",
}


def record_dropped(destination: str, reason: str, count: int = 1, unit: str = "items", clock: Callable[[], float] = time.monotonic) -> None:
    """Count ``count`` items lost on the way to ``destination`` and log it, rate-limited."""
    if count <= 0:
        return
    now = clock()
    with _lock:
        _dropped.setdefault(destination, Counter())[reason] += count
        last, since = _pending_log.get(destination, (None, Counter()))
        since[reason] += count
        if last is not None and now - last < SUMMARY_INTERVAL_SECONDS:
            _pending_log[destination] = (last, since)
            return
        _pending_log[destination] = (now, Counter())
    hint = _HINTS.get(destination.split()[0], "Check that the destination is reachable")
    summary = ", ".join(f"{number} ({why})" for why, number in sorted(since.items()))
    if last is None:
        _logger.warning("raptorflow-otel: %s export failed, %s %s dropped: %s. %s; the app is not affected.",
                        destination, count, unit, summary, hint)
    else:
        _logger.warning("raptorflow-otel: %s export still failing, %s dropped in the last %d s: %s. %s.",
                        destination, unit, int(now - last), summary, hint)


def log_unreported_drops() -> None:
    """Log one line per destination with the drops since its last line (called at shutdown).

    Between summaries, drops are only counted, so without this line the drops of a process's last
    minute would never reach the log.
    """
    with _lock:
        pending = {destination: since for destination, (_, since) in _pending_log.items() if since}
        for destination in pending:
            _pending_log[destination] = (_pending_log[destination][0], Counter())
    for destination, since in sorted(pending.items()):
        summary = ", ".join(f"{number} ({why})" for why, number in sorted(since.items()))
        _logger.warning("raptorflow-otel: %s export drops not yet reported when the process stopped: %s.", destination, summary)


def dropped_counts() -> dict[str, dict[str, int]]:
    """Return every drop since start-up, by destination and reason (for health reports)."""
    with _lock:
        return {destination: dict(reasons) for destination, reasons in _dropped.items()}


def reset_dropped() -> None:
    """Forget every count (for tests and for a forked child that starts its own counts)."""
    with _lock:
        _dropped.clear()
        _pending_log.clear()


class RateLimitFilter(logging.Filter):
    """Let a log message through once, then at most once a minute with a count of the repeats.

    Messages are keyed by logger name and format string, so the first error of one destination is
    logged even while another destination's errors are being suppressed.
    """

    def __init__(self, interval_seconds: float = SUMMARY_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, object], list[float]] = {}  # key -> [last emitted, repeats since]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None:
                if len(self._seen) > 1000:
                    self._seen.clear()
                self._seen[key] = [now, 0]
                return True
            if now - entry[0] < self._interval:
                entry[1] += 1
                return False
            repeats = int(entry[1])
            entry[0], entry[1] = now, 0
        if repeats and isinstance(record.msg, str):
            record.msg = record.msg + f" [{repeats} similar lines suppressed in the last {int(self._interval)} s]"
        return True


# The SDK and exporter loggers that write one line per failed batch, retry or dropped item.
NOISY_LOGGERS = (
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk._logs._internal.export",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.common.http",
)

_installed = False


def rate_limit_exporter_logs() -> None:
    """Add a `RateLimitFilter` to each logger in `NOISY_LOGGERS` (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in NOISY_LOGGERS:
        logging.getLogger(name).addFilter(RateLimitFilter())


def count_failed_exports(exporter: object, destination: str, unit: str, failure: object) -> None:
    """Wrap ``exporter.export`` so that failed or raising exports count as dropped.

    Works for span, metric and log exporters: each returns an enum whose failure member is named
    ``FAILURE``, and ``failure`` is that member. An exception becomes one internal-error report
    and the ``failure`` result, so the caller (the SDK's metric reader, our span pipeline) does not
    log it again. A span or log batch counts its items; a metrics export counts as one batch.
    """
    export = getattr(exporter, "export", None)
    if export is None or getattr(export, "_raptorflow_counted", False):
        return

    def counted(batch, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - mirrors export()
        size = len(batch) if isinstance(batch, (list, tuple)) else 1
        try:
            result = export(batch, *args, **kwargs)
        except Exception as error:
            from raptorflow_otel.processors import guard

            if guard.RAISE_INTERNAL_ERRORS:
                raise
            guard.report_internal_error(f"{destination} exporter", error)
            record_dropped(destination, "exporter error", size, unit)
            return failure
        if getattr(result, "name", None) == "FAILURE":
            record_dropped(destination, "export failed", size, unit)
        return result

    counted._raptorflow_counted = True  # type: ignore[attr-defined]
    exporter.export = counted  # type: ignore[attr-defined]
