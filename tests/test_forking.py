"""Servers with several worker processes: each worker exports with its own resource, and flushes at stop.

The example shop runs under ``opentelemetry-instrument`` behind each server the distro supports
with more than one process, with Sentry and OTLP receivers on 127.0.0.1:

- ``uvicorn --workers 2`` and ``uvicorn --reload`` start each worker as a new interpreter
  (multiprocessing's spawn method), which configures its own telemetry;
- gunicorn with ``UvicornWorker`` forks its workers from a master that configured telemetry
  first, with and without ``--preload`` (the master imports the app before it forks).

The workers are identified by the ``process.pid`` resource attribute of the server spans they
export, checked against the real child processes of the server.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from app_process import EXAMPLES, AppProcess, clean_environment, free_port
from receivers import OTLPReceiver, SentryReceiver, wait_for

TESTS = Path(__file__).resolve().parent

BIN = Path(sys.executable).parent
APP = "shop_app:app"
WORKERS = 2
# Rounds of concurrent slow requests, sent until both workers have served one. Each round takes
# about SLOW_SECONDS.
MAX_ROUNDS = 10
CONCURRENT_REQUESTS = 8
SLOW_SECONDS = "0.3"


def uvicorn_command(port: int, *options: str) -> list[str]:
    return [str(BIN / "uvicorn"), APP, "--app-dir", str(EXAMPLES), "--host", "127.0.0.1", "--port", str(port), *options]


def gunicorn_command(port: int, worker_class: str, *options: str) -> list[str]:
    return [
        str(BIN / "gunicorn"), *options, "-k", worker_class, "-w", str(WORKERS),
        "--bind", f"127.0.0.1:{port}", "--pythonpath", str(EXAMPLES), APP,
    ]  # fmt: skip


SERVERS = {
    "uvicorn-workers": lambda port: uvicorn_command(port, "--workers", str(WORKERS)),
    "gunicorn": lambda port: gunicorn_command(port, "uvicorn_worker.UvicornWorker"),
    "gunicorn-preload": lambda port: gunicorn_command(port, "uvicorn_worker.UvicornWorker", "--preload"),
    # uvicorn 0.55 still ships this worker class, deprecated in favour of the uvicorn-worker package.
    "gunicorn-uvicorn.workers": lambda port: gunicorn_command(port, "uvicorn.workers.UvicornWorker"),
}


@contextmanager
def run_server(command: list[str], port: int, env: dict[str, str], workdir: Path) -> Iterator[AppProcess]:
    """Run ``opentelemetry-instrument <command>`` until the block ends, then stop it with SIGTERM."""
    full_env = clean_environment({"SHOP_DATABASE_URL": f"sqlite:///{workdir / 'shop.db'}", **env})
    log_path = workdir / f"server-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(BIN / "opentelemetry-instrument"), *command],
            env=full_env,
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = AppProcess(process, port, log_path)
    try:
        wait_for(lambda: is_healthy(server), timeout=60)
        yield server
    finally:
        server.stop(timeout=30)


def is_healthy(server: AppProcess) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"the server exited with {server.process.returncode}:\n{server.log()}")
    try:
        return server.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def telemetry_env(sentry: SentryReceiver, otlp: OTLPReceiver, **extra: str) -> dict[str, str]:
    return {
        "SENTRY_DSN": sentry.dsn,
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "SHOP_SLOW_SECONDS": SLOW_SECONDS,
        **extra,
    }


def resource_attributes(resource: Any) -> dict[str, Any]:
    values = {}
    for attribute in resource.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
    return values


def identities(resources: list[dict[str, Any]]) -> dict[int, set[str]]:
    """Map each ``process.pid`` to the ``service.instance.id`` values exported with it."""
    found: dict[int, set[str]] = {}
    for attributes in resources:
        found.setdefault(attributes["process.pid"], set()).add(attributes["service.instance.id"])
    return found


def server_span_resources(otlp: OTLPReceiver) -> list[dict[str, Any]]:
    """Return the resources of the exported batches that contain a request's server span."""
    found = []
    for request in otlp.snapshot("/v1/traces"):
        for resource_spans in ExportTraceServiceRequest.FromString(request.body).resource_spans:
            spans = [span for scope in resource_spans.scope_spans for span in scope.spans]
            if any(span.kind == Span.SPAN_KIND_SERVER and span.name != "GET /health" for span in spans):
                found.append(resource_attributes(resource_spans.resource))
    return found


def metric_resources(otlp: OTLPReceiver) -> list[dict[str, Any]]:
    return [
        resource_attributes(resource_metrics.resource)
        for request in otlp.snapshot("/v1/metrics")
        for resource_metrics in ExportMetricsServiceRequest.FromString(request.body).resource_metrics
    ]


