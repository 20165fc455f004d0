"""Run the example shop under raptorflow-otel and show what Sentry and a Collector would receive.

    python examples/demo.py [--rounds N] [--no-spotlight] [--keep-running]

(``make demo`` does this in the project's ``.venv``; pass options with ``DEMO_ARGS="..."``.)

Steps:

1. Start a capture server on 127.0.0.1 (``capture.py``) that accepts Sentry envelopes and
   OTLP/HTTP, in place of Sentry and an OpenTelemetry Collector.
2. When ``npx`` is on PATH, start Sentry Spotlight, a local Sentry UI, and send it the envelopes
   too (``SENTRY_SPOTLIGHT``). It is installed once into ``.cache/spotlight`` of this repository.
3. Start the inventory service (plain uvicorn) and the shop under
   ``opentelemetry-instrument uvicorn``, each on a free loopback port with its own SQLite file in
   a temporary folder. The shop is configured by environment variables only, as in production.
4. Send a few rounds of requests: successes, a validation error, unknown products, two failures
   that raise exceptions, a call to the inventory service, a slow request.
5. Wait until the telemetry has arrived, print a report, stop everything.

The demo ignores the OTEL_*, SENTRY_*, RAPTORFLOW_* and SHOP_* variables of your shell, so
that every run shows the same thing. It ends by itself within two minutes unless
``--keep-running`` is given; then the services stay up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from capture import CaptureServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

# Spotlight 4.11.8 works with hono 4.12.25. With hono 4.13.23, which npx picked, its server fails
# on requests with "ctx.req.query(...).toString is not a function". npm installs both pinned
# versions into this folder (ignored by git) on the first run.
SPOTLIGHT_VERSION = "4.11.8"
HONO_VERSION = "4.12.25"
SPOTLIGHT_DIR = REPO / ".cache" / "spotlight"
SPOTLIGHT_PORT = 8969
SPOTLIGHT_START_SECONDS = 60.0

# The whole run, without --keep-running, stays below this many seconds.
RUN_SECONDS = 110.0
SHOP_START_SECONDS = 45.0
TELEMETRY_WAIT_SECONDS = 30.0
STOP_SECONDS = 10.0
MAX_ROUNDS = 20

# Variables of the user's shell that would change what the shop does.
STRIPPED_PREFIXES = ("OTEL_", "SENTRY_", "RAPTORFLOW_", "SHOP_", "SPOTLIGHT_")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
LOOPBACK_NAMES = "127.0.0.1,localhost"


class DemoError(Exception):
    """A failure that ends the demo with a message and exit status 1."""


# --- Helpers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def child_environment(extra: dict[str, str], *, proxy: str | None = None) -> dict[str, str]:
    """Return the user's environment without the settings that would change the demo, plus ``extra``.

    Every address the demo uses is on this machine, so proxy settings are dropped. ``proxy``, when
    given, is set as the HTTP(S) proxy for everything but loopback addresses.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(STRIPPED_PREFIXES) and key.lower() not in PROXY_VARIABLES
    }
    env["no_proxy"] = env["NO_PROXY"] = LOOPBACK_NAMES
    if proxy:
        for name in ("http_proxy", "https_proxy"):
            env[name] = env[name.upper()] = proxy
    env.update(extra)
    return env


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self, cap: float | None = None) -> float:
        left = max(0.0, self.end - time.monotonic())
        return left if cap is None else min(left, cap)


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# --- Processes --------------------------------------------------------------------------------


class Service:
    """A subprocess of the demo whose output goes to a log file in the work folder."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.command = command
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Ctrl-C in the terminal reaches only the demo, which then stops the services in order.
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_health(self, url: str, timeout: float) -> bool:
        """Poll ``url`` until it returns 200. Return False when the process exits or time runs out."""

        def healthy() -> bool:
            if not self.running():
                return True  # Ends the wait. The return below checks whether the process runs.
            try:
                return httpx.get(url, timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        return wait_until(healthy, timeout, interval=0.2) and self.running()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        if not self.running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def python_tool(name: str) -> Path:
    """Return the path of a console script in the running interpreter's environment, such as ``uvicorn``."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise DemoError(
            f"{name} was not found next to {sys.executable}. Run `make demo`, or install the demo's "
            f'packages into this environment: pip install -e ".[test]" -r examples/requirements.txt'
        )
    return path


