"""What instrumentation costs one app: bare, stock OpenTelemetry, sentry-sdk and raptorflow-otel.

Usage::

    python bench/overhead.py [--rounds N] [--requests N] [--rate R] [--quick]
    python bench/overhead.py --scenario sentry-down [--duration SECONDS]

Each setup has its own cached venv under ``.cache/bench``. A pip constraints file gives every venv
the versions that the raptorflow venv resolved, so FastAPI, SQLAlchemy, uvicorn, the OpenTelemetry
SDK and sentry-sdk are the same in all of them. The setups:

* ``bare``: the app, no telemetry;
* ``otel``: ``opentelemetry-distro``, the OTLP/HTTP exporter and the contrib FastAPI and
  SQLAlchemy instrumentations, run with ``opentelemetry-instrument``: traces and metrics over
  OTLP/HTTP to a loopback receiver;
* ``sentry``: sentry-sdk with its FastAPI, Starlette and SQLAlchemy integrations and
  ``traces_sample_rate=1.0`` (`overhead_sentry_app`), sending to a loopback Sentry endpoint;
* ``raptorflow``: this project's wheel, run with ``opentelemetry-instrument`` and every default
  processor on (sessions, error categorization, privacy scrubbing, release health). This is the
  product's pipeline: traces and errors to Sentry, metrics over OTLP for alerting;
* ``raptorflow-otlp`` (only with ``--setups``): the same, with traces also sent over OTLP.

Stock OpenTelemetry gets the instrumentations for the app's two libraries, not everything
``opentelemetry-bootstrap -a install`` would add (sqlite3, threading, logging and more), which
would make it slower. Metric readers keep their default 60 s interval.

The app is `overhead_app` and the request mix is `overhead_mix` (200 with a query, 404s, 5 %
exceptions, requests with personal data). Every round runs every setup in two phases, in an
order rotated per round:

1. in-process: `overhead_driver` calls the ASGI app directly, one request after another, and
   measures CPU and wall time per request (flush and export work included);
2. server: ``uvicorn`` on 127.0.0.1 with one worker gets a fixed-rate load from `overhead_http`,
   bounded by a fixed pool of connections. This gives the p99 latency and the peak RSS of the
   server process (``VmHWM``).

Medians over rounds are reported. The added CPU of a setup is its CPU per request minus bare's.
``overhead_vs_otel`` is raptorflow's added CPU divided by stock OpenTelemetry's, and
``overhead_vs_sentry`` is the same against sentry-sdk. The last line printed is
``overhead_vs_otel=<ratio> overhead_vs_sentry=<ratio>``.

A setup that sends nothing to its receivers, or whose app returns an unexpected status, stops
the benchmark, because its numbers would measure something else.

``--scenario sentry-down`` runs the raptorflow server for ``--duration`` seconds (default 600) at
``--rate``. The Sentry DSN points at a closed port on 127.0.0.1 (connection refused) while OTLP
stays up. The server's RSS is sampled every few seconds, and the growth after warm-up is reported.
Its last line is ``rss_growth_mb=<MB> failed_requests=<n>``.

Needs the ``test`` extra (``build``, ``pytest``) in the Python that runs it, for the wheel and
the venv helpers of ``tests/venvs.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

from overhead_http import HOST, LoadResult, run_load, wait_until_serving  # noqa: E402
from venvs import VenvSpec, build_wheel, cached_venv, pip  # noqa: E402

CACHE_DIR = REPO / ".cache" / "bench"
SETUP_NAMES = ("bare", "otel", "sentry", "raptorflow", "raptorflow-otlp")
DEFAULT_SETUPS = SETUP_NAMES[:4]
# Packages of the raptorflow venv whose versions are not passed on to the other venvs.
NOT_CONSTRAINED = ("raptorflow-otel", "pip", "setuptools", "wheel")
# The contrib SQLAlchemy instrumentation rejects SQLAlchemy 2.1, which would leave stock
# OpenTelemetry without database spans. With 2.0 every setup traces the query.
APP_PINS = ("sqlalchemy>=2.0,<2.1",)
SERVER_STOP_SECONDS = 30
# The share of transactions that must reach the Sentry receiver in the in-process phase.
COMPLETE_SHARE = 0.99
# How long a server may take to export its first batch after the load ends.
EXPORT_WAIT_SECONDS = 12


# --- Receivers ------------------------------------------------------------------------------------


class CountingReceiver:
    """An HTTP server on 127.0.0.1 that returns 200 to every POST and counts requests by path.

    It reads and discards bodies without decoding them. The tests check what is sent, and the
    benchmark only checks that something was sent, at the lowest cost to the shared CPU.
    """

    def __init__(self, body: bytes, content_type: str) -> None:
        self.counts: Counter = Counter()
        counts = self.counts

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in separate writes. With Nagle's algorithm on, a keep-alive
            # client would wait for a delayed ACK (about 40 ms here) before each response completes.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                counts[self.path.split("?", 1)[0]] += 1
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # Exporters close their connections at exit, which is expected.

        self._server = Server((HOST, 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def total(self, prefix: str) -> int:
        return sum(count for path, count in list(self.counts.items()) if path.startswith(prefix))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port() -> int:
    """Return a loopback port with nothing listening, so connections to it are refused."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# --- Setups -------------------------------------------------------------------------------------


