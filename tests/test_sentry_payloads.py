"""Sentry payloads built from real SDK spans, checked field by field and by Sentry's normalizer."""

from __future__ import annotations

import pytest
import sentry_relay
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from raptorflow_otel.distro.sampling import RecordLocalRootsSampler
from raptorflow_otel.exporters.sentry_events import (
    EventCommon,
    build_error_events,
    build_transaction,
    op_and_description,
    transaction_name,
)
from raptorflow_otel.exporters.sentry_exporter import PendingTraces

COMMON = EventCommon(environment="test", release="app@1", server_name="host-1", sdk_version="0.1.0")
NORMALIZER = sentry_relay.StoreNormalizer()


def assert_normalizes(event):
    normalized = NORMALIZER.normalize_event(event)
    assert "errors" not in normalized, normalized.get("errors")
    return normalized


@pytest.fixture
def tracer_and_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def fail_in_query():
    raise RuntimeError("no such table: orders")


def request_with_query_failure(tracer):
    """A server span with a DB child whose query raises, the error escaping to the server span."""
    with tracer.start_as_current_span(
        "GET /orders/{order_id}",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "http.route": "/orders/{order_id}",
            "url.scheme": "http",
            "server.address": "127.0.0.1",
            "server.port": 8000,
            "url.path": "/orders/7",
            "url.query": "token=secret",
            "http.response.status_code": 500,
        },
    ) as server:
        try:
            with tracer.start_as_current_span(
                "SELECT orders",
                kind=SpanKind.CLIENT,
                attributes={"db.system": "sqlite", "db.statement": "SELECT * FROM orders WHERE id = ?"},
            ) as query:
                try:
                    fail_in_query()
                except RuntimeError as error:
                    query.record_exception(error)
                    query.set_status(Status(StatusCode.ERROR))
                    raise
        except RuntimeError as error:
            server.record_exception(error, escaped=True)
            server.set_status(Status(StatusCode.ERROR))
        with tracer.start_as_current_span(
            "GET",
            kind=SpanKind.CLIENT,
            attributes={"http.method": "GET", "http.url": "http://inventory:8001/stock?key=abc", "http.status_code": 200},
        ):
            pass
        with tracer.start_as_current_span("fastapi.endpoint"):
            pass


def test_transaction_shape(tracer_and_spans):
    tracer, exporter = tracer_and_spans
    request_with_query_failure(tracer)
    spans = exporter.get_finished_spans()
    root = spans[-1]
    transaction = build_transaction(root, list(spans[:-1]), COMMON)
    assert transaction["transaction"] == "GET /orders/{order_id}"
    assert transaction["transaction_info"] == {"source": "route"}
    assert transaction["contexts"]["trace"]["op"] == "http.server"
    assert transaction["contexts"]["trace"]["status"] == "internal_error"
    assert transaction["request"] == {"method": "GET", "url": "http://127.0.0.1:8000/orders/7"}
    ops = {span["op"]: span for span in transaction["spans"]}
    assert set(ops) == {"db", "http.client", "fastapi.endpoint"}
    assert ops["db"]["description"] == "SELECT * FROM orders WHERE id = ?"
    assert ops["db"]["status"] == "internal_error"
    assert ops["http.client"]["description"] == "GET http://inventory:8001/stock"
    assert all(span["parent_span_id"] == transaction["contexts"]["trace"]["span_id"] for span in transaction["spans"])
    assert transaction["environment"] == "test"
    assert transaction["sdk"] == {"name": "raptorflow-otel", "version": "0.1.0"}
    assert_normalizes(transaction)


def test_error_reported_once_on_deepest_span(tracer_and_spans):
    tracer, exporter = tracer_and_spans
    request_with_query_failure(tracer)
    spans = list(exporter.get_finished_spans())
    root = spans[-1]
    (event,) = build_error_events(spans, root, COMMON)
    query = next(span for span in spans if span.name == "SELECT orders")
    assert event["contexts"]["trace"]["span_id"] == format(query.context.span_id, "016x")
    assert event["contexts"]["trace"]["trace_id"] == format(root.context.trace_id, "032x")
    value = event["exception"]["values"][-1]
    assert value["type"] == "RuntimeError"
    assert value["value"] == "no such table: orders"
    assert value["mechanism"] == {"type": "raptorflow_otel", "handled": False}
    assert value["stacktrace"]["frames"][-1]["function"] == "fail_in_query"
    assert event["transaction"] == "GET /orders/{order_id}"
    assert event["request"]["url"] == "http://127.0.0.1:8000/orders/7"
    assert event["level"] == "error"
    assert_normalizes(event)


