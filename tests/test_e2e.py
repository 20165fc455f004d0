"""End-to-end: the example shop under `opentelemetry-instrument uvicorn`, configured by env vars only.

One run of the scenario (see `scenario.py`) feeds most tests in this module; the runs with other
settings (unsampled traces, no destination, gRPC) start their own app.
"""

from __future__ import annotations

import json

import pytest
import sentry_relay

from app_process import run_shop
from receivers import OTLPReceiver, Receiver, SentryReceiver, wait_for
from scenario import (
    INCOMING_PARENT_ID,
    INCOMING_TRACE_ID,
    SENTRY_PARENT_ID,
    SENTRY_TRACE_ID,
    run_scenario,
)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return run_scenario(tmp_path_factory.mktemp("e2e"))


def _db_spans(transaction):
    return [span for span in transaction["spans"] if span["op"] == "db"]


def test_requests_answered_as_without_telemetry(scenario):
    assert scenario.statuses == {
        "list": 200,
        "detail": 200,
        "create": 201,
        "invalid": 422,
        "missing": 404,
        "unmatched": 404,
        "boom": 500,
        "broken": 500,
        "reviews": 200,
        "traceparent": 200,
        "sentry_trace": 200,
        "checkout": 200,
    }


def test_one_transaction_per_request(scenario):
    names = sorted(event["transaction"] for event in scenario.transactions)
    assert names == sorted(
        [
            "GET /products",
            "GET /products/{product_id}",
            "GET /products/{product_id}",
            "GET /products/{product_id}",
            "POST /products",
            "POST /products",
            "GET /products/{product_id}",
            "GET",
            "GET /boom",
            "GET /orders/{order_id}/broken",
            "GET /products/{product_id}/reviews",
            "GET /checkout/{product_id}",
        ]
    )


def test_transaction_fields(scenario):
    (listing,) = scenario.transactions_named("GET /products")
    assert listing["transaction_info"] == {"source": "route"}
    assert listing["contexts"]["trace"]["op"] == "http.server"
    assert listing["contexts"]["trace"]["status"] == "ok"
    assert listing["environment"] == "e2e"
    assert listing["release"] == "shop@1.2.3"
    assert listing["server_name"]
    assert listing["request"]["method"] == "GET"
    assert listing["request"]["url"].endswith("/products")
    assert "token" not in json.dumps(listing["request"])
    assert listing["start_timestamp"] < listing["timestamp"]


def test_transactions_carry_db_spans(scenario):
    for name in ("GET /products", "POST /products", "GET /products/{product_id}/reviews"):
        for transaction in scenario.transactions_named(name):
            if transaction["contexts"]["trace"]["status"] != "ok":
                continue
            spans = _db_spans(transaction)
            assert spans, f"{name} has no db span"
            assert all(span["data"].get("db.system") or span["data"].get("db.system.name") for span in spans)
            assert all(span["parent_span_id"] for span in spans)


def test_db_statement_has_no_literals(scenario):
    (broken,) = scenario.transactions_named("GET /orders/{order_id}/broken")
    statements = [span["description"] for span in _db_spans(broken)]
    assert statements
    assert all("7" not in statement for statement in statements), statements


