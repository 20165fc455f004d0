"""Loopback receivers for the end-to-end tests: a Sentry envelope endpoint and an OTLP/HTTP one.

Each stores the raw requests it gets; decoding is done with the field's own libraries
(sentry-sdk's envelope parser, opentelemetry-proto messages), not with product code.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from sentry_sdk.envelope import Envelope


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 that returns 200 and records every request."""

    def __init__(self, response_body: bytes = b"{}") -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                with receiver._lock:
                    receiver.requests.append(
                        Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(response_body)))
                self.end_headers()
                self.wfile.write(response_body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with receiver._lock:
                    receiver.requests.append(
                        Request(self.path, {k.lower(): v for k, v in self.headers.items()}, b"")
                    )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(response_body)))
                self.end_headers()
                self.wfile.write(response_body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self, path_prefix: str = "") -> list[Request]:
        with self._lock:
            return [request for request in self.requests if request.path.startswith(path_prefix)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


class SentryReceiver(Receiver):
    """Accepts envelopes at ``/api/<project>/envelope/``; `dsn` points a client at it."""

    project_id = "42"
    public_key = "0123456789abcdef0123456789abcdef"

    @property
    def dsn(self) -> str:
        return f"http://{self.public_key}@127.0.0.1:{self.port}/{self.project_id}"

    def envelopes(self) -> list[Envelope]:
        return [
            Envelope.deserialize(request.body)
            for request in self.snapshot(f"/api/{self.project_id}/envelope/")
        ]

    def items(self, item_type: str) -> list[dict[str, Any]]:
        """Payloads of every item of one type (``transaction``, ``event``, ...), decoded as JSON."""
        found = []
        for envelope in self.envelopes():
            for item in envelope.items:
                if item.type == item_type:
                    found.append(json.loads(item.payload.get_bytes()))
        return found

    def transactions(self) -> list[dict[str, Any]]:
        return self.items("transaction")

    def errors(self) -> list[dict[str, Any]]:
        return self.items("event")


class OTLPReceiver(Receiver):
    """Accepts OTLP/HTTP protobuf at ``/v1/traces``, ``/v1/metrics`` and ``/v1/logs``."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[Any]:
        spans = []
        for request in self.snapshot("/v1/traces"):
            message = ExportTraceServiceRequest.FromString(request.body)
            for resource_spans in message.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    spans.extend(scope_spans.spans)
        return spans

    def metric_names(self) -> set[str]:
        names = set()
        for request in self.snapshot("/v1/metrics"):
            message = ExportMetricsServiceRequest.FromString(request.body)
            for resource_metrics in message.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    names.update(metric.name for metric in scope_metrics.metrics)
        return names

    def log_records(self) -> list[Any]:
        records = []
        for request in self.snapshot("/v1/logs"):
            message = ExportLogsServiceRequest.FromString(request.body)
            for resource_logs in message.resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    records.extend(scope_logs.log_records)
        return records


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)