def test_handled_error_on_child_only(tracer_and_spans):
    tracer, exporter = tracer_and_spans
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.route": "/x"}):
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}) as query:
            query.record_exception(KeyError("k"))
    spans = list(exporter.get_finished_spans())
    (event,) = build_error_events(spans, spans[-1], COMMON)
    assert event["exception"]["values"][-1]["mechanism"]["handled"] is True
    assert_normalizes(event)


def test_error_without_stacktrace_uses_attributes(tracer_and_spans):
    tracer, exporter = tracer_and_spans
    with tracer.start_as_current_span("job", kind=SpanKind.INTERNAL) as span:
        span.add_event("exception", {"exception.type": "billing.errors.CardDeclined", "exception.message": "declined"})
    (span,) = exporter.get_finished_spans()
    (event,) = build_error_events([span], span, COMMON)
    assert event["exception"]["values"] == [
        {"type": "CardDeclined", "value": "declined", "module": "billing.errors", "mechanism": {"type": "raptorflow_otel", "handled": False}}
    ]
    assert event["transaction"] == "job"
    assert_normalizes(event)


def test_unmatched_route_named_by_method():
    class Root:
        kind = SpanKind.SERVER
        name = "GET"
        attributes = {"http.request.method": "GET", "url.path": "/a/b/c"}

    assert transaction_name(Root) == ("GET", "custom")


@pytest.mark.parametrize(
    ("kind", "attributes", "name", "expected"),
    [
        (SpanKind.CLIENT, {"db.system.name": "postgresql", "db.query.text": "SELECT 1"}, "SELECT", ("db", "SELECT 1")),
        (SpanKind.CLIENT, {"http.request.method": "POST", "url.full": "https://u:p@api.example/x?y=1"}, "POST", ("http.client", "POST https://api.example/x")),
        (SpanKind.SERVER, {"http.request.method": "GET"}, "GET /a", ("http.server", "GET /a")),
        (SpanKind.INTERNAL, {}, "fastapi.serialization", ("fastapi.serialization", "fastapi.serialization")),
        (SpanKind.INTERNAL, {}, "do the thing", ("function", "do the thing")),
        (SpanKind.PRODUCER, {}, "send", ("queue.producer", "send")),
    ],
)
def test_op_and_description(tracer_and_spans, kind, attributes, name, expected):
    tracer, exporter = tracer_and_spans
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes):
        pass
    (span,) = exporter.get_finished_spans()
    assert op_and_description(span) == expected


def test_pending_traces_join_across_batches(tracer_and_spans):
    tracer, exporter = tracer_and_spans
    request_with_query_failure(tracer)
    *children, root = exporter.get_finished_spans()
    pending = PendingTraces(max_traces=10)
    for child in children:
        pending.add(child)
    assert len(pending) == 1
    assert pending.take_descendants(root) == children
    assert len(pending) == 0


def test_pending_traces_keep_spans_of_other_roots(tracer_and_spans):
    tracer, exporter = tracer_and_spans
    with tracer.start_as_current_span("outer", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("a"):
            pass
    first_child, first_root = exporter.get_finished_spans()
    pending = PendingTraces(max_traces=10)
    pending.add(first_child)
    with tracer.start_as_current_span("other", kind=SpanKind.SERVER) as other:
        pass
    assert pending.take_descendants(exporter.get_finished_spans()[-1]) == []
    assert len(pending) == 1
    assert other is not None
    assert pending.take_descendants(first_root) == [first_child]


def test_pending_traces_bounded(tracer_and_spans):
    tracer, exporter = tracer_and_spans
    pending = PendingTraces(max_traces=3)
    for index in range(5):
        with tracer.start_as_current_span(f"root{index}"):
            with tracer.start_as_current_span("child"):
                pass
    for span in exporter.get_finished_spans():
        if span.parent is not None:
            pending.add(span)
    assert len(pending) == 3
    assert pending.dropped_spans == 2


def test_sampler_records_dropped_local_roots_only():
    from opentelemetry.sdk.trace import SpanProcessor

    class Ended(SpanProcessor):
        def __init__(self):
            self.spans = []

        def on_end(self, span):
            self.spans.append(span)

    sampler = RecordLocalRootsSampler(ParentBased(ALWAYS_OFF))
    ended = Ended()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(ended)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        assert root.is_recording()
        with tracer.start_as_current_span("child") as child:
            assert not child.is_recording()
    assert [span.name for span in ended.spans] == ["root"]
    assert ended.spans[0].context.trace_flags.sampled is False
    assert sampler.should_sample(None, 1, "root").decision is Decision.RECORD_ONLY


def test_sampler_keeps_sampled_decisions():
    sampler = RecordLocalRootsSampler(ALWAYS_ON)
    assert sampler.should_sample(None, 1, "root").decision is Decision.RECORD_AND_SAMPLE
    assert "RecordLocalRoots" in sampler.get_description()