def start_web_app(
    name: str, app: str, env: dict[str, str], workdir: Path, deadline: Deadline, *, instrument: bool
) -> tuple[Service, str]:
    port = free_port()
    command = [str(python_tool("uvicorn")), app, "--app-dir", str(EXAMPLES), "--host", "127.0.0.1", "--port", str(port)]
    if instrument:
        command = [str(python_tool("opentelemetry-instrument")), *command]
    service = Service(name, command, env, workdir)
    base_url = f"http://127.0.0.1:{port}"
    if not service.wait_for_health(base_url + "/health", deadline.remaining(SHOP_START_SECONDS)):
        if service.running():
            state = f"did not return 200 on /health within {SHOP_START_SECONDS:.0f} s"
        else:
            state = f"exited with status {service.process.returncode}"
        service.stop()
        raise DemoError(f"The {name} service {state}. Last lines of its log ({service.log_path}):\n{service.log_tail()}")
    return service, base_url


# --- Spotlight --------------------------------------------------------------------------------


@dataclass
class Spotlight:
    service: Service
    port: int

    @property
    def ui_url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream"

    def received_item_types(self, timeout: float = 5.0) -> Counter[str]:
        """Count the envelope items in Spotlight's buffer by type, reading its event stream.

        A new subscriber of ``/stream`` first gets every envelope in the buffer. The read stops once
        the stream has been quiet for a second, or after ``timeout``.
        """
        counts: Counter[str] = Counter()
        end = time.monotonic() + timeout
        try:
            with httpx.stream(
                "GET", self.stream_url, params={"client": "raptorflow-demo"},
                timeout=httpx.Timeout(5.0, read=1.0), trust_env=False,
            ) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        _header, items = json.loads(line[len("data:"):])
                        for item_header, _payload in items:
                            counts[item_header.get("type") or "unknown"] += 1
                    if time.monotonic() > end:
                        break
        except httpx.ReadTimeout:
            pass  # The stream was quiet for a second, so the whole buffer has been read.
        except (httpx.HTTPError, ValueError) as exc:
            counts["(could not read the stream: " + shorten(str(exc), 60) + ")"] += 1
        return counts


