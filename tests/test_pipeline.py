"""The span pipeline: one transformed copy to every exporter, fail-closed steps, unsampled errors."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind

from raptorflow_otel.distro.sampling import RecordLocalRootsSampler
from raptorflow_otel.processors import guard
from raptorflow_otel.processors.logged_exceptions import LoggedExceptions
from raptorflow_otel.processors.pipeline import PipelineSpanProcessor, SpanTransform, TransformingExporter
from raptorflow_otel.processors.span_copy import copy_span


class ErrorSink:
    def __init__(self):
        self.spans = []

    def export_errors(self, spans):
        self.spans.extend(spans)


def rename(span):
    return copy_span(span, name=span.name + " (transformed)")


def make_provider(processor, sampler=None):
    provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
    provider.add_span_processor(processor)
    return provider


def test_every_exporter_gets_the_same_copy():
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    processor = PipelineSpanProcessor(SpanTransform([("rename", rename)]), [first, second], schedule_delay_millis=10)
    tracer = make_provider(processor).get_tracer("test")
    with tracer.start_as_current_span("work"):
        pass
    processor.force_flush()
    (a,) = first.get_finished_spans()
    (b,) = second.get_finished_spans()
    assert a is b
    assert a.name == "work (transformed)"
    processor.shutdown()


def test_failing_step_drops_span(caplog, monkeypatch):
    monkeypatch.setattr(guard, "RAISE_INTERNAL_ERRORS", False)

    def broken(span):
        raise ValueError("bug in a step")

    exporter = InMemorySpanExporter()
    transform = SpanTransform([("broken", broken)])
    result = TransformingExporter(transform, [exporter]).export([_finished_span()])
    assert result is SpanExportResult.SUCCESS
    assert exporter.get_finished_spans() == ()
    assert "span transform step 'broken' (span dropped) failed" in caplog.text


def test_failing_optional_step_keeps_span(caplog, monkeypatch):
    monkeypatch.setattr(guard, "RAISE_INTERNAL_ERRORS", False)

    def broken(span):
        raise ValueError("bug in categorization")

    def mark(span):
        return copy_span(span, name="marked")

    exporter = InMemorySpanExporter()
    transform = SpanTransform([("categorize", broken), ("privacy scrubbing", mark)], fail_closed={"privacy scrubbing"})
    TransformingExporter(transform, [exporter]).export([_finished_span()])

    assert [span.name for span in exporter.get_finished_spans()] == ["marked"]
    assert "span transform step 'categorize' failed" in caplog.text


def test_failing_exporter_does_not_stop_others(monkeypatch):
    monkeypatch.setattr(guard, "RAISE_INTERNAL_ERRORS", False)

    class Broken(InMemorySpanExporter):
        def export(self, spans):
            raise ConnectionError("receiver down")

    healthy = InMemorySpanExporter()
    result = TransformingExporter(SpanTransform(), [Broken(), healthy]).export([_finished_span()])
    assert result is SpanExportResult.FAILURE
    assert len(healthy.get_finished_spans()) == 1
    assert guard.failure_counts()["Broken.export"] >= 1


def test_unsampled_span_with_error_goes_to_sink():
    exporter, sink = InMemorySpanExporter(), ErrorSink()
    processor = PipelineSpanProcessor(SpanTransform(), [exporter], sink, schedule_delay_millis=10)
    tracer = make_provider(processor, RecordLocalRootsSampler(ParentBased(ALWAYS_OFF))).get_tracer("test")
    with tracer.start_as_current_span("GET /ok", kind=SpanKind.SERVER):
        pass
    with pytest.raises(ValueError):
        with tracer.start_as_current_span("GET /fail", kind=SpanKind.SERVER):
            raise ValueError("boom")
    processor.force_flush()
    assert exporter.get_finished_spans() == ()
    assert [span.name for span in sink.spans] == ["GET /fail"]


def test_logged_exception_attached_to_its_span():
    logged = LoggedExceptions()
    exporter = InMemorySpanExporter()
    processor = PipelineSpanProcessor(SpanTransform([("logged", logged.attach)]), [exporter], schedule_delay_millis=10)
    tracer = make_provider(processor).get_tracer("test")
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(logged)
    logger = logger_provider.get_logger("fastapi")
    with tracer.start_as_current_span("GET /boom", kind=SpanKind.SERVER):
        try:
            raise RuntimeError("exploded")
        except RuntimeError as error:
            logger.emit(event_name="http.server.request.exception", body="Unhandled", exception=error)
    with tracer.start_as_current_span("GET /fine", kind=SpanKind.SERVER):
        pass
    processor.force_flush()
    boom, fine = exporter.get_finished_spans()
    (event,) = boom.events
    assert event.name == "exception"
    assert event.attributes["exception.message"] == "exploded"
    assert "RuntimeError: exploded" in event.attributes["exception.stacktrace"]
    assert event.attributes["exception.escaped"] == "True"
    assert fine.events == ()


def test_logged_exceptions_bounded():
    logged = LoggedExceptions(max_spans=2)
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(logged)
    logger = logger_provider.get_logger("fastapi")
    tracer = TracerProvider().get_tracer("test")
    for index in range(4):
        with tracer.start_as_current_span(f"span{index}"):
            logger.emit(body="x", exception=RuntimeError(str(index)))
    assert logged.dropped == 2


def test_guard_logs_first_failure_then_counts(monkeypatch, caplog):
    monkeypatch.setattr(guard, "RAISE_INTERNAL_ERRORS", False)
    caplog.set_level(logging.ERROR, logger="raptorflow_otel")

    def fail():
        raise OSError("disk full")

    for _ in range(50):
        assert guard.guarded(fail, what="test writer") is None
    lines = [record for record in caplog.records if "test writer" in record.getMessage()]
    assert len(lines) == 1
    assert guard.failure_counts()["test writer"] == 50


def _finished_span():
    exporter = InMemorySpanExporter()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("work"):
        pass
    return exporter.get_finished_spans()[0]
