"""Reading a finished span's attributes cheaply, and copying a span with some fields changed.

The SDK's ReadableSpan is immutable, and its ``attributes`` property builds a read-only proxy on
every call. The exporters read a span's attributes many times, so they use `raw_attributes` and
`attribute_items`, which read the stored mapping directly. A finished span's attributes never
change, so that is safe.
"""

from __future__ import annotations

from typing import Any, Mapping

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


def raw_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes as stored, never None; callers must not change the result.

    For the SDK's BoundedAttributes this is its plain dict, whose ``get`` costs a fraction of the
    Mapping interface's (which raises and catches KeyError for every missing key).
    """
    raw = getattr(span, "_attributes", None)
    if raw is None:
        return span.attributes or {}
    inner = getattr(raw, "_dict", None)
    return inner if type(inner) is dict else raw


def attribute_items(attributes: Mapping[str, Any]) -> Any:  # noqa: ANN401 - an items view
    """Iterate ``attributes`` as pairs, fast for the SDK's BoundedAttributes.

    Iterating a BoundedAttributes through the Mapping interface costs a method call and a lookup
    per key. So its plain dict is read directly when it has one (opentelemetry-sdk 1.45 keeps it
    in ``_dict``).
    """
    inner = getattr(attributes, "_dict", None)
    return inner.items() if type(inner) is dict else attributes.items()
