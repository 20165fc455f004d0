"""A broken Sentry or OTLP receiver never hurts the app, and export resumes when it recovers.

Each case runs the example shop under ``opentelemetry-instrument uvicorn`` with a Sentry and an
OTLP receiver on 127.0.0.1 (`fault_receiver.FaultyReceiver`). A bounded load (50 requests per
second, at most 8 in flight) runs once with both receivers healthy and once with one of them
broken (connection refused, 500, 429 with Retry-After, a 30 s stall, bytes that are not HTTP).
During the fault no request may fail, p99 latency stays near the healthy run's, memory stays
bounded, the drops show in ``get_health_status()``, and the log gets a few lines, not one per
batch. Then the receiver heals and new telemetry must arrive without a restart.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from app_process import run_shop
from fault_receiver import FaultyReceiver
from raptorflow_otel.distro.settings import load_settings
from raptorflow_otel.exporters import otlp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from overhead_http import run_load  # noqa: E402
from overhead_mix import BenchRequest  # noqa: E402

TESTS = Path(__file__).resolve().parent
MIX = [BenchRequest("GET", "/products/1", (), b"", 200)] * 8 + [
    BenchRequest("GET", "/products/999", (), b"", 404),
    BenchRequest("GET", "/boom", (), b"", 500),
]
REQUESTS_PER_PHASE = 300
RATE = 50.0
CONNECTIONS = 8
# "Within 10 % of the healthy run", with an absolute allowance for a 2-CPU test machine.
P99_FACTOR = 1.1
P99_ALLOWANCE_SECONDS = 0.15
MAX_RSS_GROWTH_MB = 50
MAX_FAULT_LOG_LINES = 8
RECOVERY_SECONDS = 20.0
DROP_WAIT_SECONDS = 15.0

FAULTS = ["refused", "500", "429", "stall", "garbage"]
# Where each destination's traces arrive.
TRACE_PATHS = {"sentry": "/api/", "otlp": "/v1/traces"}
# Log lines that come from the telemetry stack, not from the app or uvicorn.
TELEMETRY_LINE = re.compile(r"raptorflow-otel:|Failed to export|Transient error|Exception while exporting|Queue full|sentry", re.IGNORECASE)


def load(port: int) -> object:
    return asyncio.run(run_load(port, MIX, count=REQUESTS_PER_PHASE, rate=RATE, connections=CONNECTIONS))


def health(app) -> dict:
    return app.get("/telemetry-health").json()


def telemetry_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if TELEMETRY_LINE.search(line) and "Traceback" not in line]


@pytest.mark.parametrize("destination", ["sentry", "otlp"])
@pytest.mark.parametrize("fault", FAULTS)
def test_exporter_fault_never_hurts_the_app(destination: str, fault: str, tmp_path: Path) -> None:
    sentry = FaultyReceiver(b"{}", "application/json")
    collector = FaultyReceiver()
    broken = sentry if destination == "sentry" else collector
    env = {
        "PYTHONPATH": str(TESTS),
        "SENTRY_DSN": f"http://key@127.0.0.1:{sentry.port}/1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_SERVICE_NAME": "fault-test",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3000",
    }
    with sentry, collector, run_shop(env, tmp_path, app="fault_app:app") as app:
        healthy = load(app.port)
        assert healthy.failed == 0
        before = health(app)
        log_before = len(telemetry_lines(app.log()))

        broken.set_mode(fault)
        faulty = load(app.port)
        # A stalled receiver fails a request only when the sender's timeout (10 s) expires.
        deadline = time.monotonic() + DROP_WAIT_SECONDS
        during = health(app)
        while time.monotonic() < deadline and not any(name.startswith(destination) for name in during["status"]["dropped"]):
            time.sleep(0.5)
            during = health(app)
        fault_log = telemetry_lines(app.log())[log_before:]

        broken.set_mode("ok")
        recovered_before = broken.total("ok", TRACE_PATHS[destination])
        deadline = time.monotonic() + RECOVERY_SECONDS
        while time.monotonic() < deadline and broken.total("ok", TRACE_PATHS[destination]) <= recovered_before:
            app.get("/products/2")
            time.sleep(0.25)
        recovered = broken.total("ok", TRACE_PATHS[destination]) - recovered_before

    assert faulty.failed == 0, faulty.failures
    assert faulty.statuses == healthy.statuses
    healthy_p99, faulty_p99 = healthy.percentile(0.99), faulty.percentile(0.99)
    assert faulty_p99 <= healthy_p99 * P99_FACTOR + P99_ALLOWANCE_SECONDS, (healthy_p99, faulty_p99)
    assert during["rss_mb"] - before["rss_mb"] < MAX_RSS_GROWTH_MB
    dropped = during["status"]["dropped"]
    assert any(name.startswith(destination) for name in dropped), dropped
    assert len(fault_log) <= MAX_FAULT_LOG_LINES, "\n".join(fault_log)
    assert recovered > 0


def make_span() -> ReadableSpan:
    context = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return ReadableSpan(name="GET /", context=context, start_time=1, end_time=2, attributes={"http.request.method": "GET"})


@pytest.mark.parametrize(
    ("status", "retried"),
    [("400", False), ("404", False), ("500", False), ("501", False), ("429", True), ("502", True), ("503", True), ("504", True)],
)
def test_otlp_retries_only_429_502_503_504(status: str, retried: bool) -> None:
    with FaultyReceiver(retry_after="0") as receiver:
        receiver.set_mode(status)
        settings = load_settings({
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5000",
        })
        exporter = otlp.create_exporter(settings, "TRACES")

        result = exporter.export([make_span()])
        exporter.shutdown()

    attempts = receiver.total(status, "/v1/traces")
    assert result is SpanExportResult.FAILURE
    assert (attempts > 1) is retried, attempts
    # A retry sends the same batch again.
    assert len(set(receiver.bodies[status])) == 1


def test_health_reports_sentry_drops_by_reason(tmp_path: Path) -> None:
    with FaultyReceiver() as refused:
        env = {"PYTHONPATH": str(TESTS), "SENTRY_DSN": f"http://key@127.0.0.1:{refused.port}/1", "OTEL_SERVICE_NAME": "fault-test"}
        refused.set_mode("refused")
        with run_shop(env, tmp_path, app="fault_app:app") as app:
            for _ in range(5):
                assert app.get("/boom").status_code == 500
            deadline = time.monotonic() + 10
            dropped: dict = {}
            while time.monotonic() < deadline and not dropped.get("sentry"):
                time.sleep(0.3)
                dropped = health(app)["status"]["dropped"]
            log = app.log()

    assert dropped["sentry"].get("network", 0) >= 1, dropped
    assert log.count("raptorflow-otel: sentry export failed") == 1
