"""End-to-end: the example shop under `opentelemetry-instrument uvicorn`, configured by env vars only.

One run of the scenario (see `scenario.py`) feeds most tests in this module; the runs with other
settings (unsampled traces, no destination, gRPC) start their own app.
"""

from __future__ import annotations

import pytest

# pytest rewrites asserts only in test modules and registered ones. Without this, a failed check
# in checks.py would not show the values it compared.
pytest.register_assert_rewrite("checks")

import checks  # noqa: E402
from app_process import run_shop  # noqa: E402
from receivers import OTLPReceiver, Receiver, SentryReceiver, wait_for  # noqa: E402
from sentry_sdk.envelope import Envelope  # noqa: E402
from scenario import EXPECTED_STATUSES, run_scenario  # noqa: E402


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return run_scenario(tmp_path_factory.mktemp("e2e"))


def test_requests_answered_as_without_telemetry(scenario):
    assert scenario.expected_statuses == EXPECTED_STATUSES == {
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
    checks.check_statuses(scenario)


def test_one_transaction_per_request(scenario):
    checks.check_one_transaction_per_request(scenario)


def test_transaction_fields(scenario):
    checks.check_transaction_fields(scenario)


def test_transactions_carry_db_spans(scenario):
    checks.check_transactions_carry_db_spans(scenario)


def test_db_statement_has_no_literals(scenario):
    checks.check_db_statement_has_no_literals(scenario)


def test_unhandled_exception_one_linked_error(scenario):
    checks.check_unhandled_exception_linked(scenario)
    checks.check_unhandled_exception_details(scenario)


def test_failing_query_one_error_on_db_span(scenario):
    checks.check_failing_query_one_error(scenario)
    checks.check_failing_query_error_on_db_span(scenario)


def test_error_events_categorized(scenario):
    checks.check_errors_categorized(scenario)
    checks.check_error_metric_exported(scenario)


def test_not_found_without_error_event(scenario):
    checks.check_not_found_without_error_event(scenario)


def test_validation_error_is_not_an_error_event(scenario):
    checks.check_validation_error_is_not_an_error_event(scenario)


def test_incoming_traceparent_joins_trace(scenario):
    checks.check_incoming_traceparent_joins_trace(scenario)


def test_incoming_sentry_trace_joins_trace(scenario):
    checks.check_incoming_sentry_trace_joins_trace(scenario)


def test_outgoing_httpx_carries_both_headers(scenario):
    checks.check_outgoing_httpx_carries_both_headers(scenario)


def test_every_payload_passes_sentry_normalizer(scenario):
    checks.check_every_payload_passes_sentry_normalizer(scenario)


def test_otlp_receives_traces_and_metrics(scenario):
    checks.check_otlp_server_spans_and_http_metric(scenario)
    checks.check_otlp_system_metrics(scenario)


def test_no_receive_or_send_spans(scenario):
    checks.check_no_receive_or_send_spans(scenario)


def test_app_exits_cleanly(scenario):
    checks.check_app_exits_cleanly(scenario)


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
            names = wait_for(
                lambda: "GET /products/{product_id}" in {span.name for span in receiver.spans()}
                and {span.name for span in receiver.spans()}
            )
    assert "GET /products/{product_id}" in names


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
    assert "only instruments" not in log


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


def test_sigterm_flushes_pending_telemetry(tmp_path):
    with SentryReceiver() as sentry, OTLPReceiver() as otlp:
        env = {
            "SENTRY_DSN": sentry.dsn,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
            "OTEL_METRIC_EXPORT_INTERVAL": "60000",
        }
        with run_shop(env, tmp_path) as app:
            assert app.get("/products/1").status_code == 200
            assert app.get("/boom").status_code == 500
            assert sentry.transactions() == []
            exit_code = app.stop()
        names = {t["transaction"] for t in sentry.transactions()}
        errors = sentry.errors()
        spans = otlp.spans()
        metrics = otlp.metric_names()
    assert exit_code == -15
    assert {"GET /products/{product_id}", "GET /boom"} <= names
    assert len(errors) == 1
    assert "GET /products/{product_id}" in {span.name for span in spans}
    assert {"http.server.request.duration", "http.server.duration"} & metrics


def test_spotlight_receives_envelopes_without_dsn(tmp_path):
    with Receiver() as spotlight:
        env = {"SENTRY_SPOTLIGHT": f"http://127.0.0.1:{spotlight.port}/stream", "OTEL_BSP_SCHEDULE_DELAY": "200"}
        with run_shop(env, tmp_path) as app:
            assert app.get("/products/1").status_code == 200
            assert app.get("/boom").status_code == 500
            requests = wait_for(lambda: len(spotlight.snapshot("/stream")) >= 3 and spotlight.snapshot("/stream"))
    envelopes = [Envelope.deserialize(request.body) for request in requests]
    types = [item.type for envelope in envelopes for item in envelope.items]
    assert "transaction" in types
    assert "event" in types
    assert all(request.headers["content-type"] == "application/x-sentry-envelope" for request in requests)
