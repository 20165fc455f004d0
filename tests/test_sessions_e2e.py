"""Session correlation and replay linking through the example shop under opentelemetry-instrument."""

from __future__ import annotations

import json

import pytest
import sentry_relay
from leak_search import attributes_of, otlp_spans, run_shop_stack, send_traced, sentry_items, wait_for_trace

SESSION = "sess-7f3a9c"
REPLAY = "4d7cbe6f1e6a4f1f9c8b2a0d5e7f3a21"


@pytest.fixture(scope="module", params=["native", "contrib"])
def stack(request, tmp_path_factory):
    env = {
        "RAPTORFLOW_SESSION_COOKIE": "shop_session",
        "RAPTORFLOW_FASTAPI_MODE": request.param,
        "SENTRY_RELEASE": "shop@1.4.2",
        "SENTRY_ENVIRONMENT": "staging",
    }
    with run_shop_stack(tmp_path_factory.mktemp("sessions"), env) as shop_stack:
        yield shop_stack


def test_session_on_every_span_and_error(stack):
    headers = {"X-Session-ID": SESSION, "X-User-ID": "user-42"}
    ok = send_traced(stack.app, "GET", "/products/1", headers=headers)
    failed = send_traced(stack.app, "GET", "/orders/7/broken", headers=headers)
    assert ok.response.status_code == 200
    assert failed.response.status_code == 500
    wait_for_trace(stack.sentry, stack.otlp, ok)
    wait_for_trace(stack.sentry, stack.otlp, failed, errors=1)

    for traced in (ok, failed):
        spans = otlp_spans(stack.otlp, traced.trace_id)
        assert len(spans) >= 2  # the server span and at least one DB span
        for span in spans:
            attributes = attributes_of(span)
            assert attributes["session.id"] == SESSION, span.name
            assert attributes["user.id"] == "user-42", span.name
            assert attributes["session.type"] == "api", span.name
    (error,) = sentry_items(stack.sentry, "event", failed.trace_id)
    assert error["tags"]["session.id"] == SESSION
    assert error["user"]["id"] == "user-42"
    (transaction,) = sentry_items(stack.sentry, "transaction", failed.trace_id)
    assert transaction["tags"]["session.id"] == SESSION


def test_cookie_session_is_pseudonymous(stack):
    traced = send_traced(stack.app, "GET", "/products/1", headers={"Cookie": "theme=dark; shop_session=raw-cookie-secret-123"})
    wait_for_trace(stack.sentry, stack.otlp, traced)
    spans = otlp_spans(stack.otlp, traced.trace_id)
    session_ids = {attributes_of(span)["session.id"] for span in spans}
    assert len(session_ids) == 1
    (session_id,) = session_ids
    assert session_id.startswith("cookie-")
    assert "raw-cookie-secret-123" not in session_id
    assert {attributes_of(span)["session.type"] for span in spans} == {"web"}


def test_replay_id_from_baggage_reaches_error(stack):
    baggage = f"sentry-trace_id=0123456789abcdef0123456789abcdef,sentry-replay_id={REPLAY},session.id={SESSION}"
    traced = send_traced(stack.app, "GET", "/boom", headers={"baggage": baggage})
    assert traced.response.status_code == 500
    wait_for_trace(stack.sentry, stack.otlp, traced, errors=1)
    (error,) = sentry_items(stack.sentry, "event", traced.trace_id)
    assert error["contexts"]["replay"]["replay_id"] == REPLAY
    assert error["tags"]["session.id"] == SESSION  # from baggage, as no header was sent
    (transaction,) = sentry_items(stack.sentry, "transaction", traced.trace_id)
    assert transaction["contexts"]["replay"]["replay_id"] == REPLAY
    normalizer = sentry_relay.StoreNormalizer()
    for payload in (error, transaction):
        normalized = normalizer.normalize_event(json.loads(json.dumps(payload)))
        assert "errors" not in normalized, normalized.get("errors")
        assert normalized["contexts"]["replay"]["replay_id"] == REPLAY


def test_release_health_aggregates_at_shutdown(stack):
    """Runs last: stops the app, whose SIGTERM flush sends the request sessions of every minute."""
    stack.app.stop()
    payloads = stack.sentry.items("sessions")
    assert payloads
    for payload in payloads:
        assert payload["attrs"] == {"release": "shop@1.4.2", "environment": "staging"}
        sentry_relay.parse_release(payload["attrs"]["release"])  # raises on a release Sentry rejects
        for aggregate in payload["aggregates"]:
            assert aggregate["started"].endswith(":00Z")
            assert set(aggregate) - {"started"} <= {"exited", "errored", "crashed"}
    for name in ("raptorflow.sessions.started", "raptorflow.sessions.ended", "raptorflow.sessions.errored", "raptorflow.session.duration", "raptorflow.errors"):
        assert name in stack.otlp.metric_names(), name
    totals = {status: sum(a.get(status, 0) for p in payloads for a in p["aggregates"]) for status in ("exited", "errored", "crashed")}
    # The module sent 3 successful requests and 2 that raised out of the route (/orders/7/broken, /boom).
    assert totals == {"exited": 3, "errored": 0, "crashed": 2}
