"""The main-path scenario: the example shop under `opentelemetry-instrument`, driven over HTTP.

`run_scenario` starts loopback receivers (Sentry envelopes, OTLP/HTTP, a fake inventory service),
launches the shop with environment variables only, sends a fixed set of requests, waits until the
receivers have what the requests should produce, stops the app with SIGTERM and returns everything
recorded. The e2e tests and the version-matrix test both check the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app_process import run_shop
from receivers import OTLPReceiver, Receiver, SentryReceiver, wait_for

INCOMING_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT_ID = "00f067aa0ba902b7"
SENTRY_TRACE_ID = "771a43a4192642f0b136d5159a501700"
SENTRY_PARENT_ID = "b0e6f15b45c36b12"


@dataclass
class ScenarioResult:
    statuses: dict[str, int] = field(default_factory=dict)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    envelopes: list[Any] = field(default_factory=list)
    otlp_spans: list[Any] = field(default_factory=list)
    metric_names: set[str] = field(default_factory=set)
    inventory_requests: list[Any] = field(default_factory=list)
    # Status each request must return in this run: `EXPECTED_STATUSES`, with the reviews status that
    # run_scenario got.
    expected_statuses: dict[str, int] = field(default_factory=dict)
    log: str = ""
    exit_code: int | None = None

    def transactions_named(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.transactions if event.get("transaction") == name]

    def errors_of_type(self, exception_type: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.errors
            if event["exception"]["values"][-1]["type"] == exception_type
        ]


def base_env(sentry: SentryReceiver, otlp: OTLPReceiver, inventory: Receiver) -> dict[str, str]:
    return {
        "SENTRY_DSN": sentry.dsn,
        "SENTRY_ENVIRONMENT": "e2e",
        "SENTRY_RELEASE": "shop@1.2.3",
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "SHOP_INVENTORY_URL": f"http://127.0.0.1:{inventory.port}",
    }


# name -> (method, path, request kwargs)
REQUESTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "list": ("GET", "/products?limit=5&token=abc", {}),
    "detail": ("GET", "/products/1", {}),
    "create": ("POST", "/products", {"json": {"name": "Lamp", "price": 12.5}}),
    "invalid": ("POST", "/products", {"json": {"name": "", "price": -1}}),
    "missing": ("GET", "/products/999", {}),
    "unmatched": ("GET", "/no/such/path/123", {}),
    "boom": ("GET", "/boom?code=SPRING", {}),
    "broken": ("GET", "/orders/7/broken", {}),
    "reviews": ("GET", "/products/1/reviews", {}),
    "traceparent": (
        "GET",
        "/products/2",
        {"headers": {"traceparent": f"00-{INCOMING_TRACE_ID}-{INCOMING_PARENT_ID}-01"}},
    ),
    "sentry_trace": (
        "GET",
        "/products/3",
        {"headers": {"sentry-trace": f"{SENTRY_TRACE_ID}-{SENTRY_PARENT_ID}-1"}},
    ),
    "checkout": ("GET", "/checkout/1", {}),
}

# The HTTP server duration histogram, by its new and its old semantic-convention name.
HTTP_DURATION_METRICS = frozenset({"http.server.request.duration", "http.server.duration"})

# name -> status the shop returns without telemetry, with every example requirement installed.
EXPECTED_STATUSES: dict[str, int] = {
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


def run_scenario(
    tmp_path: Path,
    *,
    bin_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    reviews_status: int = 200,
) -> ScenarioResult:
    """Run the scenario with the app from ``bin_dir`` (default: this interpreter's venv).

    ``reviews_status`` is what the async route ``/products/{id}/reviews`` must return: 200, or 503
    in a venv without greenlet, where the shop cannot build its async engine. It is recorded in
    ``expected_statuses``; every request still yields one transaction either way.
    """
    result = ScenarioResult(expected_statuses={**EXPECTED_STATUSES, "reviews": reviews_status})
    inventory_body = json.dumps({"product_id": 1, "in_stock": 5}).encode()
    with SentryReceiver() as sentry, OTLPReceiver() as otlp, Receiver(inventory_body) as inventory:
        env = {**base_env(sentry, otlp, inventory), **(extra_env or {})}
        with run_shop(env, tmp_path, bin_dir=bin_dir) as app:
            for name, (method, path, kwargs) in REQUESTS.items():
                response = app.post(path, **kwargs) if method == "POST" else app.get(path, **kwargs)
                result.statuses[name] = response.status_code
            # Every request but /health yields one transaction; two requests fail with an exception.
            wait_for(lambda: len([t for t in sentry.transactions() if t["transaction"] != "GET /health"]) >= len(REQUESTS), timeout=30)
            wait_for(lambda: len(sentry.errors()) >= 2, timeout=30)
            # Wait for what the checks need rather than for the first export, because the app stops
            # with SIGTERM. NOTE: uvicorn then re-raises SIGTERM, so atexit handlers do not run and
            # spans or metrics the app still buffers are lost.
            wait_for(lambda: len([s for s in otlp.spans() if s.kind == s.SPAN_KIND_SERVER]) >= len(REQUESTS), timeout=30)
            wait_for(lambda: HTTP_DURATION_METRICS & otlp.metric_names(), timeout=30)
            result.exit_code = app.stop()
            result.log = app.log()
        result.transactions = [t for t in sentry.transactions() if t["transaction"] != "GET /health"]
        result.errors = sentry.errors()
        result.envelopes = sentry.envelopes()
        result.otlp_spans = otlp.spans()
        result.metric_names = otlp.metric_names()
        result.inventory_requests = inventory.snapshot("/inventory/")
    return result