def log_resources(otlp: OTLPReceiver) -> list[dict[str, Any]]:
    return [
        resource_attributes(resource_logs.resource)
        for request in otlp.snapshot("/v1/logs")
        for resource_logs in ExportLogsServiceRequest.FromString(request.body).resource_logs
    ]


def transactions_named(sentry: SentryReceiver, name: str) -> list[dict[str, Any]]:
    return [event for event in sentry.transactions() if event["transaction"] == name]


def child_pids(server: AppProcess) -> set[int]:
    return {child.pid for child in psutil.Process(server.process.pid).children(recursive=True)}


def slow_requests_until_both_workers_served(server: AppProcess, otlp: OTLPReceiver) -> int:
    """Send rounds of concurrent requests until two worker pids exported a server span, and return how many were sent."""
    sent = 0
    with concurrent.futures.ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
        for _ in range(MAX_ROUNDS):
            statuses = list(pool.map(lambda _: server.get("/slow").status_code, range(CONCURRENT_REQUESTS)))
            sent += len(statuses)
            assert statuses == [200] * len(statuses)
            try:
                wait_for(lambda: len(identities(server_span_resources(otlp))) >= WORKERS, timeout=2)
                return sent
            except AssertionError:
                continue
    return sent


@pytest.mark.parametrize("server_name", list(SERVERS))
def test_each_worker_exports_own_identity(server_name: str, tmp_path: Path) -> None:
    port = free_port()
    with SentryReceiver() as sentry, OTLPReceiver() as otlp:
        with run_server(SERVERS[server_name](port), port, telemetry_env(sentry, otlp), tmp_path) as server:
            sent = slow_requests_until_both_workers_served(server, otlp)
            # Read after the requests, because gunicorn may still be forking its last worker when the first
            # one responds.
            children = child_pids(server)
            assert server.get("/boom").status_code == 500
            traced = identities(server_span_resources(otlp))
            workers = set(traced)
            wait_for(lambda: workers <= set(identities(metric_resources(otlp))), timeout=15)
            wait_for(lambda: log_resources(otlp), timeout=15)
            wait_for(lambda: len(transactions_named(sentry, "GET /slow")) >= sent, timeout=15)
            metered = identities(metric_resources(otlp))
            logged = identities(log_resources(otlp))
            slow_transactions = len(transactions_named(sentry, "GET /slow"))
            master = server.process.pid
            exit_code = server.stop(timeout=30)

    assert len(workers) == WORKERS, traced
    assert workers <= children, (workers, children)
    assert master not in workers
    for pid in workers:
        assert len(traced[pid]) == 1, traced
        assert metered[pid] == traced[pid], (pid, metered, traced)
    assert len(set().union(*traced.values())) == WORKERS, traced
    for pid, instance_ids in logged.items():
        assert pid in workers, (pid, logged)
        assert instance_ids == traced[pid]
    assert slow_transactions == sent
    assert exit_code == 0


