"""Stopping the app: telemetry is flushed at SIGTERM, and exit is bounded when a destination is down.

Each end-to-end case runs the example shop under ``opentelemetry-instrument uvicorn`` (single
process) with receivers on 127.0.0.1: healthy ones from `receivers`, a `StalledReceiver` that
accepts connections and never responds, or a port where nothing listens (connection refused).
Spans and metrics are held back (60 s schedule delay and export interval), so everything the
requests produced is still pending when the signal arrives. Exit times are measured and checked
against a generous bound derived from the configured export timeouts.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from app_process import AppProcess, free_port, run_shop
from receivers import OTLPReceiver, SentryReceiver, wait_for
from raptorflow_otel.distro import shutdown
from raptorflow_otel.distro.settings import load_settings

SPAN_EXPORT_TIMEOUT_MS = 2000
METRIC_EXPORT_TIMEOUT_MS = 2000
# One OTLP export may take this long. It is set far above the two timeouts above, so that only
# the distro's own bound can make the app exit in time.
OTLP_TIMEOUT_MS = 20000
# Time the app may need besides the flush: uvicorn's graceful shutdown and interpreter exit.
EXIT_SLACK_SECONDS = 6.0
EXIT_BOUND_SECONDS = (SPAN_EXPORT_TIMEOUT_MS + METRIC_EXPORT_TIMEOUT_MS) / 1000 + EXIT_SLACK_SECONDS

HELD_BACK = {
    "OTEL_BSP_SCHEDULE_DELAY": "60000",
    "OTEL_METRIC_EXPORT_INTERVAL": "60000",
    "OTEL_BSP_EXPORT_TIMEOUT": str(SPAN_EXPORT_TIMEOUT_MS),
    "OTEL_METRIC_EXPORT_TIMEOUT": str(METRIC_EXPORT_TIMEOUT_MS),
    "OTEL_EXPORTER_OTLP_TIMEOUT": str(OTLP_TIMEOUT_MS),
}
SENTRY_KEY = "0123456789abcdef0123456789abcdef"


class StalledReceiver:
    """A TCP server on 127.0.0.1 that accepts every connection and never reads or responds."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections.append(connection)

    def __enter__(self) -> "StalledReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()
        for connection in self.connections:
            connection.close()


def sentry_dsn(port: int) -> str:
    return f"http://{SENTRY_KEY}@127.0.0.1:{port}/42"


def send_requests(app: AppProcess) -> None:
    """Send two requests that each become a transaction, and one that raises (an error event)."""
    assert app.get("/products/1").status_code == 200
    assert app.get("/products/2").status_code == 200
    assert app.get("/boom").status_code == 500


def stop_and_time(app: AppProcess, signum: int, timeout: float = 60.0) -> tuple[int | None, float]:
    """Send ``signum``, wait for the app to exit, and return its exit code and the seconds it took."""
    started = time.monotonic()
    app.process.send_signal(signum)
    try:
        code = app.process.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