@dataclass
class Setup:
    name: str
    bin_dir: Path
    app: str  # MODULE:ATTR
    instrumented: bool  # True: started through opentelemetry-instrument
    env: dict[str, str] = field(default_factory=dict)
    # Receiver path prefixes that must get requests while this setup runs.
    expects: tuple[str, ...] = ()

    def command(self, *args: str) -> list[str]:
        launcher = [str(self.bin_dir / "opentelemetry-instrument")] if self.instrumented else []
        return [*launcher, *args]


def telemetry_env(otlp_port: int | None, sentry_port: int | None) -> dict[str, dict[str, str]]:
    """Environment variables per setup: what a team sets for each, nothing tuned for the benchmark.

    Metric readers keep their default 60 s interval; each in-process run ends with a flush, so
    every setup exports its metrics once per run.
    """
    otlp = f"http://{HOST}:{otlp_port}"
    stock = {
        "OTEL_SERVICE_NAME": "bench-app",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
    }
    sentry = {
        "SENTRY_DSN": f"http://benchkey@{HOST}:{sentry_port}/1",
        "SENTRY_RELEASE": "bench-app@1.0.0",
        "SENTRY_ENVIRONMENT": "bench",
    }
    # The product's own pipeline: traces and errors to Sentry, metrics over OTLP for alerting.
    raptorflow = {
        **sentry,
        "SENTRY_TRACES_SAMPLE_RATE": "1.0",
        "OTEL_SERVICE_NAME": "bench-app",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{otlp}/v1/metrics",
    }
    return {
        "bare": {},
        "otel": stock,
        "sentry": sentry,
        "raptorflow": raptorflow,
        # The same, with traces sent to an OpenTelemetry Collector as well.
        "raptorflow-otlp": {**raptorflow, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp},
    }


