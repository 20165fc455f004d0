"""The error categorization step of the span transform.

For every span that ended with an exception or an error status, `ErrorCategorizer` sets
``error.category``, ``error.severity`` and ``error.fingerprint`` on the span, and on each
``exception`` event, plus the semantic-convention ``error.type`` when the instrumentation did
not. It runs before privacy scrubbing, so it sees the exception as raised; the fingerprint is a
hash and carries none of its text.
"""

from __future__ import annotations

from typing import Any, Mapping

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from raptorflow_otel.processors.error_categories import SEVERITIES, ErrorRules
from raptorflow_otel.processors.fingerprints import fingerprint
from raptorflow_otel.processors.span_copy import copy_span

__all__ = ["ErrorCategorizer", "CATEGORY", "SEVERITY", "FINGERPRINT", "ERROR_TYPE"]

CATEGORY = "error.category"
SEVERITY = "error.severity"
FINGERPRINT = "error.fingerprint"
ERROR_TYPE = "error.type"


class ErrorCategorizer:
    """A span transform step; spans without an error are returned unchanged."""

    def __init__(self, rules: ErrorRules | None = None) -> None:
        self._rules = rules or ErrorRules()

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
            labels = self._labels({}, kind, attributes, failed_request)

        new_attributes = {**attributes, **labels}
        if ERROR_TYPE not in attributes:
            new_attributes[ERROR_TYPE] = _error_type(exceptions, attributes)
        return copy_span(span, attributes=new_attributes, events=events)

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
