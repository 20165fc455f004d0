"""Assertions on one run of the main scenario (`scenario.run_scenario`), shared by two modules.

`test_e2e.py` calls every check here on a run in the development environment. `test_compat.py`
calls `CORE_CHECKS` on a run in each venv of the FastAPI/SQLAlchemy version matrix. Each check takes the
`ScenarioResult` and raises AssertionError; none starts an app or a receiver.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import sentry_relay

from scenario import (
    HTTP_DURATION_METRICS,
    INCOMING_PARENT_ID,
    INCOMING_TRACE_ID,
    SENTRY_PARENT_ID,
    SENTRY_TRACE_ID,
    ScenarioResult,
)

Check = Callable[[ScenarioResult], None]


def db_spans(transaction: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for span in transaction["spans"] if span["op"] == "db"]


def check_statuses(scenario: ScenarioResult) -> None:
    """Check that every request returns the status it returns without telemetry."""
    assert scenario.statuses == scenario.expected_statuses


def check_one_transaction_per_request(scenario: ScenarioResult) -> None:
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


def check_transaction_fields(scenario: ScenarioResult) -> None:
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


def check_transactions_carry_db_spans(scenario: ScenarioResult) -> None:
    for name in ("GET /products", "POST /products", "GET /products/{product_id}/reviews"):
        for transaction in scenario.transactions_named(name):
            if transaction["contexts"]["trace"]["status"] != "ok":
                continue
            spans = db_spans(transaction)
            assert spans, f"{name} has no db span"
            assert all(span["data"].get("db.system") or span["data"].get("db.system.name") for span in spans)
            assert all(span["parent_span_id"] for span in spans)


def check_db_statement_has_no_literals(scenario: ScenarioResult) -> None:
    (broken,) = scenario.transactions_named("GET /orders/{order_id}/broken")
    statements = [span["description"] for span in db_spans(broken)]
    assert statements
    assert all("7" not in statement for statement in statements), statements


def check_unhandled_exception_linked(scenario: ScenarioResult) -> None:
    """Check that ``/boom`` produced one unhandled ValueError event in its transaction's trace."""
    errors = scenario.errors_of_type("ValueError")
    assert len(errors) == 1
    error = errors[0]
    (transaction,) = scenario.transactions_named("GET /boom")
    assert error["contexts"]["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    value = error["exception"]["values"][-1]
    assert value["mechanism"]["handled"] is False


def check_unhandled_exception_details(scenario: ScenarioResult) -> None:
    """Check the message, frames, request and release of the ``/boom`` ValueError event."""
    (error,) = scenario.errors_of_type("ValueError")
    value = error["exception"]["values"][-1]
    assert value["value"] == "discount code SPRING is expired"
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


def check_failing_query_one_error(scenario: ScenarioResult) -> None:
    """Check that ``/orders/7/broken`` produced one OperationalError event."""
    errors = scenario.errors_of_type("OperationalError")
    assert len(errors) == 1


def check_failing_query_error_on_db_span(scenario: ScenarioResult) -> None:
    (error,) = scenario.errors_of_type("OperationalError")
    (transaction,) = scenario.transactions_named("GET /orders/{order_id}/broken")
    assert transaction["contexts"]["trace"]["status"] == "internal_error"
    db_span_ids = {span["span_id"] for span in db_spans(transaction)}
    assert error["contexts"]["trace"]["span_id"] in db_span_ids
    assert error["exception"]["values"][-1]["mechanism"]["handled"] is False


def check_errors_categorized(scenario: ScenarioResult) -> None:
    """Check category, severity, level and fingerprint of the two error events of the scenario."""
    (query_error,) = scenario.errors_of_type("OperationalError")
    assert query_error["tags"]["error.category"] == "database"
    assert query_error["tags"]["error.severity"] == "critical"  # a failing query: an outage
    assert query_error["level"] == "fatal"
    (value_error,) = scenario.errors_of_type("ValueError")
    assert value_error["tags"]["error.category"] == "validation"
    assert value_error["tags"]["error.severity"] == "high"  # it reached the user as a 500
    assert value_error["level"] == "error"
    fingerprints = {tuple(query_error["fingerprint"]), tuple(value_error["fingerprint"])}
    assert len(fingerprints) == 2
    assert all(len(item) == 1 and len(item[0]) == 32 for item in fingerprints)


def check_error_metric_exported(scenario: ScenarioResult) -> None:
    assert "raptorflow.errors" in scenario.metric_names


def check_not_found_without_error_event(scenario: ScenarioResult) -> None:
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


def check_validation_error_is_not_an_error_event(scenario: ScenarioResult) -> None:
    invalid = [
        t for t in scenario.transactions_named("POST /products")
        if t["contexts"]["trace"]["status"] != "ok"
    ]
    assert len(invalid) == 1
    assert invalid[0]["contexts"]["trace"]["status"] == "invalid_argument"
    assert len(scenario.errors) == 2


def check_incoming_traceparent_joins_trace(scenario: ScenarioResult) -> None:
    joined = [
        t for t in scenario.transactions
        if t["contexts"]["trace"]["trace_id"] == INCOMING_TRACE_ID
    ]
    assert len(joined) == 1
    assert joined[0]["contexts"]["trace"]["parent_span_id"] == INCOMING_PARENT_ID


def check_incoming_sentry_trace_joins_trace(scenario: ScenarioResult) -> None:
    joined = [
        t for t in scenario.transactions
        if t["contexts"]["trace"]["trace_id"] == SENTRY_TRACE_ID
    ]
    assert len(joined) == 1
    assert joined[0]["contexts"]["trace"]["parent_span_id"] == SENTRY_PARENT_ID


def check_outgoing_httpx_carries_both_headers(scenario: ScenarioResult) -> None:
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


def check_every_payload_passes_sentry_normalizer(scenario: ScenarioResult) -> None:
    normalizer = sentry_relay.StoreNormalizer()
    checked = 0
    for envelope in scenario.envelopes:
        for item in envelope.items:
            if item.type in ("transaction", "event"):
                normalized = normalizer.normalize_event(json.loads(item.payload.get_bytes()))
                assert "errors" not in normalized, normalized.get("errors")
                checked += 1
    assert checked >= len(scenario.transactions) + len(scenario.errors)


def check_otlp_server_spans_and_http_metric(scenario: ScenarioResult) -> None:
    server_spans = [span for span in scenario.otlp_spans if span.kind == span.SPAN_KIND_SERVER]
    assert len(server_spans) >= 12
    names = {span.name for span in server_spans}
    assert "GET /products/{product_id}" in names
    assert not [name for name in names if "999" in name or "no/such" in name]
    assert HTTP_DURATION_METRICS & scenario.metric_names


def check_otlp_system_metrics(scenario: ScenarioResult) -> None:
    assert {"system.cpu.time", "process.cpu.time", "system.memory.usage", "process.memory.usage"} & scenario.metric_names


def check_no_receive_or_send_spans(scenario: ScenarioResult) -> None:
    names = {span.name for span in scenario.otlp_spans}
    assert not [name for name in names if name.endswith(("http receive", "http send"))]
    # Native FastAPI's internal operation spans are off by default (RAPTORFLOW_FASTAPI_OPERATION_SPANS).
    assert not [name for name in names if name.startswith(("fastapi.dependencies", "fastapi.endpoint", "fastapi.serialization"))]


def check_app_exits_cleanly(scenario: ScenarioResult) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too.
    assert scenario.exit_code in (0, -15)
    assert "raptorflow-otel:" not in scenario.log
    assert "Exception while exporting" not in scenario.log


# The invariants every supported FastAPI/SQLAlchemy combination must keep.
CORE_CHECKS: tuple[Check, ...] = (
    check_statuses,
    check_one_transaction_per_request,
    check_transactions_carry_db_spans,
    check_unhandled_exception_linked,
    check_failing_query_one_error,
    check_errors_categorized,
    check_error_metric_exported,
    check_not_found_without_error_event,
    check_incoming_traceparent_joins_trace,
    check_outgoing_httpx_carries_both_headers,
    check_every_payload_passes_sentry_normalizer,
    check_otlp_server_spans_and_http_metric,
    check_no_receive_or_send_spans,
    check_app_exits_cleanly,
)
