"""The demo (`examples/demo.py`) and its capture server (`examples/capture.py`).

The demo test runs the whole demo as a user would, without Spotlight, and checks its report. The
capture server tests feed it what sentry-sdk and the OTLP exporter produce themselves.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sentry_sdk
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from sentry_sdk.envelope import Envelope

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(EXAMPLES))

from capture import CaptureServer  # noqa: E402 - needs the examples folder on sys.path

DEMO_TIMEOUT_SECONDS = 120


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run `demo.py --no-spotlight --rounds 1` once; return its result and its temporary folder."""
    temp_dir = tmp_path_factory.mktemp("demo-tmp")
    env = {**os.environ, "TMPDIR": str(temp_dir)}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), "--no-spotlight", "--rounds", "1"],
        cwd=tmp_path_factory.mktemp("demo-cwd"),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
    )
    return result, temp_dir


def test_demo_exits_0(demo_run):
    result, _ = demo_run
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_report_lists_transactions_and_spans(demo_run):
    out = demo_run[0].stdout
    assert "every request got the status the example app is meant to answer" in out
    assert "Sentry transactions: 11" in out
    for name in (
        "GET /products/{product_id}",
        "POST /products",
        "GET /orders/{order_id}/broken",
        "GET /checkout/{product_id}",
        "GET /products/{product_id}/reviews",
    ):
        assert f"\n  {name}  x" in out, name
    assert re.search(r"^ +db +SELECT .*FROM products", out, re.MULTILINE)
    assert re.search(r"^ +http\.client +GET http://127\.0\.0\.1:\d+/inventory/", out, re.MULTILINE)
    assert "environment demo, release shop@demo" in out


def test_report_links_errors_to_transactions(demo_run):
    out = demo_run[0].stdout
    assert "Sentry error events: 2" in out
    assert "ValueError: discount code SPRING is expired" in out
    assert "OperationalError: (sqlite3.OperationalError) no such table: order_archive" in out
    assert re.search(r"top in-app frame: \S*shop_app\.py:\d+ check_discount_code", out)
    assert "transaction GET /boom (received, same trace id)" in out
    assert "transaction GET /orders/{order_id}/broken (received, same trace id)" in out
    assert "handled: no" in out


def test_report_shows_otlp_and_spotlight(demo_run):
    out = demo_run[0].stdout
    spans = re.search(r"^  spans: (\d+)", out, re.MULTILINE)
    assert spans
    assert int(spans.group(1)) > 0
    assert re.search(r"http\.server\.\w+", out.split("OTLP (what")[1])
    assert "Spotlight: not running" in out


def test_demo_removes_temporary_files(demo_run):
    _, temp_dir = demo_run
    assert list(temp_dir.iterdir()) == []


# --- Capture server ---------------------------------------------------------------------------


def _error_envelope(message: str) -> Envelope:
    envelope = Envelope(headers={"event_id": "a" * 32})
    envelope.add_event(
        {
            "event_id": "a" * 32,
            "level": "error",
            "exception": {"values": [{"type": "ValueError", "value": message}]},
        }
    )
    return envelope


def _post_envelope(capture: CaptureServer, body: bytes, encoding: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/x-sentry-envelope"}
    if encoding:
        headers["Content-Encoding"] = encoding
    return httpx.post(
        f"http://127.0.0.1:{capture.port}/api/{capture.project_id}/envelope/",
        content=body,
        headers=headers,
        trust_env=False,
    )


def test_capture_parses_gzip_envelope():
    body = io.BytesIO()
    _error_envelope("from a gzip body").serialize_into(body)
    with CaptureServer() as capture:
        response = _post_envelope(capture, gzip.compress(body.getvalue()), "gzip")
        assert response.status_code == 200
        assert response.json() == {"id": "a" * 32}
        (event,) = capture.errors()
    assert event["exception"]["values"][0]["value"] == "from a gzip body"


def test_capture_receives_sentry_transport_envelope():
    with CaptureServer() as capture:
        client = sentry_sdk.Client(dsn=capture.dsn, default_integrations=False, send_client_reports=False)
        try:
            client.capture_event({"message": "sent by the transport", "level": "error"})
            client.flush(timeout=10)
        finally:
            client.close(timeout=2)
        (event,) = capture.errors()
        # sentry-sdk compresses with brotli when the brotli package is installed, else with gzip.
        assert capture.envelope_encodings() in (["gzip"], ["br"])
        assert capture.rejected() == []
    assert event["message"] == "sent by the transport"


def test_capture_rejects_brotli_without_package():
    try:
        import brotli  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("brotli is installed, so brotli bodies are accepted")
    with CaptureServer() as capture:
        response = _post_envelope(capture, b"not really brotli", "br")
        assert response.status_code == 415
        assert capture.envelopes() == []


def test_capture_decodes_gzip_otlp_traces():
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[Span(name="GET /products", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)])])]
    )
    with CaptureServer() as capture:
        response = httpx.post(
            f"{capture.otlp_endpoint}/v1/traces",
            content=gzip.compress(request.SerializeToString()),
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
            trust_env=False,
        )
        assert response.status_code == 200
        assert [span.name for span in capture.otlp_spans()] == ["GET /products"]


def test_capture_rejects_proxy_connections():
    with CaptureServer() as capture:
        with httpx.Client(proxy=capture.proxy_url, trust_env=False) as client:
            with pytest.raises(httpx.ProxyError):
                client.get("https://sentry.invalid/")
        assert capture.rejected_connects() == ["sentry.invalid:443"]
