"""Copying a finished span with some fields changed (the SDK's ReadableSpan is immutable)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan


def copy_span(span: ReadableSpan, **changes: Any) -> ReadableSpan:
    """Return a new ReadableSpan equal to ``span`` except for the given constructor fields."""
    fields = {
        "name": span.name,
        "context": span.context,
        "parent": span.parent,
        "resource": span.resource,
        "attributes": span.attributes,
        "events": span.events,
        "links": span.links,
        "kind": span.kind,
        "status": span.status,
        "start_time": span.start_time,
        "end_time": span.end_time,
        "instrumentation_scope": span.instrumentation_scope,
    }
    fields.update(changes)
    return ReadableSpan(**fields)
