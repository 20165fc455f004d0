"""The error categorization step of the span transform.

For every span that ended with an exception or an error status, `ErrorCategorizer` sets
``error.category``, ``error.severity`` and ``error.fingerprint`` on the span, and on each
``exception`` event, plus the semantic-convention ``error.type`` when the instrumentation did
not. With a meter provider it also counts errors in the ``raptorflow.errors`` counter, by
category, severity and type, for alert rules. One failure is usually recorded on the span where it
was raised and again on each span it escaped from: each exception type counts once per trace. It runs before privacy scrubbing, so it reads the exception as raised. The fingerprint is a
hash and carries none of its text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Mapping

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from raptorflow_otel.processors.error_categories import SEVERITIES, ErrorRules
from raptorflow_otel.processors.fingerprints import fingerprint
from raptorflow_otel.processors.span_copy import copy_span

__all__ = ["ErrorCategorizer", "CATEGORY", "SEVERITY", "FINGERPRINT", "ERROR_TYPE", "ERRORS_METRIC"]

CATEGORY = "error.category"
SEVERITY = "error.severity"
FINGERPRINT = "error.fingerprint"
ERROR_TYPE = "error.type"


ERRORS_METRIC = "raptorflow.errors"
_MAX_COUNTED = 4096


class ErrorCategorizer:
    """A span transform step; spans without an error are returned unchanged."""

    def __init__(self, rules: ErrorRules | None = None, *, meter_provider: Any = None) -> None:  # noqa: ANN401
        self._rules = rules or ErrorRules()
        self._counter = None
        if meter_provider is not None:
            meter = meter_provider.get_meter("raptorflow_otel.errors")
            self._counter = meter.create_counter(
                ERRORS_METRIC, unit="{error}", description="Errors by category, severity and type, one per failure and trace."
            )
        # (trace id, exception type) of failures already counted, oldest first.
        self._counted: OrderedDict[tuple[int, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, span: ReadableSpan) -> ReadableSpan:
        exceptions = [event for event in span.events if event.name == "exception"]
        if not exceptions and span.status.status_code is not StatusCode.ERROR:
            return span
        attributes = span.attributes or {}
        kind = span.kind.name.lower()
        failed_request = span.kind is SpanKind.SERVER and (
            span.status.status_code is StatusCode.ERROR or bool(exceptions)
        )

        labels: dict[str, Any] | None = None
        events = list(span.events)
        for index, event in enumerate(events):
            if event.name != "exception":
                continue
            event_labels = self._labels(event.attributes or {}, kind, attributes, failed_request)
            events[index] = Event(event.name, {**(event.attributes or {}), **event_labels}, event.timestamp)
            labels = _worse(labels, event_labels)
        if labels is None:
            # FastAPI's native telemetry marks spans the exception passed through with
            # ``error.type`` (the exception's class) and no exception event.
            declared = str(attributes.get(ERROR_TYPE, ""))
            implied = {"exception.type": declared} if is_exception_class_name(declared) else {}
            labels = self._labels(implied, kind, attributes, failed_request)

        new_attributes = {**attributes, **labels}
        if ERROR_TYPE not in attributes:
            new_attributes[ERROR_TYPE] = _error_type(exceptions, attributes)
        if self._counter is not None:
            self._count(span, exceptions, events, new_attributes)
        return copy_span(span, attributes=new_attributes, events=events)

    def _count(self, span: ReadableSpan, exceptions: list[Event], events: list[Event], attributes: Mapping[str, Any]) -> None:
        failures = [
            ((event.attributes or {}).get("exception.type", ""), (event.attributes or {}).get("exception.message", ""), event.attributes or {})
            for event in events
            if event.name == "exception"
        ] or [(attributes[ERROR_TYPE], "", attributes)]
        for exception_type, _message, labels in failures:
            # One failure appears on every span it passed through, with the same type but not
            # always the same message text, so a trace counts each exception type once.
            key = (span.context.trace_id, str(exception_type))
            with self._lock:
                if key in self._counted:
                    continue
                self._counted[key] = None
                if len(self._counted) > _MAX_COUNTED:
                    self._counted.popitem(last=False)
            self._counter.add(
                1,
                {
                    CATEGORY: labels[CATEGORY],
                    SEVERITY: labels[SEVERITY],
                    ERROR_TYPE: str(exception_type),
                },
            )

    def _labels(
        self, event_attributes: Mapping[str, Any], kind: str, attributes: Mapping[str, Any], failed_request: bool
    ) -> dict[str, Any]:
        exception_type = event_attributes.get("exception.type")
        category, severity = self._rules.classify(
            str(exception_type) if exception_type else None,
            span_kind=kind,
            attributes=attributes,
            failed_request=failed_request,
        )
        stacktrace = event_attributes.get("exception.stacktrace")
        message = event_attributes.get("exception.message")
        type_name = str(exception_type or _status_text(attributes))
        return {
            CATEGORY: category,
            SEVERITY: severity,
            FINGERPRINT: fingerprint(type_name, str(stacktrace) if stacktrace else None, str(message or "")),
        }


def is_exception_class_name(text: str) -> bool:
    """Tell an exception class (``ValueError``, ``httpx.ConnectError``) from a status code or ``_OTHER``."""
    return bool(text) and not text.isdigit() and text != "_OTHER"


def _worse(current: dict[str, Any] | None, candidate: dict[str, Any]) -> dict[str, Any]:
    """Return the more severe of two label sets (the later one on a tie: the outermost exception)."""
    if current is None or SEVERITIES.index(candidate[SEVERITY]) >= SEVERITIES.index(current[SEVERITY]):
        return candidate
    return current


def _status_text(attributes: Mapping[str, Any]) -> str:
    for key in ("http.response.status_code", "http.status_code"):
        if key in attributes:
            return str(attributes[key])
    return "_OTHER"


def _error_type(exceptions: list[Event], attributes: Mapping[str, Any]) -> str:
    """``error.type`` as the semantic conventions define it: the exception type, else the status."""
    for event in reversed(exceptions):
        exception_type = (event.attributes or {}).get("exception.type")
        if exception_type:
            return str(exception_type)
    return _status_text(attributes)
