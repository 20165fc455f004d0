"""Turn finished OpenTelemetry spans into Sentry payloads: transactions and error events.

A local-root span (no parent, or a parent in another process) becomes a transaction; its
in-process descendants become the transaction's spans. Each ``exception`` span event becomes an
error event linked to the span it happened in through ``contexts.trace``. Payload fields follow
Sentry's event protocol (develop.sentry.dev/sdk/data-model/event-payloads); the test suite checks
every payload kind with Sentry's own normalizer (``sentry_relay.StoreNormalizer``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from sentry_sdk.tracing import get_span_status_from_http_code

from raptorflow_otel.exporters import semconv
from raptorflow_otel.exporters.sentry_frames import parse_exception_chain
from raptorflow_otel.processors.error_categories import LEVEL_BY_SEVERITY, SEVERITIES
from raptorflow_otel.processors.span_copy import attribute_items, raw_attributes

SDK_NAME = "raptorflow-otel"
MECHANISM_TYPE = "raptorflow_otel"
# Sentry truncates longer values anyway; cutting here keeps envelopes small.
MAX_DATA_VALUE_CHARS = 2048


@dataclass(frozen=True)
class EventCommon:
    """Fields shared by every event of one process."""

    environment: str | None = None
    release: str | None = None
    server_name: str | None = None
    sdk_version: str = "0"
    in_app_include: tuple[str, ...] = ()
    project_root: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("platform", "python")
        if self.environment:
            event["environment"] = self.environment
        if self.release:
            event["release"] = self.release
        if self.server_name:
            event["server_name"] = self.server_name
        event["sdk"] = {"name": SDK_NAME, "version": self.sdk_version}
        if self.tags:
            event.setdefault("tags", {}).update(self.tags)
        return event


def is_local_root(span: ReadableSpan) -> bool:
    return span.parent is None or span.parent.is_remote


def new_event_id() -> str:
    # Sentry needs 32 unique hex digits, not a secret, so a system call (os.urandom in uuid4) per id is not needed.
    # The random module reseeds its global generator in a forked child, so workers never repeat ids.
    return f"{random.getrandbits(128):032x}"


def _seconds(nanoseconds: int | None) -> float:
    return (nanoseconds or 0) / 1e9


def _hex_trace_id(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def _hex_span_id(span_id: int) -> str:
    return format(span_id, "016x")


def span_status(span: ReadableSpan) -> str:
    """Sentry span status: from the HTTP status code when there is one, else from the OTel status."""
    code = semconv.http_status_code(raw_attributes(span))
    if code is not None:
        return get_span_status_from_http_code(code)
    if span.status.status_code is StatusCode.ERROR:
        return "internal_error"
    return "ok"


def op_and_description(span: ReadableSpan) -> tuple[str, str]:
    """Sentry ``op`` (a low-cardinality category) and ``description`` of a span."""
    attributes = raw_attributes(span)
    if semconv.db_system(attributes):
        statement = semconv.db_statement(attributes)
        return "db", str(statement) if statement else span.name
    method = semconv.http_method(attributes)
    if span.kind is SpanKind.SERVER:
        return ("http.server" if method else "function"), span.name
    if span.kind is SpanKind.CLIENT and method:
        url = semconv.client_url(attributes)
        return "http.client", f"{method} {url}" if url else span.name
    if span.kind is SpanKind.CLIENT:
        return "rpc", span.name
    if span.kind in (SpanKind.PRODUCER, SpanKind.CONSUMER):
        return f"queue.{span.kind.name.lower()}", span.name
    # Internal spans such as FastAPI's `fastapi.endpoint` already have low-cardinality names.
    if " " not in span.name and len(span.name) <= 64:
        return span.name, span.name
    return "function", span.name


def _data(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in attribute_items(attributes or {}):
        if isinstance(value, str) and len(value) > MAX_DATA_VALUE_CHARS:
            value = value[:MAX_DATA_VALUE_CHARS] + "..."
        elif isinstance(value, tuple):
            value = list(value)
        data[key] = value
    return data


def _request(root: ReadableSpan | None) -> dict[str, Any] | None:
    if root is None or root.kind is not SpanKind.SERVER:
        return None
    attributes = raw_attributes(root)
    request: dict[str, Any] = {}
    method = semconv.http_method(attributes)
    if method:
        request["method"] = method
    url = semconv.server_url(attributes)
    if url:
        request["url"] = url
    return request or None


def transaction_name(root: ReadableSpan) -> tuple[str, str]:
    """Transaction name and its ``transaction_info.source``.

    A server span with a route is named ``METHOD /route/{template}`` (source ``route``). Without
    a route (an unmatched path) it is just the method (source ``custom``), so unmatched paths
    never create one name each.
    """
    attributes = raw_attributes(root)
    route = semconv.http_route(attributes)
    method = semconv.http_method(attributes)
    if root.kind is SpanKind.SERVER and route:
        return (f"{method} {route}" if method else str(route)), "route"
    return root.name, "custom"


def trace_context(span: ReadableSpan, *, op: str | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "trace_id": _hex_trace_id(span),
        "span_id": _hex_span_id(span.context.span_id),
        "op": op or op_and_description(span)[0],
        "status": span_status(span),
    }
    if span.parent is not None:
        context["parent_span_id"] = _hex_span_id(span.parent.span_id)
    return context


def build_transaction(
    root: ReadableSpan, children: Sequence[ReadableSpan], common: EventCommon
) -> dict[str, Any]:
    """Build a Sentry transaction event from a local-root span and its in-process descendants."""
    op, _ = op_and_description(root)
    name, source = transaction_name(root)
    context = trace_context(root, op=op)
    context["data"] = _data(raw_attributes(root))
    event: dict[str, Any] = {
        "type": "transaction",
        "event_id": new_event_id(),
        "transaction": name,
        "transaction_info": {"source": source},
        "start_timestamp": _seconds(root.start_time),
        "timestamp": _seconds(root.end_time),
        "contexts": {"trace": context, "otel": _otel_context(root)},
        "spans": [_span_payload(child, root) for child in children],
    }
    request = _request(root)
    if request:
        event["request"] = request
    _apply_session(event, root)
    return common.apply(event)


def _span_payload(span: ReadableSpan, root: ReadableSpan) -> dict[str, Any]:
    op, description = op_and_description(span)
    parent = span.parent.span_id if span.parent is not None else root.context.span_id
    return {
        "trace_id": _hex_trace_id(span),
        "span_id": _hex_span_id(span.context.span_id),
        "parent_span_id": _hex_span_id(parent),
        "op": op,
        "description": description,
        "status": span_status(span),
        "start_timestamp": _seconds(span.start_time),
        "timestamp": _seconds(span.end_time),
        "data": _data(raw_attributes(span)),
    }


_resource_cache: tuple[Any, dict[str, Any]] | None = None


def _otel_context(span: ReadableSpan) -> dict[str, Any]:
    """``contexts.otel`` with the resource; one process has one resource, so the last one is kept.

    Events share the returned dict, which nothing changes after this point.
    """
    global _resource_cache
    resource = span.resource
    cached = _resource_cache
    if cached is not None and cached[0] is resource:
        return cached[1]
    context = {"resource": _data(dict(resource.attributes) if resource is not None else {})}
    _resource_cache = (resource, context)
    return context


@dataclass(frozen=True)
class ExceptionOccurrence:
    """An ``exception`` event together with the span it was recorded on."""

    span: ReadableSpan
    event: Event


def exception_occurrences(spans: Iterable[ReadableSpan]) -> list[ExceptionOccurrence]:
    return [
        ExceptionOccurrence(span, event)
        for span in spans
        for event in span.events
        if event.name == "exception"
    ]


def build_error_events(
    spans: Sequence[ReadableSpan], root: ReadableSpan | None, common: EventCommon
) -> list[dict[str, Any]]:
    """Build one Sentry error event per distinct exception recorded in a local span tree.

    The same failure usually shows up more than once: on the DB or client span where it was
    raised (often as the driver's exception) and again on the server span it escaped from
    (often wrapped, e.g. by SQLAlchemy, with the driver's exception as its cause). Occurrences
    whose chains start with the same root cause are reported once: with the longest chain, and
    linked to the deepest span, where it failed. It counts as unhandled when it reached the local
    root or any server span.
    """
    depth = _depths(spans)
    groups: dict[tuple[str, str, str], list[tuple[ExceptionOccurrence, list[dict[str, Any]]]]] = {}
    for occurrence in exception_occurrences(spans):
        values = _exception_values(occurrence.event.attributes or {}, common)
        cause = values[0]
        key = (str(cause.get("module") or ""), str(cause.get("type")), str(cause.get("value", ""))[:500])
        groups.setdefault(key, []).append((occurrence, values))
    events = []
    for members in groups.values():
        deepest, _ = max(members, key=lambda item: depth.get(item[0].span.context.span_id, 0))
        _, values = max(members, key=lambda item: len(item[1]))
        unhandled = any(
            item.span.kind is SpanKind.SERVER or (root is not None and item.span is root)
            for item, _ in members
        )
        event = _error_event(deepest, values, root, common, handled=not unhandled)
        _apply_error_labels(event, deepest, [item for item, _ in members])
        events.append(event)
    return events


def _apply_error_labels(event: dict[str, Any], deepest: ExceptionOccurrence, members: list[ExceptionOccurrence]) -> None:
    """Group by the categorizer's fingerprint, tag category and severity, and set Sentry's level.

    Category and fingerprint come from the root cause (the deepest occurrence); the severity is the
    worst of all occurrences, since only the server span records whether the request failed.
    """
    labels = deepest.event.attributes or {}
    fingerprint = labels.get("error.fingerprint")
    if fingerprint:
        event["fingerprint"] = [str(fingerprint)]
    severities = [str((item.event.attributes or {}).get("error.severity")) for item in members]
    severities = [severity for severity in severities if severity in LEVEL_BY_SEVERITY]
    tags: dict[str, str] = {}
    if labels.get("error.category"):
        tags["error.category"] = str(labels["error.category"])
    if severities:
        severity = max(severities, key=SEVERITIES.index)
        tags["error.severity"] = severity
        event["level"] = LEVEL_BY_SEVERITY[severity]
    if tags:
        event["tags"] = {**event.get("tags", {}), **tags}


def _depths(spans: Sequence[ReadableSpan]) -> dict[int, int]:
    parents = {
        span.context.span_id: (span.parent.span_id if span.parent is not None else None)
        for span in spans
    }
    depths: dict[int, int] = {}
    for span_id in parents:
        depth, current, seen = 0, parents.get(span_id), {span_id}
        while current is not None and current in parents and current not in seen:
            seen.add(current)
            depth += 1
            current = parents[current]
        depths[span_id] = depth
    return depths


def _error_event(
    occurrence: ExceptionOccurrence,
    values: list[dict[str, Any]],
    root: ReadableSpan | None,
    common: EventCommon,
    *,
    handled: bool,
) -> dict[str, Any]:
    values = [dict(value) for value in values]
    values[-1]["mechanism"] = {"type": MECHANISM_TYPE, "handled": handled}
    event: dict[str, Any] = {
        "event_id": new_event_id(),
        "level": "error",
        "timestamp": _seconds(occurrence.event.timestamp or occurrence.span.end_time),
        "exception": {"values": values},
        "contexts": {"trace": trace_context(occurrence.span), "otel": _otel_context(occurrence.span)},
    }
    transaction_root = root or (occurrence.span if is_local_root(occurrence.span) else None)
    if transaction_root is not None:
        event["transaction"] = transaction_name(transaction_root)[0]
        request = _request(transaction_root)
        if request:
            event["request"] = request
    _apply_session(event, occurrence.span)
    return common.apply(event)


def _apply_session(event: dict[str, Any], span: ReadableSpan) -> None:
    """Copy the session step's attributes: replay id to ``contexts.replay``, user and session tags.

    The replay context is what makes Sentry link an event to the browser's session replay.
    """
    attributes = raw_attributes(span)
    replay_id = attributes.get("sentry.replay_id")
    if replay_id:
        event.setdefault("contexts", {})["replay"] = {"replay_id": str(replay_id)}
    user_id = attributes.get("user.id")
    if user_id:
        event["user"] = {**event.get("user", {}), "id": str(user_id)}
    tags = {key: str(attributes[key]) for key in ("session.id", "session.type") if attributes.get(key)}
    if tags:
        event["tags"] = {**event.get("tags", {}), **tags}


def _exception_values(attributes: Mapping[str, Any], common: EventCommon) -> list[dict[str, Any]]:
    stacktrace = attributes.get("exception.stacktrace")
    values: list[dict[str, Any]] = []
    if stacktrace:
        values = parse_exception_chain(
            str(stacktrace),
            in_app_include=common.in_app_include,
            project_root=common.project_root,
        )
    if not values:
        full_type = str(attributes.get("exception.type") or "Error")
        module, _, short_type = full_type.rpartition(".")
        value: dict[str, Any] = {"type": short_type, "value": str(attributes.get("exception.message", ""))}
        if module:
            value["module"] = module
        values = [value]
    return values