def test_unhandled_exception_one_linked_error(scenario):
    errors = scenario.errors_of_type("ValueError")
    assert len(errors) == 1
    error = errors[0]
    (transaction,) = scenario.transactions_named("GET /boom")
    assert error["contexts"]["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    value = error["exception"]["values"][-1]
    assert value["value"] == "discount code SPRING is expired"
    assert value["mechanism"]["handled"] is False
    frames = value["stacktrace"]["frames"]
    assert frames[-1]["function"] == "check_discount_code"
    assert frames[-1]["in_app"] is True
    assert any(frame["in_app"] is False for frame in frames)
    assert error["request"]["method"] == "GET"
    assert error["request"]["url"].endswith("/boom")
    assert "SPRING" not in error["request"]["url"]
    assert error["environment"] == "e2e"
    assert error["release"] == "shop@1.2.3"
    assert error["server_name"]
    assert error["transaction"] == "GET /boom"


def test_failing_query_one_error_on_db_span(scenario):
    errors = scenario.errors_of_type("OperationalError")
    assert len(errors) == 1
    (transaction,) = scenario.transactions_named("GET /orders/{order_id}/broken")
    assert transaction["contexts"]["trace"]["status"] == "internal_error"
    db_span_ids = {span["span_id"] for span in _db_spans(transaction)}
    assert errors[0]["contexts"]["trace"]["span_id"] in db_span_ids
    assert errors[0]["exception"]["values"][-1]["mechanism"]["handled"] is False


def test_not_found_without_error_event(scenario):
    missing = [
        t for t in scenario.transactions_named("GET /products/{product_id}")
        if t["contexts"]["trace"]["status"] == "not_found"
    ]
    assert len(missing) == 1
    (unmatched,) = scenario.transactions_named("GET")
    assert unmatched["contexts"]["trace"]["status"] == "not_found"
    assert unmatched["transaction_info"]["source"] == "custom"
    traces = {t["contexts"]["trace"]["trace_id"] for t in missing + [unmatched]}
    assert not [e for e in scenario.errors if e["contexts"]["trace"]["trace_id"] in traces]


def test_validation_error_is_not_an_error_event(scenario):
    invalid = [
        t for t in scenario.transactions_named("POST /products")
        if t["contexts"]["trace"]["status"] != "ok"
    ]
    assert len(invalid) == 1
    assert invalid[0]["contexts"]["trace"]["status"] == "invalid_argument"
    assert len(scenario.errors) == 2


def test_incoming_traceparent_joins_trace(scenario):
    joined = [
        t for t in scenario.transactions
        if t["contexts"]["trace"]["trace_id"] == INCOMING_TRACE_ID
    ]
    assert len(joined) == 1
    assert joined[0]["contexts"]["trace"]["parent_span_id"] == INCOMING_PARENT_ID


def test_incoming_sentry_trace_joins_trace(scenario):
    joined = [
        t for t in scenario.transactions
        if t["contexts"]["trace"]["trace_id"] == SENTRY_TRACE_ID
    ]
    assert len(joined) == 1
    assert joined[0]["contexts"]["trace"]["parent_span_id"] == SENTRY_PARENT_ID


def test_outgoing_httpx_carries_both_headers(scenario):
    (request,) = scenario.inventory_requests
    (checkout,) = scenario.transactions_named("GET /checkout/{product_id}")
    trace_id = checkout["contexts"]["trace"]["trace_id"]
    assert request.headers["traceparent"].split("-")[1] == trace_id
    assert request.headers["sentry-trace"].split("-")[0] == trace_id
    assert f"sentry-trace_id={trace_id}" in request.headers["baggage"]
    client_spans = [span for span in checkout["spans"] if span["op"] == "http.client"]
    assert len(client_spans) == 1
    assert client_spans[0]["description"].startswith("GET http://127.0.0.1:")
    assert request.headers["traceparent"].split("-")[2] == client_spans[0]["span_id"]


def test_every_payload_passes_sentry_normalizer(scenario):
    normalizer = sentry_relay.StoreNormalizer()
    checked = 0
    for envelope in scenario.envelopes:
        for item in envelope.items:
            if item.type in ("transaction", "event"):
                normalized = normalizer.normalize_event(json.loads(item.payload.get_bytes()))
                assert "errors" not in normalized, normalized.get("errors")
                checked += 1
    assert checked >= len(scenario.transactions) + len(scenario.errors)


def test_otlp_receives_traces_and_metrics(scenario):
    server_spans = [span for span in scenario.otlp_spans if span.kind == span.SPAN_KIND_SERVER]
    assert len(server_spans) >= 12
    names = {span.name for span in server_spans}
    assert "GET /products/{product_id}" in names
    assert not [name for name in names if "999" in name or "no/such" in name]
    assert {"http.server.request.duration", "http.server.duration"} & scenario.metric_names
    assert {"system.cpu.time", "process.cpu.time", "system.memory.usage", "process.memory.usage"} & scenario.metric_names


def test_no_receive_or_send_spans(scenario):
    names = {span.name for span in scenario.otlp_spans}
    assert not [name for name in names if name.endswith(("http receive", "http send"))]


def test_app_exits_cleanly(scenario):
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too.
    assert scenario.exit_code in (0, -15)
    assert "raptorflow-otel:" not in scenario.log
    assert "Exception while exporting" not in scenario.log


def test_unsampled_trace_still_reports_error(tmp_path):
    with SentryReceiver() as sentry:
        env = {"SENTRY_DSN": sentry.dsn, "SENTRY_TRACES_SAMPLE_RATE": "0", "OTEL_BSP_SCHEDULE_DELAY": "200"}
        with run_shop(env, tmp_path) as app:
            assert app.get("/boom").status_code == 500
            assert app.get("/orders/1/broken").status_code == 500
            assert app.get("/products/1").status_code == 200
            errors = wait_for(lambda: len(sentry.errors()) >= 2 and sentry.errors())
            app.stop()
        assert sorted(e["exception"]["values"][-1]["type"] for e in errors) == ["OperationalError", "ValueError"]
        assert sentry.transactions() == []


def test_no_destination_logs_one_line(tmp_path):
    with run_shop({}, tmp_path) as app:
        assert app.get("/products").status_code == 200
        assert app.get("/boom").status_code == 500
        app.stop()
        log = app.log()
    assert log.count("telemetry is not exported") == 1
    assert "Connection refused" not in log
    assert "localhost:4318" not in log


def test_grpc_protocol_exports_traces(tmp_path):
    from grpc_receiver import GrpcTraceReceiver

    with GrpcTraceReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        with run_shop(env, tmp_path) as app:
            assert app.get("/products/1").status_code == 200
            spans = wait_for(lambda: receiver.spans())
    assert "GET /products/{product_id}" in {span.name for span in spans}


def test_bad_setting_warns_once_and_app_starts(tmp_path):
    with SentryReceiver() as sentry:
        env = {"SENTRY_DSN": sentry.dsn, "SENTRY_TRACES_SAMPLE_RATE": "lots", "OTEL_BSP_SCHEDULE_DELAY": "200"}
        with run_shop(env, tmp_path) as app:
            assert app.get("/products/1").status_code == 200
            wait_for(lambda: sentry.transactions())
            app.stop()
            log = app.log()
    assert log.count("SENTRY_TRACES_SAMPLE_RATE") == 1
    assert "Invalid SENTRY_TRACES_SAMPLE_RATE='lots': expected a number from 0 to 1. Using 1.0 instead." in log


def test_app_with_own_sentry_init_not_duplicated(tmp_path):
    with SentryReceiver() as sentry:
        env = {"SENTRY_DSN": sentry.dsn, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        with run_shop(env, tmp_path, app="shop_with_sentry_sdk:app") as app:
            assert app.get("/products/1").status_code == 200
            assert app.get("/boom").status_code == 500
            wait_for(lambda: len(sentry.transactions()) >= 3 and sentry.errors())
            app.stop()
        names = [t["transaction"] for t in sentry.transactions() if t["transaction"] != "GET /health"]
        errors = sentry.errors()
    assert sorted(names) == ["GET /boom", "GET /products/{product_id}"]
    assert len(errors) == 1
    assert errors[0]["sdk"]["name"] == "raptorflow-otel"