def request_transactions(sentry: SentryReceiver) -> list[dict]:
    return [event for event in sentry.transactions() if event["transaction"] != "GET /health"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_exit_bounded_when_receivers_stall(signum: int, tmp_path: Path) -> None:
    with StalledReceiver() as stalled:
        env = {
            "SENTRY_DSN": sentry_dsn(stalled.port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{stalled.port}",
            **HELD_BACK,
        }
        with run_shop(env, tmp_path) as app:
            send_requests(app)
            code, seconds = stop_and_time(app, signum)
            log = app.log()
        tried = len(stalled.connections)

    assert code is not None, f"the app did not exit within 60 s of {signum!r}:\n{log[-3000:]}"
    assert seconds < EXIT_BOUND_SECONDS, f"exit took {seconds:.1f} s"
    # uvicorn raises SIGTERM again after its graceful shutdown, while SIGINT ends in a normal exit.
    assert code == (-signal.SIGTERM if signum == signal.SIGTERM else 0)
    assert tried >= 1
    assert f"within OTEL_BSP_EXPORT_TIMEOUT={SPAN_EXPORT_TIMEOUT_MS} ms" in log


def test_sigterm_exit_bounded_when_receivers_refuse(tmp_path: Path) -> None:
    port = free_port()  # bound and released, so nothing listens there
    env = {"SENTRY_DSN": sentry_dsn(port), "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", **HELD_BACK}
    with run_shop(env, tmp_path) as app:
        send_requests(app)
        code, seconds = stop_and_time(app, signal.SIGTERM)
        log = app.log()

    assert code == -signal.SIGTERM, log[-3000:]
    assert seconds < EXIT_BOUND_SECONDS, f"exit took {seconds:.1f} s"


def test_sigterm_flushes_sentry_while_otlp_stalls(tmp_path: Path) -> None:
    with SentryReceiver() as sentry, StalledReceiver() as stalled:
        env = {"SENTRY_DSN": sentry.dsn, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{stalled.port}", **HELD_BACK}
        with run_shop(env, tmp_path) as app:
            send_requests(app)
            assert request_transactions(sentry) == []
            code, seconds = stop_and_time(app, signal.SIGTERM)
        names = sorted(event["transaction"] for event in request_transactions(sentry))
        errors = sentry.errors()

    assert code == -signal.SIGTERM
    assert seconds < EXIT_BOUND_SECONDS, f"exit took {seconds:.1f} s"
    assert names == ["GET /boom", "GET /products/{product_id}", "GET /products/{product_id}"]
    assert [event["exception"]["values"][-1]["type"] for event in errors] == ["ValueError"]


def test_sigterm_flushes_otlp_while_sentry_refuses(tmp_path: Path) -> None:
    refused_port = free_port()  # bound and released, so nothing listens there
    with OTLPReceiver() as otlp:
        env = {"SENTRY_DSN": sentry_dsn(refused_port), "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, **HELD_BACK}
        with run_shop(env, tmp_path) as app:
            send_requests(app)
            assert otlp.spans() == []
            code, seconds = stop_and_time(app, signal.SIGTERM)
            log = app.log()
        server_spans = sorted(span.name for span in otlp.spans() if span.kind == span.SPAN_KIND_SERVER)
        metric_names = otlp.metric_names()

    assert code == -signal.SIGTERM
    assert seconds < EXIT_BOUND_SECONDS, f"exit took {seconds:.1f} s"
    assert server_spans.count("GET /products/{product_id}") == 2, log[-3000:]
    assert "GET /boom" in server_spans
    assert {"http.server.request.duration", "http.server.duration"} & metric_names


def test_sigkill_loses_at_most_one_batch(tmp_path: Path) -> None:
    requests = 5
    schedule_delay_ms = 200
    with SentryReceiver() as sentry, OTLPReceiver() as otlp:
        env = {
            "SENTRY_DSN": sentry.dsn,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": str(schedule_delay_ms),
        }
        with run_shop(env, tmp_path) as app:
            for number in range(1, requests + 1):
                assert app.get("/products/1").status_code == 200
                if number < requests:
                    # Longer than one schedule delay, so every earlier request had its export.
                    time.sleep(3 * schedule_delay_ms / 1000)
            app.process.send_signal(signal.SIGKILL)
            code = app.process.wait(10)
        # Let requests already in flight to the receivers arrive.
        wait_for(lambda: len(request_transactions(sentry)) >= requests - 1, timeout=5)
        transactions = len(request_transactions(sentry))
        server_spans = len([
            span for span in otlp.spans() if span.kind == span.SPAN_KIND_SERVER and span.name != "GET /health"
        ])

    assert code == -signal.SIGKILL
    assert requests - 1 <= transactions <= requests
    assert requests - 1 <= server_spans <= requests


class SlowProvider:
    """A provider whose shutdown blocks until the test releases it, like one stuck on a receiver."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.calls = 0

    def shutdown(self, timeout_millis: float | None = None) -> None:
        self.calls += 1
        self.release.wait(30)


def test_shutdown_stops_waiting_at_each_timeout(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    providers = [SlowProvider(release) for _ in range(3)]
    settings = load_settings({
        "OTEL_BSP_EXPORT_TIMEOUT": "300",
        "OTEL_METRIC_EXPORT_TIMEOUT": "300",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "300",
    })
    telemetry = SimpleNamespace(
        settings=settings,
        tracer_provider=providers[0],
        meter_provider=providers[1],
        logger_provider=providers[2],
    )
    try:
        started = time.monotonic()
        shutdown.shutdown_within_timeouts(telemetry)
        seconds = time.monotonic() - started
        shutdown.shutdown_within_timeouts(telemetry)
    finally:
        release.set()

    # Three stages of 0.3 s each, and the rest is thread start-up on a busy machine.
    assert seconds < 3.0
    assert [provider.calls for provider in providers] == [1, 1, 1]
    assert "spans shutdown did not finish within OTEL_BSP_EXPORT_TIMEOUT=300 ms" in caplog.text
    assert "metrics shutdown did not finish within OTEL_METRIC_EXPORT_TIMEOUT=300 ms" in caplog.text


def test_shutdown_runs_inline_without_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse_to_start(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    # Python 3.12 and newer raise this when an atexit handler starts a thread.
    monkeypatch.setattr(threading.Thread, "start", refuse_to_start)
    release = threading.Event()
    release.set()
    providers = [SlowProvider(release) for _ in range(3)]
    telemetry = SimpleNamespace(
        settings=load_settings({}),
        tracer_provider=providers[0],
        meter_provider=providers[1],
        logger_provider=providers[2],
    )

    shutdown.shutdown_within_timeouts(telemetry)

    assert [provider.calls for provider in providers] == [1, 1, 1]


def test_unreported_drops_logged_at_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    from raptorflow_otel.processors import drops

    drops.reset_dropped()
    clock = iter([0.0, 1.0, 2.0])
    try:
        # The first drop is logged at once; the next two fall inside the summary interval.
        for reason in ("network", "network", "unreachable, retrying later"):
            drops.record_dropped("sentry", reason, 5, "envelopes", clock=lambda: next(clock))
        logged_before = caplog.text.count("raptorflow-otel: sentry export")
        release = threading.Event()
        release.set()
        telemetry = SimpleNamespace(
            settings=load_settings({}),
            tracer_provider=SlowProvider(release),
            meter_provider=None,
            logger_provider=None,
        )
        shutdown.shutdown_within_timeouts(telemetry)
    finally:
        drops.reset_dropped()

    assert logged_before == 1
    assert "sentry export drops not yet reported when the process stopped: 5 (network), 5 (unreachable, retrying later)" in caplog.text
