"""Error categories, severities and fingerprints, from real exceptions raised by real libraries."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import traceback

import httpx
import pydantic
import pytest
import sqlalchemy
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.status import Status, StatusCode
from sqlalchemy import create_engine, text

from raptorflow_otel.processors.categorize import ErrorCategorizer
from raptorflow_otel.processors.error_categories import CATEGORIES, ErrorRules, parse_category_overrides
from raptorflow_otel.processors.fingerprints import fingerprint, message_template


def raised(action) -> BaseException:
    try:
        action()
    except BaseException as error:  # noqa: BLE001 - collecting real exceptions is the point
        return error
    raise AssertionError("the action raised nothing")


def type_name(error: BaseException) -> str:
    """``exception.type`` as the OpenTelemetry SDK records it."""
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sqlite_engine():
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL)"))
        connection.execute(text("INSERT INTO users (email) VALUES ('a@example.com')"))
    return engine


def run_sql(statement: str):
    engine = sqlite_engine()

    def action():
        with engine.begin() as connection:
            connection.execute(text(statement))

    return action


class Order(pydantic.BaseModel):
    quantity: int


class OutOfStock(Exception):
    """An exception the app defines for its own rule."""


class CardDeclined(ValueError):
    """A domain error that derives from ValueError."""


def http_call(status: int):
    transport = httpx.MockTransport(lambda request: httpx.Response(status))

    def action():
        with httpx.Client(transport=transport) as client:
            client.get("http://inventory.example.test/stock").raise_for_status()

    return action


def fastapi_validation_error() -> BaseException:
    app = FastAPI()
    captured: list[BaseException] = []

    @app.get("/orders/{order_id}")
    def read(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def keep(request, error):  # noqa: ANN001 - FastAPI's handler signature
        captured.append(error)
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": "invalid"}, status_code=422)

    TestClient(app).get("/orders/not-a-number")
    return captured[0]


def timeout_action():
    async def slow():
        await asyncio.wait_for(asyncio.sleep(1), timeout=0.001)

    return lambda: asyncio.run(slow())


# (case id, exception factory, span kind, span attributes, failed request, category, severity)
CASES = [
    ("sqlite-integrity", lambda: raised(run_sql("INSERT INTO users (email) VALUES ('a@example.com')")), "client", {"db.system": "sqlite"}, False, "database", "medium"),
    ("sqlite-missing-table", lambda: raised(run_sql("SELECT * FROM missing")), "client", {"db.system": "sqlite"}, False, "database", "critical"),
    ("sqlite-syntax", lambda: raised(run_sql("SELEC 1")), "client", {"db.system": "sqlite"}, False, "database", "critical"),
    ("sqlite-not-null", lambda: raised(run_sql("INSERT INTO users (email) VALUES (NULL)")), "client", {"db.system": "sqlite"}, True, "database", "high"),
    ("sqlite3-driver-integrity", lambda: raised(lambda: sqlite3.connect(":memory:").execute("SELECT * FROM nowhere")), "client", {}, False, "database", "critical"),
    ("sqlalchemy-no-result", lambda: raised(lambda: sqlite_engine().connect().execute(text("SELECT id FROM users WHERE id = 99")).one()), "internal", {}, False, "database", "medium"),
    ("sqlalchemy-argument", lambda: raised(lambda: create_engine("nosuchdialect://")), "internal", {}, False, "database", "medium"),
    ("sqlalchemy-pool-timeout", lambda: sqlalchemy.exc.TimeoutError("QueuePool limit reached"), "internal", {}, True, "performance", "high"),
    ("httpx-connect-refused", lambda: raised(lambda: httpx.get(f"http://127.0.0.1:{closed_port()}/", timeout=2)), "client", {"http.request.method": "GET"}, False, "network", "medium"),
    ("httpx-status-500", lambda: raised(http_call(500)), "client", {"http.request.method": "GET"}, False, "external_api", "medium"),
    ("httpx-status-404", lambda: raised(http_call(404)), "client", {"http.request.method": "GET"}, False, "external_api", "medium"),
    ("httpx-read-timeout", lambda: httpx.ReadTimeout("timed out"), "client", {"http.request.method": "GET"}, False, "performance", "medium"),
    ("httpx-connect-timeout", lambda: httpx.ConnectTimeout("timed out"), "client", {}, True, "performance", "high"),
    ("httpx-invalid-url", lambda: raised(lambda: httpx.get("http://")), "client", {}, False, "network", "medium"),
    ("asyncio-timeout", lambda: raised(timeout_action()), "internal", {}, True, "performance", "high"),
    ("builtin-timeout", lambda: TimeoutError("took too long"), "internal", {}, False, "performance", "medium"),
    ("connection-refused", lambda: ConnectionRefusedError(111, "Connection refused"), "internal", {}, False, "network", "medium"),
    ("connection-reset", lambda: ConnectionResetError(104, "reset"), "internal", {}, True, "network", "high"),
    ("socket-gaierror", lambda: socket.gaierror(-2, "Name or service not known"), "internal", {}, False, "network", "medium"),
    ("pydantic-validation", lambda: raised(lambda: Order(quantity="many")), "internal", {}, False, "validation", "low"),
    ("pydantic-validation-500", lambda: raised(lambda: Order(quantity="many")), "server", {"http.response.status_code": 500}, True, "validation", "high"),
    ("fastapi-request-validation", fastapi_validation_error, "server", {"http.response.status_code": 422}, False, "validation", "low"),
    ("json-decode", lambda: raised(lambda: json.loads("{not json")), "internal", {}, False, "validation", "low"),
    ("int-parse", lambda: raised(lambda: int("abc")), "server", {"http.response.status_code": 400}, False, "validation", "low"),
    ("unicode-decode", lambda: raised(lambda: b"\xff".decode("utf-8")), "internal", {}, False, "validation", "low"),
    ("app-value-error-subclass", lambda: CardDeclined("card declined"), "internal", {}, False, "validation", "low"),
    ("app-own-exception", lambda: OutOfStock("no stock"), "internal", {}, False, "business_logic", "medium"),
    ("app-own-exception-500", lambda: OutOfStock("no stock"), "server", {"http.response.status_code": 500}, True, "business_logic", "high"),
    ("fastapi-http-401", lambda: HTTPException(status_code=401), "server", {"http.response.status_code": 401}, False, "authentication", "low"),
    ("fastapi-http-403", lambda: HTTPException(status_code=403), "server", {"http.response.status_code": 403}, False, "authentication", "low"),
    ("fastapi-http-404", lambda: HTTPException(status_code=404), "server", {"http.response.status_code": 404}, False, "validation", "low"),
    ("fastapi-http-504", lambda: HTTPException(status_code=504), "server", {"http.response.status_code": 504}, True, "performance", "high"),
    ("memory", lambda: MemoryError(), "internal", {}, False, "system", "critical"),
    ("recursion", lambda: raised(lambda: (lambda f: f(f))(lambda f: f(f))), "internal", {}, True, "system", "high"),
    ("key-error", lambda: raised(lambda: {}["missing"]), "server", {"http.response.status_code": 500}, True, "system", "high"),
    ("attribute-error", lambda: raised(lambda: None.missing), "internal", {}, False, "system", "medium"),
    ("type-error", lambda: raised(lambda: len(5)), "internal", {}, False, "system", "medium"),
    ("zero-division", lambda: raised(lambda: 1 / 0), "server", {"http.response.status_code": 500}, True, "system", "high"),
    ("file-not-found", lambda: raised(lambda: open("/nonexistent/raptorflow-test")), "internal", {}, False, "system", "medium"),
    ("permission-error", lambda: PermissionError(13, "Permission denied"), "internal", {}, False, "system", "medium"),
    ("import-error", lambda: raised(lambda: __import__("raptorflow_no_such_module")), "internal", {}, False, "system", "medium"),
    ("not-implemented", lambda: NotImplementedError(), "internal", {}, False, "system", "medium"),
    ("runtime-error-unknown", lambda: RuntimeError("odd state"), "internal", {}, False, "business_logic", "medium"),
]


@pytest.mark.parametrize(
    ("case", "make", "kind", "attributes", "failed", "category", "severity"), CASES, ids=[row[0] for row in CASES]
)
def test_real_exception_category(case, make, kind, attributes, failed, category, severity):
    error = make()
    assert isinstance(error, BaseException), case
    result = ErrorRules().classify(type_name(error), span_kind=kind, attributes=attributes, failed_request=failed)
    assert result == (category, severity)


def test_table_covers_every_category():
    assert len(CASES) >= 40
    assert {row[5] for row in CASES} == set(CATEGORIES)


def test_status_only_errors():
    rules = ErrorRules()
    assert rules.classify(None, span_kind="server", attributes={"http.response.status_code": 503}, failed_request=True) == ("system", "high")
    assert rules.classify(None, span_kind="client", attributes={"http.request.method": "GET", "http.response.status_code": 502}) == ("external_api", "high")
    assert rules.classify(None, span_kind="client", attributes={"db.system": "postgresql"}) == ("database", "medium")


def test_overrides_win_and_match_subclasses():
    overrides = parse_category_overrides(f"{__name__}.OutOfStock=performance, ValueError=business_logic")
    rules = ErrorRules(overrides)
    assert rules.classify(f"{__name__}.OutOfStock")[0] == "performance"
    assert rules.classify(f"{__name__}.CardDeclined")[0] == "business_logic"


def test_overrides_reject_unknown_category():
    with pytest.raises(ValueError):
        parse_category_overrides("myapp.Error=billing")


def test_unknown_module_uses_name_and_context():
    rules = ErrorRules()
    assert rules.classify("not_loaded_module.SomeError", span_kind="client", attributes={"db.system": "redis"})[0] == "database"
    assert rules.classify("not_loaded_module.SomeError")[0] == "business_logic"


# -- fingerprints ---------------------------------------------------------------------------------


def lookup_order(order_id: str) -> None:
    raise KeyError(f"order {order_id} for customer-{order_id}@example.com not found")


def cancel_order(order_id: str) -> None:
    raise KeyError(f"order {order_id} not found")


def stacktrace_of(action) -> str:
    error = raised(action)
    return "".join(traceback.format_exception(error))


def test_fingerprint_ignores_varying_message():
    first = stacktrace_of(lambda: lookup_order("1001"))
    second = stacktrace_of(lambda: lookup_order("7d3c9a10-4f2b-4c55-9d1e-2b7f0a6c8e11"))
    assert fingerprint("KeyError", first, "order 1001") == fingerprint("KeyError", second, "order other")


def test_fingerprint_differs_by_call_site():
    first = stacktrace_of(lambda: lookup_order("1"))
    second = stacktrace_of(lambda: cancel_order("1"))
    assert fingerprint("KeyError", first, "") != fingerprint("KeyError", second, "")


def test_fingerprint_ignores_line_numbers_and_directories():
    trace = 'Traceback (most recent call last):\n  File "/srv/releases/41/shop/orders.py", line 10, in lookup\n    raise KeyError(1)\nKeyError: 1\n'
    moved = 'Traceback (most recent call last):\n  File "/srv/releases/42/shop/orders.py", line 57, in lookup\n        raise KeyError( 1 )\nKeyError: 2\n'
    assert fingerprint("KeyError", trace, "1") == fingerprint("KeyError", moved, "2")


def test_fingerprint_without_frames_uses_template():
    assert fingerprint("ValueError", None, "user 42 sent 'abc'") == fingerprint("ValueError", None, "user 7 sent 'xyz'")
    assert fingerprint("ValueError", None, "user 42 sent 'abc'") != fingerprint("ValueError", None, "order 42 lost")


def test_message_template_replaces_variable_parts():
    message = "order 42 of ops@example.com (7d3c9a10-4f2b-4c55-9d1e-2b7f0a6c8e11) said 'hello' at 0xdeadbeef"
    assert message_template(message) == "order <n> of <email> (<uuid>) said <value> at <hex>"


# -- the span step ---------------------------------------------------------------------------------


def span_with(event_attributes=None, *, kind=SpanKind.SERVER, attributes=None, status=StatusCode.ERROR):
    events = [Event("exception", event_attributes)] if event_attributes is not None else []
    return ReadableSpan(
        name="GET /orders/{order_id}",
        context=SpanContext(0x1, 0x2, False),
        attributes=attributes or {},
        events=events,
        kind=kind,
        status=Status(status),
    )


def test_step_labels_span_and_event():
    error = raised(lambda: lookup_order("5"))
    span = span_with(
        {
            "exception.type": type_name(error),
            "exception.message": str(error),
            "exception.stacktrace": "".join(traceback.format_exception(error)),
        },
        attributes={"http.response.status_code": 500},
    )
    labeled = ErrorCategorizer()(span)
    assert labeled.attributes["error.category"] == "system"
    assert labeled.attributes["error.severity"] == "high"
    assert labeled.attributes["error.type"] == "KeyError"
    assert len(labeled.attributes["error.fingerprint"]) == 32
    assert labeled.events[0].attributes["error.fingerprint"] == labeled.attributes["error.fingerprint"]


def test_step_leaves_healthy_span():
    span = span_with(None, status=StatusCode.UNSET, attributes={"http.response.status_code": 200})
    assert ErrorCategorizer()(span) is span


def test_step_uses_declared_error_type():
    span = span_with(None, kind=SpanKind.INTERNAL, attributes={"error.type": "sqlite3.OperationalError"})
    labeled = ErrorCategorizer()(span)
    assert labeled.attributes["error.category"] == "database"
    assert labeled.attributes["error.severity"] == "critical"


def test_step_labels_status_only_error():
    span = span_with(None, attributes={"http.response.status_code": 503})
    labeled = ErrorCategorizer()(span)
    assert labeled.attributes["error.category"] == "system"
    assert labeled.attributes["error.type"] == "503"


def test_errors_counted_once_per_failure():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    categorizer = ErrorCategorizer(meter_provider=MeterProvider(metric_readers=[reader]))
    failure = {"exception.type": "sqlite3.OperationalError", "exception.message": "no such table: orders"}
    categorizer(span_with(failure, kind=SpanKind.CLIENT, attributes={"db.system": "sqlite"}, status=StatusCode.ERROR))
    categorizer(span_with(failure, attributes={"http.response.status_code": 500}))  # the same failure, escaped
    # FastAPI's endpoint span: no exception event, the class in error.type, another message.
    categorizer(span_with(None, kind=SpanKind.INTERNAL, attributes={"error.type": "sqlite3.OperationalError"}))
    categorizer(span_with(None, attributes={"http.response.status_code": 503}))
    points = [
        point
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "raptorflow.errors"
        for point in metric.data.data_points
    ]
    counts = {(point.attributes["error.type"], point.attributes["error.category"]): point.value for point in points}
    assert counts == {("sqlite3.OperationalError", "database"): 1, ("503", "system"): 1}
