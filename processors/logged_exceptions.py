"""Put exceptions reported as log records back on the span they happened in.

FastAPI's native telemetry (FastAPI 0.16x) does not record an unhandled exception on the server
span: it emits a log record (event ``http.server.request.exception``) with the exception's type,
message and stack trace as attributes, inside the server span's context, just before it ends the
span. `LoggedExceptions` is a log record processor that keeps those records by span id, and its
`attach` method is a span transform step that adds them to the span as ``exception`` events,
the same shape ``Span.record_exception`` produces. Downstream, every exporter then gets one kind
of exception whichever FastAPI instrumentation ran.

`ExceptionLoggerProvider` is the SDK's LoggerProvider with one change: when a logger is given an
exception object (``Logger.emit(exception=...)``, as FastAPI does), the exception attributes come
from `raptorflow_otel.processors.exception_text`, which formats the traceback about 30 times
faster than the SDK's ``traceback.format_exception``. That formatting runs on the request thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from opentelemetry._logs import Logger as APILogger
from opentelemetry._logs import NoOpLogger
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import INVALID_SPAN_ID

from raptorflow_otel.processors.exception_text import exception_attributes
from raptorflow_otel.processors.guard import guarded
from raptorflow_otel.processors.span_copy import copy_span

# Log events that stand for an exception that escaped the request handler.
UNHANDLED_EVENT_NAMES = frozenset({"http.server.request.exception", "fastapi.websocket.exception"})


class LoggedExceptions(LogRecordProcessor):
    """Stores exception log records by span id until that span ends (bounded, oldest dropped)."""

    def __init__(self, max_spans: int = 1000) -> None:
        self._max_spans = max_spans
        self._lock = threading.Lock()
        self._events: OrderedDict[int, list[Event]] = OrderedDict()
        self.dropped = 0

    # LogRecordProcessor. The SDK passes a ReadWriteLogRecord, whose `log_record` contains the data.
    def on_emit(self, log_record) -> None:  # noqa: ANN001 - type differs across SDK minor versions
        # Called inside the app's logger call, so a failure here must not reach the app.
        guarded(self._keep, log_record, what="LoggedExceptions.on_emit")

    def _keep(self, log_record) -> None:  # noqa: ANN001 - see on_emit
        record = getattr(log_record, "log_record", log_record)
        attributes = record.attributes or {}
        if "exception.type" not in attributes and "exception.stacktrace" not in attributes:
            return
        span_id = record.span_id or INVALID_SPAN_ID
        if span_id == INVALID_SPAN_ID:
            return
        event_attributes = {
            key: attributes[key]
            for key in ("exception.type", "exception.message", "exception.stacktrace")
            if key in attributes
        }
        event_attributes["exception.escaped"] = str(
            getattr(record, "event_name", None) in UNHANDLED_EVENT_NAMES
        )
        event = Event("exception", event_attributes, timestamp=record.timestamp)
        with self._lock:
            self._events.setdefault(span_id, []).append(event)
            self._events.move_to_end(span_id)
            while len(self._events) > self._max_spans:
                self._events.popitem(last=False)
                self.dropped += 1

    def attach(self, span: ReadableSpan) -> ReadableSpan:
        """Span transform step: return a copy of ``span`` with its logged exceptions as events."""
        if not self._events:
            return span
        with self._lock:
            events = self._events.pop(span.context.span_id, None)
        if not events:
            return span
        return copy_span(span, events=tuple(span.events) + tuple(events))

    def shutdown(self) -> None:
        with self._lock:
            self._events.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class ExceptionLoggerProvider(LoggerProvider):
    """A LoggerProvider whose loggers turn an emitted exception object into attributes cheaply."""

    def get_logger(self, name: str, version: str | None = None, schema_url: str | None = None, attributes: Any = None) -> APILogger:
        logger = super().get_logger(name, version, schema_url, attributes)
        if isinstance(logger, NoOpLogger):
            return logger
        return _ExceptionAttributesLogger(logger)


class _ExceptionAttributesLogger(APILogger):
    """Delegates to an SDK logger; replaces ``exception=`` by the exception attributes first.

    The caller's own attributes win over the computed ones, as in the SDK. A record passed as an
    object (``emit(record)``) goes to the SDK unchanged.
    """

    def __init__(self, inner: APILogger) -> None:
        self._inner = inner

    def emit(self, record: Any = None, **fields: Any) -> None:
        exception = fields.get("exception")
        if record is None and exception is not None:
            attributes = guarded(exception_attributes, exception, what="exception log attributes")
            if attributes is None:
                # Let the SDK format the exception itself.
                self._inner.emit(record, **fields)
                return
            given = fields.get("attributes")
            if given:
                attributes.update(given)
            fields["attributes"] = attributes
            fields["exception"] = None
        self._inner.emit(record, **fields)

    def enabled(self, *args: Any, **kwargs: Any) -> bool:
        return self._inner.enabled(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
