"""Span exporter that sends transactions and error events to Sentry.

sentry-sdk is the transport and envelope library: DSN authentication, rate limits, compression,
retries and the background send queue all come from its ``HttpTransport``, and Spotlight from its
``SpotlightClient``. We build a private ``sentry_sdk.Client`` with every integration and its own
tracing off, so it produces nothing by itself. It is never bound to sentry-sdk's global scope, so
an app that calls ``sentry_sdk.init`` itself keeps its own client, and ours keeps exporting.

Spans arrive in batches, children before their parent. A child waits in `PendingTraces` until its
local root arrives; the root and its waiting descendants then become one transaction. A client
span without a local parent (a query run at import time, a call from a script) becomes no
transaction, since Sentry would show each such call as its own operation; its errors are still
reported.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import sentry_sdk
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from sentry_sdk.envelope import Envelope
from sentry_sdk.utils import Dsn

from raptorflow_otel.exporters.sentry_events import (
    EventCommon,
    build_error_events,
    build_transaction,
    is_local_root,
)
from raptorflow_otel.processors.pipeline import YIELD_EVERY_SPANS, yield_to_request_threads
from raptorflow_otel.processors.release_health import RequestSessions

_logger = logging.getLogger(__name__)

# A child whose root has not ended after this long is dropped (its request is stuck or lost).
PENDING_MAX_AGE_SECONDS = 300.0


@dataclass
class SentryExporterStats:
    transactions: int = 0
    errors: int = 0
    errors_sampled_out: int = 0
    spans_dropped_without_root: int = 0


class PendingTraces:
    """Child spans by trace id, waiting for their local root. Bounded: oldest trace dropped first."""

    def __init__(self, max_traces: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_traces = max_traces
        self._clock = clock
        self._traces: OrderedDict[int, tuple[float, list[ReadableSpan]]] = OrderedDict()
        self.dropped_spans = 0

    def add(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id
        entry = self._traces.get(trace_id)
        if entry is None:
            entry = (self._clock(), [])
            self._traces[trace_id] = entry
        entry[1].append(span)
        self._evict()

    def take_descendants(self, root: ReadableSpan) -> list[ReadableSpan]:
        """Remove and return the waiting spans whose parent chain leads to ``root``."""
        trace_id = root.context.trace_id
        entry = self._traces.get(trace_id)
        if entry is None:
            return []
        spans = entry[1]
        parent_of = {
            span.context.span_id: span.parent.span_id if span.parent is not None else None
            for span in spans
        }
        root_id = root.context.span_id
        belongs: dict[int, bool] = {}

        def leads_to_root(span_id: int) -> bool:
            chain = []
            current: int | None = span_id
            while current is not None and current not in belongs:
                if current == root_id:
                    belongs[current] = True
                    break
                if current not in parent_of or current in chain:
                    belongs[current] = False
                    break
                chain.append(current)
                current = parent_of[current]
            result = belongs.get(current, False) if current is not None else False
            for item in chain:
                belongs[item] = result
            return result

        descendants = [span for span in spans if leads_to_root(span.context.span_id)]
        remaining = [span for span in spans if not belongs.get(span.context.span_id, False)]
        if remaining:
            self._traces[trace_id] = (entry[0], remaining)
        else:
            del self._traces[trace_id]
        return descendants

    def _evict(self) -> None:
        now = self._clock()
        while self._traces:
            trace_id, (created, spans) = next(iter(self._traces.items()))
            if len(self._traces) <= self._max_traces and now - created < PENDING_MAX_AGE_SECONDS:
                break
            del self._traces[trace_id]
            self.dropped_spans += len(spans)

    def __len__(self) -> int:
        return len(self._traces)


class SentryExporter(SpanExporter):
    """Exports spans to Sentry as transactions and error events, and to Spotlight when enabled."""

    def __init__(
        self,
        *,
        dsn: str | None,
        common: EventCommon,
        sample_rate: float = 1.0,
        spotlight_url: str | None = None,
        debug: bool = False,
        max_pending_traces: int = 1000,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self._common = common
        self._sample_rate = sample_rate
        self._random = random_source
        self._pending = PendingTraces(max_pending_traces)
        self._lock = threading.Lock()
        self.stats = SentryExporterStats()
        self._public_key = Dsn(dsn).public_key if dsn else None
        # Release health needs a release: Sentry rejects session aggregates without one.
        self.request_sessions = RequestSessions() if common.release else None
        self._client = sentry_sdk.Client(
            dsn=dsn,
            environment=common.environment,
            release=common.release,
            server_name=common.server_name,
            debug=debug,
            spotlight=spotlight_url or False,
            default_integrations=False,
            auto_enabling_integrations=False,
            integrations=[],
            traces_sample_rate=None,
            send_client_reports=bool(dsn),
        )

    # SpanExporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        envelopes = []
        with self._lock:
            for index, span in enumerate(spans, 1):
                if index % YIELD_EVERY_SPANS == 0:
                    yield_to_request_threads()
                if not is_local_root(span):
                    self._pending.add(span)
                    continue
                children = self._pending.take_descendants(span)
                if span.kind is not SpanKind.CLIENT:
                    envelopes.append(self._transaction_envelope(span, children))
                envelopes.extend(self._error_envelopes([span, *children], span))
            self.stats.spans_dropped_without_root = self._pending.dropped_spans
        for envelope in envelopes:
            self._send(envelope)
        self._send_request_sessions(final=False)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._send_request_sessions(final=True)
        self._client.close(timeout=2.0)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._client.flush(timeout=timeout_millis / 1000)
        return True

    # ErrorSink, for spans of unsampled traces: errors only, no transaction.

    def export_errors(self, spans: Sequence[ReadableSpan]) -> None:
        for span in spans:
            root = span if is_local_root(span) else None
            for envelope in self._error_envelopes([span], root):
                self._send(envelope)

    # Building and sending

    def _transaction_envelope(self, root: ReadableSpan, children: list[ReadableSpan]) -> Envelope:
        event = build_transaction(root, children, self._common)
        envelope = Envelope(headers=self._headers(event, root, sampled=True))
        envelope.add_transaction(event)
        self.stats.transactions += 1
        return envelope

    def _error_envelopes(self, spans: list[ReadableSpan], root: ReadableSpan | None) -> list[Envelope]:
        envelopes = []
        for event in build_error_events(spans, root, self._common):
            if self._sample_rate < 1.0 and self._random() >= self._sample_rate:
                self.stats.errors_sampled_out += 1
                continue
            sampled = bool(root.context.trace_flags.sampled) if root is not None else False
            envelope = Envelope(headers=self._headers(event, root or spans[0], sampled=sampled))
            envelope.add_event(event)
            self.stats.errors += 1
            envelopes.append(envelope)
        return envelopes

    def _headers(self, event: dict[str, Any], span: ReadableSpan, *, sampled: bool) -> dict[str, Any]:
        headers: dict[str, Any] = {
            "event_id": event["event_id"],
            "sent_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        }
        if self._public_key:
            # The dynamic sampling context: Sentry needs trace_id and public_key at least.
            trace = {
                "trace_id": format(span.context.trace_id, "032x"),
                "public_key": self._public_key,
                "sampled": "true" if sampled else "false",
            }
            if self._common.environment:
                trace["environment"] = self._common.environment
            if self._common.release:
                trace["release"] = self._common.release
            if event.get("transaction"):
                trace["transaction"] = event["transaction"]
            headers["trace"] = trace
        return headers

    def _send_request_sessions(self, *, final: bool) -> None:
        """Send the finished minutes of request sessions (every minute at shutdown)."""
        if self.request_sessions is None:
            return
        aggregates = self.request_sessions.take(None if final else time.time_ns())
        if not aggregates:
            return
        attributes = {"release": self._common.release}
        if self._common.environment:
            attributes["environment"] = self._common.environment
        envelope = Envelope(headers={"sent_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")})
        envelope.add_sessions({"attrs": attributes, "aggregates": aggregates})
        self._send(envelope)

    def _send(self, envelope: Envelope) -> None:
        if self._client.spotlight is not None:
            self._client.spotlight.capture_envelope(envelope)
        if self._client.transport is not None:
            self._client.transport.capture_envelope(envelope)