def test_reload_gives_new_worker_new_identity(tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    watched_file = watched / "settings_stub.py"
    watched_file.write_text("VERSION = 1\n")
    port = free_port()
    command = uvicorn_command(port, "--reload", "--reload-dir", str(watched))
    with SentryReceiver() as sentry, OTLPReceiver() as otlp:
        with run_server(command, port, telemetry_env(sentry, otlp), tmp_path) as server:
            assert server.get("/products/1").status_code == 200
            first = wait_for(lambda: identities(server_span_resources(otlp)), timeout=15)
            first_children = child_pids(server)

            # StatReload compares modification times, so a new mtime restarts the worker.
            time.sleep(0.1)
            watched_file.write_text("VERSION = 2\n")
            otlp.clear()

            def served_by_new_worker() -> dict[int, set[str]]:
                try:
                    server.get("/products/1")
                except httpx.HTTPError:
                    return {}
                found = identities(server_span_resources(otlp))
                return {pid: ids for pid, ids in found.items() if pid not in first}

            second = wait_for(served_by_new_worker, timeout=30, interval=0.5)
            second_children = child_pids(server)
            wait_for(lambda: set(second) <= set(identities(metric_resources(otlp))), timeout=15)
            metered = identities(metric_resources(otlp))
            exit_code = server.stop(timeout=30)

    (first_pid, first_ids), = first.items()
    (second_pid, second_ids), = second.items()
    assert first_pid in first_children
    assert second_pid in second_children
    assert second_pid != first_pid
    assert len(first_ids) == len(second_ids) == 1
    assert first_ids != second_ids
    assert metered[second_pid] == second_ids
    assert exit_code == 0


def test_gunicorn_workers_flush_at_sigterm(tmp_path: Path) -> None:
    port = free_port()
    command = gunicorn_command(port, "uvicorn_worker.UvicornWorker")
    held_back = {"OTEL_BSP_SCHEDULE_DELAY": "60000", "OTEL_METRIC_EXPORT_INTERVAL": "60000"}
    with SentryReceiver() as sentry, OTLPReceiver() as otlp:
        with run_server(command, port, telemetry_env(sentry, otlp, **held_back), tmp_path) as server:
            workers = child_pids(server)
            for _ in range(4):
                assert server.get("/products/1").status_code == 200
            assert server.get("/boom").status_code == 500
            assert transactions_named(sentry, "GET /products/{product_id}") == []
            server.process.send_signal(signal.SIGTERM)
            exit_code = server.process.wait(30)
        transactions = transactions_named(sentry, "GET /products/{product_id}")
        # Without --preload both workers import the shop and race to seed its database. The loser's
        # duplicate-key insert is a real error event, so only the events of requests are compared.
        errors = [event for event in sentry.errors() if "request" in event]
        traced = identities(server_span_resources(otlp))
        metered = identities(metric_resources(otlp))

    assert exit_code == 0
    assert len(transactions) == 4
    assert [event["exception"]["values"][-1]["type"] for event in errors] == ["ValueError"]
    assert set(traced) <= workers
    assert set(traced) <= set(metered)


# Configures telemetry in one process, forks with os.fork, and prints what parent and child see.
FORK_SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from receivers import OTLPReceiver, SentryReceiver
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from raptorflow_otel.distro.forking import install_fork_hook
from raptorflow_otel.distro.providers import configure_telemetry
from raptorflow_otel.distro.settings import load_settings

def identity(provider):
    attributes = provider.resource.attributes
    return [attributes["process.pid"], attributes["service.instance.id"]]

def pooled(session):
    return len(session.adapters["http://"].poolmanager.pools)

with SentryReceiver() as sentry, OTLPReceiver() as otlp:
    settings = load_settings({
        "SENTRY_DSN": sentry.dsn,
        "SENTRY_RELEASE": "shop@1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
    })
    telemetry = configure_telemetry(settings, install_globally=False)
    SystemMetricsInstrumentor().instrument(meter_provider=telemetry.meter_provider)
    install_fork_hook(telemetry)
    tracer = telemetry.tracer_provider.get_tracer("fork-check")
    telemetry.meter_provider.force_flush()
    session = telemetry.metric_exporters[0]._client._transport._session
    sentry_client = telemetry.sentry_exporter._client
    telemetry.session_tracker.observe("session-1", "web")
    parent = {"pid": os.getpid(), "identity": identity(telemetry.tracer_provider), "pooled": pooled(session)}
    child_pid = os.fork()
    if child_pid == 0:
        span = tracer.start_span("after fork")
        span.end()
        child = {
            "pid": os.getpid(),
            "tracer": identity(telemetry.tracer_provider),
            "meter": [
                telemetry.meter_provider._sdk_config.resource.attributes["process.pid"],
                telemetry.meter_provider._sdk_config.resource.attributes["service.instance.id"],
            ],
            "logger": identity(telemetry.logger_provider),
            "span": [span.resource.attributes["process.pid"], span.resource.attributes["service.instance.id"]],
            "new_sentry_client": telemetry.sentry_exporter._client is not sentry_client,
            "new_sentry_transport": telemetry.sentry_exporter._client.transport is not sentry_client.transport,
            "pooled": pooled(session),
            "system_metrics_pid": SystemMetricsInstrumentor()._proc.pid,
            "active_sessions": telemetry.session_tracker.active_counts(),
        }
        print(json.dumps({"child": child}), flush=True)
        os._exit(0)
    os.waitpid(child_pid, 0)
    parent["pooled_after_fork"] = pooled(session)
    parent["active_sessions"] = telemetry.session_tracker.active_counts()
    print(json.dumps({"parent": parent}), flush=True)
    SystemMetricsInstrumentor().uninstrument()
    telemetry.shutdown()
"""


def test_forked_child_gets_own_state() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, str(TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_environment({}),
    )
    assert completed.returncode == 0, completed.stderr
    seen = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            seen.update(json.loads(line))
    parent, child = seen["parent"], seen["child"]

    assert child["pid"] != parent["pid"]
    assert child["tracer"][0] == child["pid"]
    assert child["tracer"][1] != parent["identity"][1]
    assert child["meter"] == child["tracer"]
    assert child["logger"] == child["tracer"]
    # A tracer that an instrumentation got before the fork makes spans with the child's resource.
    assert child["span"] == child["tracer"]
    assert child["new_sentry_client"]
    assert child["new_sentry_transport"]
    assert child["system_metrics_pid"] == child["pid"]
    # The master's pooled OTLP connection is closed in the child only.
    assert parent["pooled"] == 1
    assert child["pooled"] == 0
    assert parent["pooled_after_fork"] == 1
    assert parent["active_sessions"] == {"web": 1}
    assert child["active_sessions"] == {}
