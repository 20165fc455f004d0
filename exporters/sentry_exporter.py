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
from opentelemetry import context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
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
from raptorflow_otel.exporters.sentry_transport import DirectHttpTransport
from raptorflow_otel.processors.drops import record_dropped
from raptorflow_otel.processors.guard import guarded, report_internal_error
from raptorflow_otel.processors.pipeline import YIELD_EVERY_SPANS, yield_to_request_threads
from raptorflow_otel.processors.release_health import RequestSessions

_logger = logging.getLogger(__name__)

# A child whose root has not ended after this long is dropped (its request is stuck or lost).
PENDING_MAX_AGE_SECONDS = 300.0
# After a request to Sentry fails, envelopes are dropped without trying for this long (seconds).
UNREACHABLE_PAUSE_SECONDS = 10.0
# Envelopes written to the connection at once. A group's responses must fit the socket's receive
# buffer while the rest of the group is being written, so groups stay small.
# NOTE: 16 is not tuned; other group sizes were not measured.
PIPELINE_ENVELOPES = 16
# sentry-sdk's own default size of its send queue, in envelopes.
DEFAULT_QUEUE_SIZE = 100


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
        queue_size: int = DEFAULT_QUEUE_SIZE,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self._common = common
        self._sample_rate = sample_rate
        self._random = random_source
        self._pending = PendingTraces(max_pending_traces)
        self._unreachable_until = 0.0  # monotonic time before which sending is not attempted
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
            transport=DirectHttpTransport,
            # Envelopes queued here (errors of unsampled requests, sessions) can come in bursts.
            # sentry-sdk's default queue of 100 envelopes would drop most of a large burst.
            transport_queue_size=max(queue_size, DEFAULT_QUEUE_SIZE),
        )
        if self._client.transport is not None:
            watch_transport(self._client.transport)

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
        self._send_now(envelopes)
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
        """Queue one envelope for sentry-sdk's background sender (used off the export thread)."""
        if self._client.spotlight is not None:
            self._client.spotlight.capture_envelope(envelope)
        if self._client.transport is not None:
            self._client.transport.capture_envelope(envelope)

    def _send_now(self, envelopes: list[Envelope]) -> None:
        """Send a batch's envelopes from the calling (export) thread, pipelined in groups.

        The export thread is already in the background, so handing each envelope to another
        thread would only add a queue and a thread switch per envelope. Each group of
        `PIPELINE_ENVELOPES` goes out in one write, and its responses come back in about one read
        (`DirectHttpTransport.send_envelopes`). When Sentry looks unreachable (a new connection
        fails before any response, or a timeout), the rest of the batch is dropped and counted,
        so a server that stalls costs one timeout per batch, not one per envelope.
        """
        spotlight = self._client.spotlight
        if spotlight is not None:
            for envelope in envelopes:
                spotlight.capture_envelope(envelope)
        transport = self._client.transport
        if transport is None or not envelopes:
            return
        send_envelopes = getattr(transport, "send_envelopes", None)
        if send_envelopes is None:
            for envelope in envelopes:
                transport.capture_envelope(envelope)
            return
        if time.monotonic() < self._unreachable_until:
            self._count_unsent(transport, envelopes, "unreachable, retrying later")
            return

        for start in range(0, len(envelopes), PIPELINE_ENVELOPES):
            group = envelopes[start : start + PIPELINE_ENVELOPES]
            try:
                error = send_envelopes(group)
            except Exception as unexpected:  # noqa: BLE001 - a defect must not stop the export thread
                report_internal_error("Sentry envelope sending", unexpected)
                record_dropped("sentry", "internal error", len(group), "envelopes")
                error = unexpected
            if error is not None:
                # sentry-sdk counted the group's unanswered envelopes; the later groups are counted here.
                self._count_unsent(transport, envelopes[start + len(group) :], "network")
                # Try again after a pause, so a stalled server costs one timeout per pause, not
                # one per batch, and a shutdown flush does not wait on it again.
                self._unreachable_until = time.monotonic() + UNREACHABLE_PAUSE_SECONDS
                break
        guarded(transport._flush_client_reports, what="Sentry client report")

    @staticmethod
    def _count_unsent(transport: Any, envelopes: list[Envelope], reason: str) -> None:
        """Record envelopes given up without a request, in the drop counts and Sentry's client reports."""
        for envelope in envelopes:
            # sentry-sdk's accounting for a failed request: its lost-event records (sent to Sentry
            # as client reports) and on_dropped_event, which watch_transport turns into drop counts.
            transport._handle_request_error(envelope=envelope, loss_reason=reason)


def watch_transport(transport: Any) -> None:
    """Count the envelopes sentry-sdk's transport drops, and keep its HTTP calls untraced.

    sentry-sdk calls ``on_dropped_event(reason)`` once per envelope it gives up on (``network``,
    ``status_500``, ``status_429``, ``full_queue``, ``self_rate_limits``, ...) and logs nothing
    unless its debug mode is on. Each call becomes a `record_dropped` count, so the drops show in
    ``get_health_status()`` and in one rate-limited warning. The transport sends from its own
    worker thread, where the batch processor's suppression of instrumentation does not reach: an
    installed urllib3 instrumentation would trace every envelope sent, and those spans would be
    sent to Sentry in turn. So each send runs with instrumentation suppressed.
    """
    dropped = getattr(transport, "on_dropped_event", None)
    if dropped is not None:

        def on_dropped_event(reason: str) -> None:
            record_dropped("sentry", str(reason), 1, "envelopes")
            dropped(reason)

        transport.on_dropped_event = on_dropped_event
    send = getattr(transport, "_send_request", None)
    if send is not None:

        def send_untraced(*args: Any, **kwargs: Any) -> Any:
            if context.get_value(_SUPPRESS_INSTRUMENTATION_KEY):
                return send(*args, **kwargs)  # the batch processor's export thread already suppresses it
            token = context.attach(context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                return send(*args, **kwargs)
            finally:
                context.detach(token)

        transport._send_request = send_untraced
    else:
        # NOTE: a sentry-sdk release without _send_request sends unsuppressed; an urllib3
        # instrumentation would then trace the envelopes.
        _logger.debug("sentry-sdk transport has no _send_request; its HTTP calls are not suppressed.")
