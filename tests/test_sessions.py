"""The session propagator and span processor, without a server."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raptorflow_otel.processors.sessions import SessionPropagator, SessionSpanProcessor


def extract(headers, **options):
    return SessionPropagator(**options).extract({key.lower(): [value] for key, value in headers.items()})


def spans_under(context):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SessionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    # Servers attach the extracted context before they start the server span, as done here.
    token = otel_context.attach(context) if context is not None else None
    try:
        with tracer.start_as_current_span("GET /orders"):
            with tracer.start_as_current_span("SELECT orders"):
                pass
    finally:
        if token is not None:
            otel_context.detach(token)
    return exporter.get_finished_spans()


def test_header_session_on_parent_and_child():
    spans = spans_under(extract({"X-Session-ID": "s-1", "X-User-ID": "u-9"}))
    assert len(spans) == 2
    for span in spans:
        assert span.attributes["session.id"] == "s-1"
        assert span.attributes["user.id"] == "u-9"
        assert span.attributes["session.type"] == "api"


def test_custom_header_names():
    context = extract({"X-Request-Session": "s-2", "X-Account": "u-3"}, session_header="X-Request-Session", user_header="X-Account")
    (child, parent) = spans_under(context)
    assert parent.attributes["session.id"] == "s-2"
    assert parent.attributes["user.id"] == "u-3"


def test_cookie_pseudonym_keyed_and_stable():
    headers = {"Cookie": "theme=dark; sid=secret-cookie-value"}
    first = spans_under(extract(headers, session_cookie="sid"))[0].attributes["session.id"]
    again = spans_under(extract(headers, session_cookie="sid"))[0].attributes["session.id"]
    keyed = spans_under(extract(headers, session_cookie="sid", cookie_key=b"k" * 16))[0].attributes["session.id"]
    assert first == again
    assert first != keyed
    assert "secret-cookie-value" not in first + keyed
    assert spans_under(extract(headers, session_cookie="sid"))[0].attributes["session.type"] == "web"


def test_session_type_declared_or_inferred():
    assert spans_under(extract({"X-Session-ID": "s", "X-Session-Type": "background"}))[0].attributes["session.type"] == "background"
    mobile = {"X-Session-ID": "s", "User-Agent": "ShopApp/3.2 (iPhone; iOS 17.4) CFNetwork/1490"}
    assert spans_under(extract(mobile))[0].attributes["session.type"] == "mobile"
    assert spans_under(extract({"X-Session-ID": "s", "X-Session-Type": "bogus"}))[0].attributes["session.type"] == "api"


def test_baggage_session_user_and_replay():
    baggage = "session.id=s-from-baggage,user.id=u%2D7,sentry-replay_id=0123456789abcdef0123456789abcdef;prop=1"
    (_, parent) = spans_under(extract({"baggage": baggage}))
    assert parent.attributes["session.id"] == "s-from-baggage"
    assert parent.attributes["user.id"] == "u-7"
    assert parent.attributes["sentry.replay_id"] == "0123456789abcdef0123456789abcdef"


def test_invalid_replay_id_ignored():
    (_, parent) = spans_under(extract({"baggage": "sentry-replay_id=not-a-uuid"}))
    assert "sentry.replay_id" not in parent.attributes


def test_header_wins_over_baggage():
    (_, parent) = spans_under(extract({"X-Session-ID": "s-header", "baggage": "session.id=s-baggage"}))
    assert parent.attributes["session.id"] == "s-header"


def test_no_session_without_context():
    spans = spans_under(None)
    assert all("session.id" not in span.attributes for span in spans)


def test_propagator_injects_nothing():
    carrier: dict[str, str] = {}
    propagator = SessionPropagator()
    propagator.inject(carrier, extract({"X-Session-ID": "s"}))
    assert carrier == {}
    assert propagator.fields == set()


# -- release health -------------------------------------------------------------------------------

MINUTE_NS = 60_000_000_000


def test_request_sessions_per_minute():
    from raptorflow_otel.processors.release_health import RequestSessions

    sessions = RequestSessions()
    start = 1_796_000_000 * 1_000_000_000 // MINUTE_NS * MINUTE_NS
    sessions.record(start + 1, "exited")
    sessions.record(start + 2, "exited")
    sessions.record(start + 3, "crashed")
    sessions.record(start + MINUTE_NS, "errored")
    finished = sessions.take(start + MINUTE_NS + 5)
    assert len(finished) == 1
    assert finished[0]["exited"] == 2
    assert finished[0]["crashed"] == 1
    assert "errored" not in finished[0]
    assert finished[0]["started"].endswith(":00Z")
    (rest,) = sessions.take()
    assert rest["errored"] == 1
    assert sessions.take() == []


def test_request_sessions_bounded():
    from raptorflow_otel.processors.release_health import RequestSessions

    sessions = RequestSessions(max_minutes=2)
    for minute in range(3):
        sessions.record(minute * MINUTE_NS, "exited")
    assert sessions.dropped == 1
    assert len(sessions.take()) == 2


def test_request_outcome_from_span():
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind
    from opentelemetry.trace.status import Status, StatusCode

    from raptorflow_otel.processors.sessions import request_outcome

    def server(status=StatusCode.UNSET, attributes=None, events=()):
        return ReadableSpan(
            name="GET /", context=SpanContext(1, 2, False), kind=SpanKind.SERVER,
            status=Status(status), attributes=attributes or {}, events=list(events),
        )

    assert request_outcome(server(attributes={"http.response.status_code": 200})) == "exited"
    assert request_outcome(server(StatusCode.ERROR, {"http.response.status_code": 500, "error.type": "ValueError"})) == "crashed"
    assert request_outcome(server(StatusCode.ERROR, {"http.response.status_code": 503, "error.type": "503"})) == "errored"
    assert request_outcome(server(events=[Event("exception", {"exception.type": "KeyError"})])) == "errored"


# -- lifecycle and metrics -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker_with_reader(**options):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from raptorflow_otel.processors.session_tracker import SessionTracker

    reader = InMemoryMetricReader()
    clock = FakeClock()
    tracker = SessionTracker(meter_provider=MeterProvider(metric_readers=[reader]), clock=clock, **options)
    return tracker, reader, clock


def metric_points(reader) -> dict[str, list]:
    points: dict[str, list] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def total(points, name, **attributes) -> float:
    return sum(
        point.value
        for point in points.get(name, [])
        if all(point.attributes.get(key) == value for key, value in attributes.items())
    )


def test_lifecycle_created_active_idle_expired():
    tracker, reader, clock = tracker_with_reader(ttl_seconds=100, idle_seconds=10)
    tracker.observe("s1", "web")
    assert tracker.state_of("s1") == "created"
    clock.now += 5
    tracker.observe("s1", "web")
    assert tracker.state_of("s1") == "active"
    clock.now += 20
    assert tracker.state_of("s1") == "idle"
    clock.now += 100
    assert tracker.state_of("s1") is None
    points = metric_points(reader)
    assert total(points, "raptorflow.sessions.started", **{"session.type": "web"}) == 1
    assert total(points, "raptorflow.sessions.ended", reason="expired") == 1
    (duration,) = points["raptorflow.session.duration"]
    assert duration.sum == 5


def test_eviction_terminates_oldest():
    tracker, reader, clock = tracker_with_reader(max_sessions=2)
    for session_id in ("a", "b", "c"):
        tracker.observe(session_id, "api")
        clock.now += 1
    assert tracker.state_of("a") is None
    assert tracker.state_of("c") == "created"
    assert total(metric_points(reader), "raptorflow.sessions.ended", reason="terminated") == 1


def test_errored_and_converted_counted_once():
    tracker, reader, _ = tracker_with_reader(conversion_routes=["POST /checkout/{product_id}"])
    tracker.observe("s", "web", method="GET", route="/products/{product_id}", errored=True)
    tracker.observe("s", "web", method="POST", route="/checkout/{product_id}", errored=True)
    tracker.observe("s", "web", method="POST", route="/checkout/{product_id}")
    points = metric_points(reader)
    assert total(points, "raptorflow.sessions.errored") == 1
    assert total(points, "raptorflow.sessions.converted") == 1


def test_active_gauge_and_shutdown():
    tracker, reader, _ = tracker_with_reader()
    tracker.observe("s1", "web")
    tracker.observe("s2", "mobile")
    points = metric_points(reader)
    assert total(points, "raptorflow.sessions.active", **{"session.type": "web"}) == 1
    assert total(points, "raptorflow.sessions.active", **{"session.type": "mobile"}) == 1
    tracker.shutdown()
    points = metric_points(reader)
    assert total(points, "raptorflow.sessions.ended", reason="terminated") == 2
    active = [point for point in points["raptorflow.sessions.active"]]
    assert {point.attributes["session.type"]: point.value for point in active} == {"web": 0, "mobile": 0}