def build_setups(names: tuple[str, ...], otlp_port: int, sentry_port: int) -> dict[str, Setup]:
    """Build (or reuse) the venvs and return the setups named in ``names``."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    print("Building the raptorflow-otel wheel and the benchmark venvs (cached in .cache/bench) ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-wheel-") as workdir:
        wheel = build_wheel(Path(workdir))
        raptorflow_bin = cached_venv(VenvSpec("bench-raptorflow", APP_PINS), wheel, CACHE_DIR)
    frozen = pip(raptorflow_bin.parent, "freeze", "--all").stdout.split()
    pins = tuple(line for line in frozen if "==" in line and line.split("==")[0].lower() not in NOT_CONSTRAINED)
    print(describe_environment(pins), flush=True)

    specs = {
        "bare": VenvSpec("bench-bare", (), constraints=pins),
        "otel": VenvSpec(
            "bench-otel",
            (
                "opentelemetry-distro",
                "opentelemetry-exporter-otlp-proto-http",
                "opentelemetry-instrumentation-fastapi",
                "opentelemetry-instrumentation-sqlalchemy",
            ),
            constraints=pins,
        ),
        "sentry": VenvSpec("bench-sentry", ("sentry-sdk[fastapi,sqlalchemy]",), constraints=pins),
    }

    env = telemetry_env(otlp_port, sentry_port)
    setups = {}
    for name in names:
        ours = name.startswith("raptorflow")
        setups[name] = Setup(
            name=name,
            bin_dir=raptorflow_bin if ours else cached_venv(specs[name], None, CACHE_DIR),
            app="overhead_sentry_app:app" if name == "sentry" else "overhead_app:app",
            instrumented=ours or name == "otel",
            env=env[name],
            expects={
                "bare": (),
                "otel": ("/v1/traces", "/v1/metrics"),
                "sentry": ("/api/1/envelope",),
                "raptorflow": ("/api/1/envelope", "/v1/metrics"),
                "raptorflow-otlp": ("/api/1/envelope", "/v1/traces", "/v1/metrics"),
            }[name],
        )
    return setups


def describe_environment(pins: tuple[str, ...]) -> str:
    """Describe the CPU, the Python and the versions of the packages being compared, for the results page."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    shown = ("fastapi", "starlette", "sqlalchemy", "uvicorn", "opentelemetry-sdk", "opentelemetry-instrumentation", "sentry-sdk")
    versions = [pin for pin in pins if pin.split("==")[0].lower() in shown]
    return (f"Machine: {model}, {os.cpu_count()} CPUs; Python {sys.version.split()[0]}\n"
            f"Versions: {', '.join(sorted(versions, key=str.lower))}")


