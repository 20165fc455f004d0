"""In-process driver of the overhead benchmark; `bench/overhead.py` runs it inside each setup's venv.

Usage: ``python overhead_driver.py --app MODULE:ATTR --warmup N --requests N --out FILE``
(prefixed with ``opentelemetry-instrument`` for the OpenTelemetry setups).

It imports the app, runs the ASGI lifespan startup, sends ``--warmup`` requests of the mix, then
times ``--requests`` more, one after another. It calls the ASGI app directly, with no server and
no sockets, so the numbers are the app plus its instrumentation. After the last request it flushes
whatever telemetry the process has: the OpenTelemetry providers (whose flush also waits for
raptorflow-otel's Sentry sender) and the sentry-sdk client. Then it waits until background threads
go idle, so export work done for the timed requests counts too. The orchestrator then checks
that every transaction reached the receiver, so no export work was skipped.

It writes JSON to ``--out``: CPU microseconds per request (``time.process_time``, all threads),
wall microseconds per request (timed requests only, before the flush), the status codes seen, and
the peak RSS of the process. Standard library only, besides the app.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import resource
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead_mix import BenchRequest, request_at  # noqa: E402

# The flush is followed by waiting until the process uses less than this much CPU per poll.
IDLE_POLL_SECONDS = 0.1
IDLE_CPU_SECONDS = 0.002
IDLE_MAX_SECONDS = 5.0


class AppFailed(Exception):
    """Error for a response status that the mix did not expect."""


async def call(app, request: BenchRequest) -> int:
    """Send one HTTP request through the ASGI interface and return the response status."""
    path, _, query = request.path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")]
        + [(name.encode(), value.encode()) for name, value in request.headers]
        + ([(b"content-length", str(len(request.body)).encode())] if request.body else []),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent_body = False
    status = 0

    async def receive() -> dict:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        # A client that stays connected: only an app that reads past the body gets here, and waits.
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    try:
        await app(scope, receive, send)
    except Exception:  # noqa: BLE001 - the 500 route raises through the ASGI stack, as under a server
        if status == 0:
            raise
    return status


async def lifespan(app, state: dict) -> tuple[asyncio.Queue, asyncio.Future]:
    """Run the ASGI lifespan startup, as uvicorn does before the first request."""
    events = asyncio.Queue()
    await events.put({"type": "lifespan.startup"})
    started = asyncio.get_running_loop().create_future()

    async def send(message: dict) -> None:
        if not started.done():
            started.set_result(message["type"])

    task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, events.get, send))
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if started in done and started.result() != "lifespan.startup.complete":
        raise RuntimeError(f"lifespan startup failed: {started.result()}")
    return events, task


async def end_lifespan(events: asyncio.Queue, task: asyncio.Future) -> None:
    await events.put({"type": "lifespan.shutdown"})
    await asyncio.wait({task}, timeout=10)


async def drive(app, start: int, count: int, statuses: Counter) -> None:
    for index in range(start, start + count):
        request = request_at(index)
        status = await call(app, request)
        statuses[status] += 1
        if status != request.expected_status:
            raise AppFailed(f"{request.method} {request.path} returned {status}, expected {request.expected_status}")


def flush_telemetry() -> None:
    """Flush the OpenTelemetry providers and the sentry-sdk client, whichever exist."""
    try:
        from opentelemetry import metrics, trace

        for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                flush()
    except ImportError:
        pass
    try:
        import sentry_sdk

        client = sentry_sdk.get_client()
        if client.is_active():
            client.flush(timeout=10)
    except ImportError:
        pass


LOST_EVENTS = Counter()


def count_sentry_losses() -> None:
    """Count transactions and errors that sentry-sdk's transport gives up on, in any client.

    Both Sentry setups send through sentry-sdk's transport (raptorflow-otel through its own
    private client). A lost envelope is work never done, so the orchestrator rejects a run with
    losses instead of reporting its lower CPU time.
    """
    try:
        from sentry_sdk.transport import BaseHttpTransport
    except ImportError:
        return
    original = BaseHttpTransport.record_lost_event

    def record_lost_event(self, reason, data_category=None, item=None, *, quantity=1):  # noqa: ANN001, ANN202
        category = item.data_category if item is not None else data_category
        if category in ("transaction", "error"):
            LOST_EVENTS[f"{category}:{reason}"] += quantity
        return original(self, reason, data_category, item, quantity=quantity)

    BaseHttpTransport.record_lost_event = record_lost_event


def thread_cpu_seconds() -> Counter:
    """CPU seconds per thread name (numbers stripped) of the threads alive now.

    Reads each thread's own CPU clock (``pthread_getcpuclockid``). Threads that ended before the
    call are not counted, so the sum can be lower than the process's CPU time.
    """
    seconds: Counter = Counter()
    for thread in threading.enumerate():
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            used = time.clock_gettime(clock)
        except (AttributeError, OSError, TypeError):
            continue  # no per-thread clocks on this platform, or the thread just ended
        name = re.sub(r"[\s_-]*\(?\d+\)?$", "", thread.name) or "thread"
        seconds[name] += used
    return seconds


def wait_until_idle() -> None:
    deadline = time.monotonic() + IDLE_MAX_SECONDS
    previous = time.process_time()
    while time.monotonic() < deadline:
        time.sleep(IDLE_POLL_SECONDS)
        now = time.process_time()
        if now - previous < IDLE_CPU_SECONDS:
            return
        previous = now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", required=True, help="MODULE:ATTR of the ASGI app")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    count_sentry_losses()
    module_name, _, attribute = args.app.partition(":")
    app = getattr(importlib.import_module(module_name), attribute)
    statuses: Counter = Counter()

    async def run() -> tuple[float, float, Counter]:
        events, lifespan_task = await lifespan(app, {})
        await drive(app, 0, args.warmup, Counter())
        # The warm-up's telemetry leaves before the timer starts.
        flush_telemetry()
        wait_until_idle()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        threads_start = thread_cpu_seconds()
        await drive(app, args.warmup, args.requests, statuses)
        wall = time.perf_counter() - wall_start
        flush_telemetry()
        wait_until_idle()
        cpu = time.process_time() - cpu_start
        threads = thread_cpu_seconds()
        threads.subtract(threads_start)
        await end_lifespan(events, lifespan_task)
        return cpu, wall, threads

    cpu, wall, threads = asyncio.run(run())
    result = {
        "cpu_us_per_request": cpu / args.requests * 1e6,
        # Which threads spent it: the event loop (MainThread), the thread pool that runs sync
        # endpoints, and the telemetry threads.
        "thread_cpu_us_per_request": {
            name: round(seconds / args.requests * 1e6) for name, seconds in threads.most_common() if seconds > 0
        },
        "wall_us_per_request": wall / args.requests * 1e6,
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sentry_lost": dict(LOST_EVENTS),
    }
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
