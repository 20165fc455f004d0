"""Scrubbing of log records before the OTLP log exporter receives them.

Log records (for example FastAPI's exception records, with the exception message and stack trace)
are exported when ``OTEL_LOGS_EXPORTER`` is set. `ScrubbingLogProcessor` runs before the export
processor and rewrites the record's body and attributes in place with the span rules. The SDK
passes every processor the same mutable record, in the order they were added.
"""

from __future__ import annotations

from typing import Any, Mapping

from opentelemetry.sdk._logs import LogRecordProcessor

from raptorflow_otel.processors.guard import guarded
from raptorflow_otel.processors.scrub_values import marker
from raptorflow_otel.processors.scrubbing import SCRUB_ERROR, Scrubber

__all__ = ["ScrubbingLogProcessor"]


class ScrubbingLogProcessor(LogRecordProcessor):
    """Scrubs each log record's body and attributes; add it before the export processor."""

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber

    def on_emit(self, log_record: Any) -> None:  # noqa: ANN401 - the record type differs across SDK versions
        record = getattr(log_record, "log_record", log_record)
        if guarded(self._scrub, record, what="privacy scrubbing of a log record"):
            return
        # The guard logged a failure: fail closed and drop what could not be checked.
        record.body = marker(SCRUB_ERROR)
        record.attributes = {}

    def _scrub(self, record: Any) -> bool:  # noqa: ANN401
        fired: list[str] = []
        body = record.body
        if isinstance(body, Mapping):
            record.body = self._scrubber.scrub_sentry_event(dict(body))
        elif body is not None:
            record.body = self._scrubber.scrub_value("log.body", body, fired)
        attributes = record.attributes
        if attributes:
            scrubbed = self._scrubber.scrub_attributes(attributes, fired)
            if scrubbed is not None:
                for key in list(attributes):
                    if key not in scrubbed:
                        del attributes[key]
                for key, value in scrubbed.items():
                    attributes[key] = value
        return True

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