def installed_version(package_dir: Path) -> str | None:
    try:
        return json.loads((package_dir / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def start_spotlight(capture: CaptureServer, workdir: Path, deadline: Deadline) -> Spotlight | None:
    """Install Spotlight on first use and start it. On any failure, print one line and return None.

    NOTE: Spotlight 4.11.8 has a port option but no address option, so it listens on all interfaces.
    """
    tools = {name: shutil.which(name) for name in ("npx", "npm", "node")}
    if not tools["npx"]:
        print("Spotlight: npx is not on PATH, so the demo goes on with the built-in capture only.")
        return None
    if not tools["npm"] or not tools["node"]:
        print("Spotlight: npx is on PATH but npm or node is not, so the demo goes on with the built-in capture only.")
        return None
    budget = Deadline(deadline.remaining(SPOTLIGHT_START_SECONDS))

    modules = SPOTLIGHT_DIR / "node_modules"
    package_dir = modules / "@spotlightjs" / "spotlight"
    if installed_version(package_dir) != SPOTLIGHT_VERSION or installed_version(modules / "hono") != HONO_VERSION:
        print(f"Spotlight: installing @spotlightjs/spotlight@{SPOTLIGHT_VERSION} into {SPOTLIGHT_DIR} (first run only) ...", flush=True)
        SPOTLIGHT_DIR.mkdir(parents=True, exist_ok=True)
        install_log = workdir / "spotlight-install.log"
        command = [
            tools["npm"], "install", "--prefix", str(SPOTLIGHT_DIR), "--save-exact",
            "--no-audit", "--no-fund", "--loglevel=error",
            f"@spotlightjs/spotlight@{SPOTLIGHT_VERSION}", f"hono@{HONO_VERSION}",
        ]
        try:
            with open(install_log, "wb") as log_file:
                # npm runs with the user's environment, proxy settings included, because it needs the registry.
                result = subprocess.run(
                    command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    timeout=budget.remaining(), cwd=workdir,
                )
        except subprocess.TimeoutExpired:
            print(f"Spotlight: npm install did not finish within {SPOTLIGHT_START_SECONDS:.0f} s, so the demo goes on with the built-in capture only.")
            return None
        if result.returncode != 0 or installed_version(package_dir) != SPOTLIGHT_VERSION:
            last = install_log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            print(f"Spotlight: npm install failed ({shorten(last[0], 120)}), so the demo goes on with the built-in capture only.")
            return None

    try:
        entry = package_dir / json.loads((package_dir / "package.json").read_text())["bin"]["spotlight"]
    except (OSError, ValueError, KeyError, TypeError):
        print(f"Spotlight: cannot find its program in {package_dir}, so the demo goes on with the built-in capture only.")
        return None

    port = SPOTLIGHT_PORT if not port_in_use(SPOTLIGHT_PORT) else free_port()
    # Spotlight reports its own errors and traces to Sentry's servers. The capture server, set as
    # its HTTP proxy, rejects those connections, so nothing leaves this machine.
    env = child_environment({}, proxy=capture.proxy_url)
    service = Service("spotlight", [tools["node"], str(entry), "--port", str(port)], env, workdir)
    spotlight = Spotlight(service, port)
    if not service.wait_for_health(f"http://127.0.0.1:{port}/health", budget.remaining()):
        reason = (
            f"exited with status {service.process.returncode}" if not service.running()
            else f"timed out after {SPOTLIGHT_START_SECONDS:.0f} s"
        )
        last = service.log_tail(1) or "no output"
        service.stop()
        print(f"Spotlight: it {reason} ({shorten(last, 120)}), so the demo goes on with the built-in capture only.")
        return None
    print(f"Spotlight: running, UI at {spotlight.ui_url}")
    return spotlight


# --- Traffic ----------------------------------------------------------------------------------


@dataclass
class Call:
    label: str
    method: str
    path: str
    expected: int
    json_body: Any = None
    status: int | None = None
    error: str = ""


def round_calls(round_number: int) -> list[Call]:
    product_id = round_number % 4 + 1
    return [
        Call("list", "GET", "/products?limit=5", 200),
        Call("detail", "GET", f"/products/{product_id}", 200),
        Call("create", "POST", "/products", 201, {"name": f"Demo mug {round_number}", "price": 9.5}),
        Call("invalid create", "POST", "/products", 422, {"name": "", "price": -1}),
        Call("unknown product", "GET", "/products/999", 404),
        Call("unmatched path", "GET", f"/no/such/page/{round_number}", 404),
        Call("exception", "GET", "/boom", 500),
        Call("failing query", "GET", "/orders/1/broken", 500),
        Call("checkout", "GET", f"/checkout/{product_id}", 200),
        Call("slow", "GET", "/slow", 200),
        Call("reviews", "GET", "/products/1/reviews", 200),
    ]


# Error events per round, from /boom and /orders/1/broken. Every request also yields one transaction.
ERRORS_PER_ROUND = 2


def send_traffic(base_url: str, rounds: int, shop: Service) -> list[Call]:
    calls = []
    with httpx.Client(base_url=base_url, timeout=15.0, trust_env=False) as client:
        for round_number in range(1, rounds + 1):
            for call in round_calls(round_number):
                # After an unhandled exception, uvicorn 0.55 closes the connection without sending
                # "Connection: close", so a request expected to end in 500 uses a connection of its own.
                headers = {"Connection": "close"} if call.expected >= 500 else None
                try:
                    response = client.request(call.method, call.path, json=call.json_body, headers=headers)
                    call.status = response.status_code
                except httpx.HTTPError as exc:
                    call.error = f"{type(exc).__name__}: {exc}"
                calls.append(call)
                if call.error and not shop.running():
                    raise DemoError(
                        f"The shop stopped while handling {call.method} {call.path}. "
                        f"Last lines of its log ({shop.log_path}):\n{shop.log_tail()}"
                    )
    return calls


# --- Report -----------------------------------------------------------------------------------


def seconds(value: Any) -> float:
    """Convert a Sentry timestamp (seconds as a number, or an RFC 3339 string) to seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    from datetime import datetime

    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def duration_ms(item: dict[str, Any]) -> float:
    try:
        return (seconds(item["timestamp"]) - seconds(item["start_timestamp"])) * 1000
    except (KeyError, TypeError, ValueError):
        return float("nan")


def is_health_check(transaction: dict[str, Any]) -> bool:
    return transaction.get("transaction") == "GET /health"


def top_in_app_frame(exception: dict[str, Any]) -> str:
    frames = (exception.get("stacktrace") or {}).get("frames") or []
    in_app = [frame for frame in frames if frame.get("in_app")]
    if not in_app:
        return "none (no frame is marked in_app)"
    frame = in_app[-1]  # Sentry lists frames from the oldest call to the newest.
    filename = frame.get("filename") or frame.get("abs_path") or frame.get("module") or "?"
    return f"{filename}:{frame.get('lineno', '?')} {frame.get('function') or '?'}"


def report_lines(
    *,
    capture: CaptureServer,
    calls: list[Call],
    rounds: int,
    shop_url: str,
    inventory_url: str,
    spotlight: Spotlight | None,
    spotlight_counts: Counter[str] | None,
    missing: list[str],
) -> list[str]:
    lines: list[str] = []
    add = lines.append

    add("")
    add("=" * 78)
    add("raptorflow-otel demo report")
    add("=" * 78)
    add(f"Shop (under opentelemetry-instrument): {shop_url}")
    add(f"Inventory service (not instrumented):  {inventory_url}")
    add(f"Capture server: SENTRY_DSN={capture.dsn}")
    add(f"                OTEL_EXPORTER_OTLP_ENDPOINT={capture.otlp_endpoint}")

    add("")
    statuses = Counter(call.status for call in calls if call.status is not None)
    add(f"Traffic: {rounds} round(s), {len(calls)} requests; answers: "
        + ", ".join(f"{status} x{count}" for status, count in sorted(statuses.items())))
    unexpected = [call for call in calls if call.status != call.expected]
    for call in unexpected:
        got = call.status if call.status is not None else call.error
        add(f"  unexpected: {call.method} {call.path} ({call.label}) answered {got}, expected {call.expected}")
    if not unexpected:
        add("  every request got the status the example app is meant to answer")

    transactions = [event for event in capture.transactions() if not is_health_check(event)]
    health_checks = len(capture.transactions()) - len(transactions)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for event in transactions:
        by_name.setdefault(event.get("transaction") or "(no name)", []).append(event)
    add("")
    add(f"Sentry transactions: {len(transactions)}"
        + (f" (and {health_checks} for the start-up health checks, GET /health, not shown)" if health_checks else ""))
    for name, events in sorted(by_name.items()):
        status_counts = Counter((event.get("contexts", {}).get("trace", {}).get("status") or "?") for event in events)
        add("")
        add(f"  {name}  x{len(events)}  status: "
            + ", ".join(f"{status} x{count}" for status, count in sorted(status_counts.items())))
        example = max(events, key=lambda event: len(event.get("spans") or []))
        trace = example.get("contexts", {}).get("trace", {})
        add(f"    example: trace {trace.get('trace_id', '?')}, {duration_ms(example):.1f} ms, "
            f"op {trace.get('op', '?')}, environment {example.get('environment')}, release {example.get('release')}")
        spans = sorted(example.get("spans") or [], key=lambda span: seconds(span.get("start_timestamp", 0)))
        if not spans:
            add("      (no child spans)")
        for span in spans:
            op = span.get("op") or "?"
            description = span.get("description") or ""
            description = "" if description == op else shorten(description, 56)
            add(f"      {op:<22} {description:<56} {duration_ms(span):7.1f} ms")

    errors = capture.errors()
    transaction_by_trace = {
        event.get("contexts", {}).get("trace", {}).get("trace_id"): event.get("transaction") for event in transactions
    }
    add("")
    add(f"Sentry error events: {len(errors)}")
    for event in errors:
        values = (event.get("exception") or {}).get("values") or [{}]
        exception = values[-1]
        mechanism = exception.get("mechanism") or {}
        handled = mechanism.get("handled")
        trace_id = event.get("contexts", {}).get("trace", {}).get("trace_id", "?")
        linked = transaction_by_trace.get(trace_id)
        add("")
        add(f"  {exception.get('type', '?')}: {shorten(str(exception.get('value', '')), 90)}")
        add(f"    handled: {'yes' if handled else 'no' if handled is False else 'not set'}; "
            f"top in-app frame: {top_in_app_frame(exception)}")
        named = event.get("transaction") or "(none)"
        if linked is None:
            link = "no transaction of this trace was received"
        elif linked == named:
            link = "received, same trace id"
        else:
            link = f"but the transaction received for this trace is {linked}"
        add(f"    trace {trace_id}, transaction {named} ({link})")
        if len(values) > 1:
            causes = [
                ".".join(part for part in (value.get("module"), value.get("type", "?")) if part)
                for value in reversed(values[:-1])
            ]
            add("    caused by: " + " <- ".join(causes))

    spans = capture.otlp_spans()
    metric_names = sorted(capture.otlp_metric_names())
    add("")
    add("OTLP (what an OpenTelemetry Collector would get)")
    kinds = Counter(span_kind_name(span.kind) for span in spans)
    add(f"  spans: {len(spans)} (" + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())) + ")")
    add(f"  metrics ({len(metric_names)}):")
    lines.extend(textwrap.wrap(", ".join(metric_names) or "none", width=96, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False))
    log_records = capture.otlp_log_records()
    if log_records:
        add(f"  log records: {len(log_records)}")
    rejected = capture.rejected()
    if rejected:
        add(f"  requests the capture server rejected: {len(rejected)}, first: {rejected[0]}")

    add("")
    if spotlight is None:
        add("Spotlight: not running (see the line printed at start-up)")
    else:
        add(f"Spotlight: UI at {spotlight.ui_url}, envelopes sent to {spotlight.stream_url}")
        if spotlight_counts is not None:
            add("  items it holds: " + (", ".join(f"{kind} {count}" for kind, count in sorted(spotlight_counts.items())) or "none"))
        rejected_connects = capture.rejected_connects()
        if rejected_connects:
            add(f"  its own telemetry to Sentry stayed on this machine: {len(rejected_connects)} connection(s) to "
                f"{', '.join(sorted(set(rejected_connects)))} rejected")
        add("  Spotlight has no option to listen on 127.0.0.1 only, so it listens on all interfaces while it runs")

    if missing:
        add("")
        add(f"Missing after {TELEMETRY_WAIT_SECONDS:.0f} s: " + "; ".join(missing))
    add("")
    return lines


def span_kind_name(kind: int) -> str:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    return Span.SpanKind.Name(kind).removeprefix("SPAN_KIND_").lower()


def missing_telemetry(capture: CaptureServer, requests: int, rounds: int) -> list[str]:
    missing = []
    transactions = len([event for event in capture.transactions() if not is_health_check(event)])
    if transactions < requests:
        missing.append(f"{transactions} of {requests} transactions")
    errors = len(capture.errors())
    if errors < ERRORS_PER_ROUND * rounds:
        missing.append(f"{errors} of {ERRORS_PER_ROUND * rounds} error events")
    if not capture.otlp_spans():
        missing.append("OTLP spans")
    if not capture.otlp_metric_names():
        missing.append("OTLP metrics")
    return missing


# --- Main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the example shop under raptorflow-otel, send it traffic and print what "
        "Sentry and an OpenTelemetry Collector would receive."
    )
    parser.add_argument("--rounds", type=int, default=3, help=f"rounds of requests to send, 1 to {MAX_ROUNDS} (default 3)")
    parser.add_argument("--no-spotlight", action="store_true", help="do not start Sentry Spotlight, even when npx is on PATH")
    parser.add_argument("--keep-running", action="store_true", help="after the report, keep the services up until Ctrl-C")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS}")
    return args


def stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace, workdir: Path, services: list[Service]) -> int:
    started = time.monotonic()
    deadline = Deadline(RUN_SECONDS)
    with CaptureServer() as capture:
        print(f"Capture server on 127.0.0.1:{capture.port} (receives what Sentry and a Collector would)")
        spotlight = None if args.no_spotlight else start_spotlight(capture, workdir, deadline)
        if spotlight:
            services.append(spotlight.service)

        inventory_env = child_environment({"SHOP_DATABASE_URL": f"sqlite:///{workdir / 'inventory.db'}"})
        inventory, inventory_url = start_web_app(
            "inventory", "shop_app:inventory_app", inventory_env, workdir, deadline, instrument=False
        )
        services.append(inventory)

        shop_settings = {
            "OTEL_SERVICE_NAME": "shop",
            "SENTRY_DSN": capture.dsn,
            "SENTRY_ENVIRONMENT": "demo",
            "SENTRY_RELEASE": "shop@demo",
            "OTEL_EXPORTER_OTLP_ENDPOINT": capture.otlp_endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            "OTEL_METRIC_EXPORT_INTERVAL": "2000",
            "SHOP_INVENTORY_URL": inventory_url,
            "SHOP_DATABASE_URL": f"sqlite:///{workdir / 'shop.db'}",
        }
        if spotlight:
            shop_settings["SENTRY_SPOTLIGHT"] = spotlight.stream_url
        print("Shop settings (environment variables only):")
        for key, value in shop_settings.items():
            print(f"  {key}={value}")
        shop, shop_url = start_web_app("shop", "shop_app:app", child_environment(shop_settings), workdir, deadline, instrument=True)
        services.append(shop)
        print(f"Shop started at {shop_url}; sending {args.rounds} round(s) of requests ...", flush=True)

        calls = send_traffic(shop_url, args.rounds, shop)
        print("Waiting for the telemetry to arrive ...", flush=True)
        wait_until(
            lambda: not missing_telemetry(capture, len(calls), args.rounds),
            deadline.remaining(TELEMETRY_WAIT_SECONDS),
        )
        missing = missing_telemetry(capture, len(calls), args.rounds)
        spotlight_counts = spotlight.received_item_types(timeout=deadline.remaining(5.0)) if spotlight else None

        for line in report_lines(
            capture=capture, calls=calls, rounds=args.rounds, shop_url=shop_url, inventory_url=inventory_url,
            spotlight=spotlight, spotlight_counts=spotlight_counts, missing=missing,
        ):
            print(line)

        if args.keep_running:
            print("The services keep running. Try:")
            print(f"  curl {shop_url}/products")
            print(f"  curl {shop_url}/boom")
            print(f"  open {shop_url}/docs for the shop's API")
            if spotlight:
                print(f"  open {spotlight.ui_url} for Spotlight, the local Sentry UI")
            print("Press Ctrl-C to stop.", flush=True)
            while shop.running():
                time.sleep(1)
            print(f"The shop exited with status {shop.process.returncode}. Last lines of its log:\n{shop.log_tail()}")
            return 1

        print(f"Stopping the services (run time so far {time.monotonic() - started:.1f} s) ...", flush=True)
        for service in reversed(services):
            service.stop()
        print(f"Done in {time.monotonic() - started:.1f} s.")
        if missing:
            print(f"The demo did not get all the telemetry it expected: {'; '.join(missing)}.", file=sys.stderr)
            print(f"The shop's log: {shop.log_path}\n{shop.log_tail()}", file=sys.stderr)
            return 1
        return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="raptorflow-demo-"))
    services: list[Service] = []
    keep_workdir = False
    try:
        return run(args, workdir, services)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        keep_workdir = True
        return 1
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0 if args.keep_running else 130
    finally:
        for service in reversed(services):
            service.stop()
        if keep_workdir:
            print(f"The logs are kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
