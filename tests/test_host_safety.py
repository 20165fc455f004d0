"""An exception inside any distro component is logged once, and the app's requests still succeed.

Each case breaks one component (`fault_hooks.TARGETS`) before the distro starts, runs the example
shop with Sentry and OTLP receivers on 127.0.0.1, and sends requests that succeed, fail with 404,
fail validation, raise an unhandled exception and query the database. Every response must be
what the app returns without telemetry, and the log must report the injected fault exactly once
(the guard summarizes repeats once a minute, and the test is shorter than that).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app_process import clean_environment, free_port, run_shop
from fault_hooks import TARGETS
from leak_search import attributes_of
from receivers import OTLPReceiver, Receiver, SentryReceiver, wait_for

TESTS = Path(__file__).resolve().parent
REQUESTS = [("/products/1", 200), ("/products/999", 404), ("/products/abc", 422), ("/boom", 500), ("/products", 200)]
ROUNDS = 6


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_broken_component_never_breaks_a_request(target: str, tmp_path: Path) -> None:
    with Receiver() as sentry, Receiver() as collector:
        port = free_port()
        env = clean_environment({
            "SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}",
            "SENTRY_DSN": f"http://key@127.0.0.1:{sentry.port}/1",
            "SENTRY_RELEASE": "shop@1.0.0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_SERVICE_NAME": "safety-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        })
        log_path = tmp_path / "app.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, str(TESTS / "fault_hooks.py"), target, str(port)],
                                       env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            headers = {"X-Session-ID": "safety-session", "X-User-ID": "user-7"}
            statuses = [(path, httpx.get(base + path, headers=headers, timeout=30).status_code) for _ in range(ROUNDS) for path, _ in REQUESTS]
            time.sleep(1.5)  # let the batch worker and the metric reader run into the fault
        finally:
            process.terminate()
            process.wait(30)
        log = log_path.read_text(errors="replace")

    assert statuses == [(path, status) for _ in range(ROUNDS) for path, status in REQUESTS], log
    reports = re.findall(rf"raptorflow-otel: .* failed \(RuntimeError: injected fault in {target}\)", log)
    assert len(reports) == 1, log


def test_own_export_calls_are_not_traced(tmp_path: Path) -> None:
    """The OTLP exporter sends with ``requests``; with the requests instrumentation loaded, its calls
    to the Collector must not become spans (the batch worker suppresses instrumentation)."""
    with SentryReceiver() as sentry, OTLPReceiver() as collector:
        env = {
            "PYTHONPATH": str(TESTS),
            "SENTRY_DSN": f"http://key@127.0.0.1:{sentry.port}/1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_SERVICE_NAME": "safety-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        }
        with run_shop(env, tmp_path, app="fault_app:app") as app:
            instrumented = app.get("/telemetry-health").json()["status"]["instrumented"]
            for _ in range(10):
                assert app.get("/products/1").status_code == 200
            wait_for(lambda: len(collector.spans()) >= 10 and collector.metric_names())
            time.sleep(1.5)  # several more exports, each of which would make a span if traced
        spans = collector.spans()

    assert "requests" in instrumented, instrumented
    receiver_ports = {str(sentry.port), str(collector.port)}
    traced_exports = [
        span.name for span in spans
        if any(port in str(value) for port in receiver_ports for value in attributes_of(span).values())
    ]
    assert traced_exports == []
