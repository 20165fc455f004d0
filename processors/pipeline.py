"""The span pipeline: one transformed copy of each ended span, given to every exporter.

OpenTelemetry SDK 1.45 freezes a span's attributes before any processor's ``on_end`` runs, so a
processor cannot change the span itself. Instead `TransformingExporter` builds one new
``ReadableSpan`` per ended span by running the transform steps in order, and hands that same
copy to each destination (Sentry, OTLP, console). No exporter ever receives the span as the app made it.

The steps run on the batch worker thread of the SDK's ``BatchSpanProcessor``, not on the request
thread. The one exception is an unsampled span that carries an error: it never enters the batch
queue (the SDK drops unsampled spans there), so `PipelineSpanProcessor` transforms it on the
request thread and hands it to the error sink, which reports errors whatever the trace sampling.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Protocol, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from raptorflow_otel.processors.drops import record_dropped
from raptorflow_otel.processors import guard
from raptorflow_otel.processors.guard import guarded, report_internal_error

_logger = logging.getLogger(__name__)

# A step returns the span unchanged, a new ReadableSpan, or None to drop the span.

# Transforming a full batch holds the GIL for tens of milliseconds. Letting other threads run
# every few spans keeps request threads from waiting up to the 5 ms switch interval at each step.
YIELD_EVERY_SPANS = 16


def yield_to_request_threads() -> None:
    """Release the GIL for a moment so waiting request threads can run (a batch worker calls this)."""
    time.sleep(0)

SpanStep = Callable[[ReadableSpan], "ReadableSpan | None"]


class ErrorSink(Protocol):
    """Receives transformed spans of unsampled traces that carry exception events."""

    def export_errors(self, spans: Sequence[ReadableSpan]) -> None: ...


class SpanTransform:
    """Runs the named steps in order.

    A failing step in ``fail_closed`` (privacy scrubbing) drops the span, because passing it on
    could send raw data. Any other failing step is skipped and the span goes on unchanged by it,
    so a bug in, say, error categorization loses labels, not spans. Failures are logged through
    the internal-error guard (once, then a count a minute).
    """

    def __init__(self, steps: Iterable[tuple[str, SpanStep]] = (), fail_closed: Iterable[str] | None = None) -> None:
        self.steps = list(steps)
        # Without an explicit set every step fails closed, the safe default.
        self._fail_closed = None if fail_closed is None else frozenset(fail_closed)

    def __call__(self, span: ReadableSpan) -> ReadableSpan | None:
        current: ReadableSpan | None = span
        for name, step in self.steps:
            try:
                result = step(current)
            except Exception as error:  # noqa: BLE001 - see the class docstring
                if guard.RAISE_INTERNAL_ERRORS:
                    raise
                closed = self._fail_closed is None or name in self._fail_closed
                report_internal_error(f"span transform step {name!r}" + (" (span dropped)" if closed else ""), error)
                if closed:
                    return None
                continue
            if result is None:
                return None
            current = result
        return current


class TransformingExporter(SpanExporter):
    """Transforms a batch once and exports the result to every destination in turn."""

    def __init__(self, transform: SpanTransform, exporters: Sequence[SpanExporter]) -> None:
        self._transform = transform
        self._exporters = list(exporters)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        transformed = []
        for index, span in enumerate(spans, 1):
            copy = self._transform(span)
            if copy is not None:
                transformed.append(copy)
            if index % YIELD_EVERY_SPANS == 0:
                yield_to_request_threads()
        if not transformed:
            return SpanExportResult.SUCCESS
        result = SpanExportResult.SUCCESS
        for exporter in self._exporters:
            outcome = guarded(exporter.export, transformed, what=f"{type(exporter).__name__}.export")
            if outcome is not SpanExportResult.SUCCESS:
                result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        for exporter in self._exporters:
            guarded(exporter.shutdown, what=f"{type(exporter).__name__}.shutdown")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flushed = True
        for exporter in self._exporters:
            flush = getattr(exporter, "force_flush", None)
            if flush is not None and guarded(flush, timeout_millis, what="force_flush") is False:
                flushed = False
        return flushed


class PipelineSpanProcessor(SpanProcessor):
    """Batches sampled spans for export and routes unsampled error spans to the error sink."""

    def __init__(
        self,
        transform: SpanTransform,
        exporters: Sequence[SpanExporter],
        error_sink: ErrorSink | None = None,
        *,
        max_queue_size: int = 2048,
        schedule_delay_millis: float = 5000,
        max_export_batch_size: int = 512,
        export_timeout_millis: float = 30000,
    ) -> None:
        self._transform = transform
        self._error_sink = error_sink
        self._exporter = TransformingExporter(transform, exporters)
        self._batch = BatchSpanProcessor(
            self._exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=min(max_export_batch_size, max_queue_size),
            export_timeout_millis=export_timeout_millis,
        )
        self._max_queue_size = max_queue_size
        # The SDK drops a span when its queue is full and only logs it. Reading the queue's length
        # (a deque inside opentelemetry-sdk 1.45's BatchSpanProcessor) lets us count those drops.
        self._queue = getattr(getattr(self._batch, "_batch_processor", None), "_queue", None)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._batch.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled:
            if self._queue is not None and len(self._queue) >= self._max_queue_size:
                record_dropped("traces", "batch queue full", 1, "spans")
            self._batch.on_end(span)
            return
        if self._error_sink is not None:
            guarded(self._report_unsampled, span, what="unsampled error report")

    def _report_unsampled(self, span: ReadableSpan) -> None:
        transformed = self._transform(span)
        if transformed is None:
            return
        if any(event.name == "exception" for event in transformed.events):
            self._error_sink.export_errors([transformed])

    def shutdown(self) -> None:
        self._batch.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every queued span, then wait until the exporters have sent what they queued.

        The Sentry exporter hands envelopes to sentry-sdk's background sender, so a flush that
        stopped at the batch processor would return before they leave the process.
        """
        deadline = time.monotonic() + timeout_millis / 1000
        exported = self._batch.force_flush(timeout_millis)
        remaining = max(0, int((deadline - time.monotonic()) * 1000))
        return bool(self._exporter.force_flush(remaining)) and exported