def process_env(setup: Setup, workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Build a clean environment, so no OTEL_* or SENTRY_* variable of the caller reaches a setup."""
    env = {
        "PATH": f"{setup.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", str(workdir)),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "BENCH_DATABASE_URL": f"sqlite:///{workdir / (setup.name + '.db')}",
    }
    env.update(setup.env)
    env.update(extra or {})
    return env


# --- Phases -------------------------------------------------------------------------------------


class SetupFailed(RuntimeError):
    pass


@dataclass
class Sample:
    cpu_us: float
    wall_us: float
    p99_ms: float
    peak_rss_mb: float
    # CPU µs per request by thread name: the event loop (MainThread), the pool that runs sync
    # endpoints, the telemetry threads.
    threads_us: dict[str, float] = field(default_factory=dict)


def check_exported(setup: Setup, receivers: dict[str, CountingReceiver], before: dict[str, int], phase: str,
                   wait_seconds: float = 0.0, skip: tuple[str, ...] = ()) -> None:
    """Raise SetupFailed unless every receiver path the setup should use got a request since ``before``."""
    deadline = time.monotonic() + wait_seconds
    while True:
        now = counts(receivers)
        missing = [prefix for prefix in setup.expects if prefix not in skip and now[prefix] <= before[prefix]]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise SetupFailed(f"{setup.name} ({phase}) sent nothing to {', '.join(missing)}; its numbers would not measure telemetry")
        time.sleep(0.2)


def counts(receivers: dict[str, CountingReceiver]) -> dict[str, int]:
    return {
        prefix: (receivers["sentry"] if prefix.startswith("/api/") else receivers["otlp"]).total(prefix)
        for prefix in ("/v1/traces", "/v1/metrics", "/api/1/envelope")
    }


def run_in_process(setup: Setup, workdir: Path, warmup: int, requests: int, receivers: dict) -> dict:
    out = workdir / f"{setup.name}-driver.json"
    before = counts(receivers)
    command = setup.command(str(setup.bin_dir / "python"), str(BENCH / "overhead_driver.py"),
                            "--app", setup.app, "--warmup", str(warmup), "--requests", str(requests), "--out", str(out))
    completed = subprocess.run(command, cwd=workdir, env=process_env(setup, workdir), capture_output=True, text=True, timeout=1800)
    if completed.returncode != 0:
        raise SetupFailed(f"{setup.name} driver failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    check_exported(setup, receivers, before, "in-process")
    result = json.loads(out.read_text())
    if result.get("sentry_lost"):
        raise SetupFailed(f"{setup.name} lost Sentry events {result['sentry_lost']}; the work of sending them was never done")
    if setup.name.startswith("raptorflow"):
        check_complete(setup, counts(receivers)["/api/1/envelope"] - before["/api/1/envelope"], warmup + requests)
    return result


def check_complete(setup: Setup, envelopes: int, transactions: int) -> None:
    """Raise SetupFailed when raptorflow sent fewer envelopes than it had transactions.

    raptorflow-otel makes one transaction per request (sentry-sdk skips some 404s, so its count is
    checked through its lost-event records instead). Fewer envelopes mean that some were dropped
    on the way, and the CPU they would have cost was never spent.
    """
    if envelopes < transactions * COMPLETE_SHARE:
        raise SetupFailed(f"{setup.name} delivered {envelopes} Sentry envelopes for {transactions} requests; "
                          "the missing ones were dropped, so its CPU time would be too low")


def peak_rss_mb(pid: int, field_name: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise SetupFailed(f"no {field_name} for process {pid}")


class Server:
    """``uvicorn`` running one setup's app on a free loopback port, stopped with SIGTERM."""

    def __init__(self, setup: Setup, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.setup = setup
        self.port = closed_port()
        self.log = workdir / f"{setup.name}-server.log"
        command = setup.command(
            str(setup.bin_dir / "uvicorn"), setup.app, "--app-dir", str(BENCH),
            "--host", HOST, "--port", str(self.port), "--no-access-log", "--log-level", "warning",
        )
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=workdir, env=process_env(setup, workdir, extra_env),
                                            stdout=log, stderr=subprocess.STDOUT)

    def rss_mb(self, field_name: str = "VmHWM") -> float:
        return peak_rss_mb(self.process.pid, field_name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(SERVER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def failure(self, what: str) -> SetupFailed:
        return SetupFailed(f"{self.setup.name} server {what}; log:\n{self.log.read_text(errors='replace')[-4000:]}")


def run_server(setup: Setup, workdir: Path, args: argparse.Namespace, receivers: dict) -> tuple[LoadResult, float]:
    """Start the setup under uvicorn, warm it up, then measure ``args.server_requests`` requests."""
    before = counts(receivers)
    server = Server(setup, workdir)
    try:
        try:
            asyncio.run(wait_until_serving(server.port))
        except TimeoutError:
            raise server.failure("did not start") from None
        start = 0
        for count in (args.server_warmup, args.server_requests):  # The warm-up pass is not reported.
            result = asyncio.run(run_load(server.port, first=start, count=count, rate=args.rate, connections=args.connections))
            start += count
            if result.failed:
                raise server.failure(f"failed {result.failed} requests ({dict(result.failures)})")
        rss = server.rss_mb()
        # Batches leave on a timer (5 s by default); a short run may end before the first one.
        # Metrics leave every 60 s, so a short server run is not expected to have sent any.
        check_exported(setup, receivers, before, "server", wait_seconds=EXPORT_WAIT_SECONDS, skip=("/v1/metrics",))
    finally:
        server.stop()
    return result, rss


# --- Report -------------------------------------------------------------------------------------


def median_samples(samples: list[Sample]) -> Sample:
    return Sample(
        cpu_us=statistics.median(sample.cpu_us for sample in samples),
        wall_us=statistics.median(sample.wall_us for sample in samples),
        p99_ms=statistics.median(sample.p99_ms for sample in samples),
        peak_rss_mb=statistics.median(sample.peak_rss_mb for sample in samples),
        threads_us={
            name: statistics.median(sample.threads_us.get(name, 0.0) for sample in samples)
            for name in dict.fromkeys(name for sample in samples for name in sample.threads_us)
        },
    )


def ratio(added: float, reference: float) -> float:
    return added / reference if reference > 0 else float("nan")


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "not met"


def report(results: dict[str, list[Sample]], rate: float) -> None:
    medians = {name: median_samples(samples) for name, samples in results.items()}
    bare = medians.get("bare")
    print()
    print(f"{'setup':<11} {'CPU us/req':>11} {'added':>8} {'wall us/req':>12} {f'p99 ms @{rate:g}/s':>15} {'peak RSS MB':>12}")
    for name, sample in medians.items():
        added = sample.cpu_us - bare.cpu_us if bare else float("nan")
        print(f"{name:<11} {sample.cpu_us:>11.0f} {added:>8.0f} {sample.wall_us:>12.0f} {sample.p99_ms:>15.2f} {sample.peak_rss_mb:>12.1f}")
    for name, samples in results.items():
        print(f"  {name} CPU us/req per round: " + ", ".join(f"{sample.cpu_us:.0f}" for sample in samples))
    for name, samples in results.items():
        print(f"  {name} p99 ms per round: " + ", ".join(f"{sample.p99_ms:.1f}" for sample in samples))
    for name, sample in medians.items():
        by_thread = sorted(sample.threads_us.items(), key=lambda item: -item[1])
        print(f"  {name} CPU us/req by thread: " + ", ".join(f"{thread} {cpu:.0f}" for thread, cpu in by_thread))
    if bare and {"otel", "sentry", "raptorflow"} <= medians.keys():
        ours = medians["raptorflow"].cpu_us - bare.cpu_us
        vs_otel = ratio(ours, medians["otel"].cpu_us - bare.cpu_us)
        vs_sentry = ratio(ours, medians["sentry"].cpu_us - bare.cpu_us)
        print()
        print(f"raptorflow adds {vs_otel:.3f}x the CPU of stock OpenTelemetry (goal <= 0.8: {verdict(vs_otel, 0.8)}) "
              f"and {vs_sentry:.3f}x that of sentry-sdk (goal <= 0.5: {verdict(vs_sentry, 0.5)}).")
        if "raptorflow-otlp" in medians:
            both = medians["raptorflow-otlp"].cpu_us - bare.cpu_us
            print(f"With traces also sent over OTLP: {ratio(both, medians['otel'].cpu_us - bare.cpu_us):.2f}x stock "
                  f"OpenTelemetry, {ratio(both, medians['sentry'].cpu_us - bare.cpu_us):.2f}x sentry-sdk.")
        print(f"overhead_vs_otel={vs_otel:.3f} overhead_vs_sentry={vs_sentry:.3f}")


# --- Entry points -------------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> None:
    names = tuple(args.setups)
    receivers = {"otlp": CountingReceiver(b"", "application/x-protobuf"), "sentry": CountingReceiver(b"{}", "application/json")}
    try:
        setups = build_setups(names, receivers["otlp"].port, receivers["sentry"].port)
        results: dict[str, list[Sample]] = {name: [] for name in names}
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as directory:
            workdir = Path(directory)
            for round_number in range(args.rounds):
                order = names[round_number % len(names):] + names[:round_number % len(names)]
                driven = {name: run_in_process(setups[name], workdir, args.warmup, args.requests, receivers) for name in order}
                served = {name: run_server(setups[name], workdir, args, receivers) for name in order}
                for name in names:
                    load, rss = served[name]
                    results[name].append(Sample(driven[name]["cpu_us_per_request"], driven[name]["wall_us_per_request"],
                                                load.percentile(0.99) * 1000, rss,
                                                driven[name].get("thread_cpu_us_per_request", {})))
                print(f"round {round_number + 1}/{args.rounds}: " + ", ".join(
                    f"{name} {results[name][-1].cpu_us:.0f} us" for name in names), flush=True)
        report(results, args.rate)
    finally:
        for receiver in receivers.values():
            receiver.close()


def sentry_down(args: argparse.Namespace) -> None:
    names = tuple(args.setups) if args.setups != list(DEFAULT_SETUPS) else ("raptorflow",)
    otlp = CountingReceiver(b"", "application/x-protobuf")
    down_port = closed_port()
    try:
        setups = build_setups(names, otlp.port, down_port)
        with tempfile.TemporaryDirectory(prefix="bench-sentry-down-") as directory:
            for name in names:
                growth, failed = _sentry_down_run(setups[name], Path(directory), args)
                print(f"{name}: RSS grew {growth:.1f} MB after warm-up; {failed} failed requests")
        print(f"rss_growth_mb={growth:.1f} failed_requests={failed}")
    finally:
        otlp.close()


def _sentry_down_run(setup: Setup, workdir: Path, args: argparse.Namespace) -> tuple[float, int]:
    server = Server(setup, workdir)
    count = int(args.duration * args.rate)
    warmup_seconds = max(5.0, args.duration * 0.1)
    samples: list[tuple[float, float]] = []

    async def sample_rss(done: asyncio.Event) -> None:
        start = time.monotonic()
        while not done.is_set():
            samples.append((time.monotonic() - start, server.rss_mb("VmRSS")))
            try:
                await asyncio.wait_for(done.wait(), args.sample_seconds)
            except asyncio.TimeoutError:
                pass

    async def load() -> LoadResult:
        await wait_until_serving(server.port)
        done = asyncio.Event()
        sampler = asyncio.ensure_future(sample_rss(done))
        try:
            return await run_load(server.port, count=count, rate=args.rate, connections=args.connections)
        finally:
            done.set()
            await sampler

    try:
        result = asyncio.run(load())
    finally:
        server.stop()
    baseline = [rss for elapsed, rss in samples if elapsed <= warmup_seconds][-1]
    later = [rss for elapsed, rss in samples if elapsed > warmup_seconds] or [baseline]
    print(f"{setup.name}: {len(result.latencies)} of {count} requests completed in {args.duration:g} s at {args.rate:g}/s; RSS after "
          f"{warmup_seconds:.0f} s warm-up {baseline:.1f} MB, peak later {max(later):.1f} MB, last {later[-1]:.1f} MB; "
          f"p99 {result.percentile(0.99) * 1000:.1f} ms")
    return max(later) - baseline, result.failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("compare", "sentry-down"), default="compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="timed in-process requests per setup and round")
    parser.add_argument("--warmup", type=int, default=200, help="untimed in-process requests before timing")
    parser.add_argument("--server-requests", type=int, default=1000, help="requests per setup and round under uvicorn")
    parser.add_argument("--server-warmup", type=int, default=100, help="unreported requests before --server-requests")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second under uvicorn")
    parser.add_argument("--connections", type=int, default=16, help="connections of the load, so the maximum of requests in flight")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load for --scenario sentry-down")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling period for --scenario sentry-down")
    parser.add_argument("--setups", nargs="+", choices=SETUP_NAMES, default=list(DEFAULT_SETUPS),
                        help="setups to run (default: the first four; raptorflow-otlp also sends traces over OTLP)")
    parser.add_argument("--quick", action="store_true", help="run one short round to check that the harness works; its numbers mean little")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.warmup, args.server_requests, args.server_warmup = 1, 100, 20, 100, 20
        args.duration = min(args.duration, 20.0)
    try:
        if args.scenario == "sentry-down":
            sentry_down(args)
        else:
            compare(args)
    except SetupFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
