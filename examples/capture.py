"""A small loopback server that receives what Sentry and an OpenTelemetry Collector would receive.

The demo (``examples/demo.py``) points the shop at it with ``SENTRY_DSN`` and
``OTEL_EXPORTER_OTLP_ENDPOINT``, then prints what arrived. It keeps everything in memory and
listens on 127.0.0.1 only, on a free port.

What it accepts:

* ``POST /api/<project id>/envelope/``: Sentry envelopes, plain or compressed with gzip, deflate
  or brotli. Brotli needs the ``brotli`` package. sentry-sdk (2.76) sends brotli only when that
  package is installed, and gzip otherwise. Envelopes are parsed with sentry-sdk's ``Envelope``.
* ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs``: OTLP/HTTP protobuf, plain or gzip, decoded
  with the ``opentelemetry-proto`` messages.
* ``CONNECT``: rejected with 403 and counted. The demo gives this address to Spotlight as its HTTP
  proxy, so the telemetry that Spotlight sends about itself to Sentry stays on this machine.

Run it alone to watch what a service sends: ``python examples/capture.py`` prints its DSN and
OTLP endpoint, then one line per envelope or OTLP request until Ctrl-C.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sentry_sdk.envelope import Envelope

try:
    import brotli
except ImportError:
    brotli = None

logger = logging.getLogger(__name__)

ENVELOPE_PATH = re.compile(r"^/api/(?P<project>[0-9]+)/envelope/?$")
# Max request body in bytes. A larger one is rejected with 413.
MAX_BODY_BYTES = 50 * 1024 * 1024

OTLP_MESSAGES = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
}


class UnsupportedEncoding(Exception):
    pass


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """Undo the request's ``Content-Encoding`` (gzip, deflate, br or none)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        if brotli is None:
            raise UnsupportedEncoding("Content-Encoding br needs the brotli package, which is not installed: pip install brotli")
        return brotli.decompress(body)
    raise UnsupportedEncoding(f"unknown Content-Encoding {encoding!r}")


@dataclass
class ReceivedEnvelope:
    project_id: str
    envelope: Envelope
    content_encoding: str


class CaptureServer:
    """Records Sentry envelopes and OTLP requests sent to 127.0.0.1:<port>.

    Use it as a context manager, or call `start` and `stop`. ``listener``, when given, is called
    from the server threads with a short line for every envelope and OTLP request received.
    """

    public_key = "0123456789abcdef0123456789abcdef"
    project_id = "1"

    def __init__(self, listener: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._envelopes: list[ReceivedEnvelope] = []
        self._otlp: dict[str, list[Any]] = {path: [] for path in OTLP_MESSAGES}
        self._rejected: list[str] = []
        self._rejected_connects: list[str] = []
        self._listener = listener
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="capture-server", daemon=True)

    # Addresses

    @property
    def dsn(self) -> str:
        """The DSN that sends a Sentry SDK's envelopes here."""
        return f"http://{self.public_key}@127.0.0.1:{self.port}/{self.project_id}"

    @property
    def otlp_endpoint(self) -> str:
        """Value for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (http/protobuf)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def proxy_url(self) -> str:
        """An HTTP proxy address that rejects every CONNECT request, for a tool that must stay offline."""
        return f"http://127.0.0.1:{self.port}"

    # Life cycle

    def start(self) -> "CaptureServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "CaptureServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # What arrived

    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return [received.envelope for received in self._envelopes]

    def envelope_encodings(self) -> list[str]:
        """Return the ``Content-Encoding`` of each envelope request, ``""`` for an uncompressed one."""
        with self._lock:
            return [received.content_encoding for received in self._envelopes]

    def items(self, item_type: str) -> list[dict[str, Any]]:
        """JSON payloads of every envelope item of one type: ``transaction``, ``event``, ..."""
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

    def otlp_spans(self) -> list[Any]:
        with self._lock:
            requests = list(self._otlp["/v1/traces"])
        return [
            span
            for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def otlp_metric_names(self) -> set[str]:
        with self._lock:
            requests = list(self._otlp["/v1/metrics"])
        return {
            metric.name
            for request in requests
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }

    def otlp_log_records(self) -> list[Any]:
        with self._lock:
            requests = list(self._otlp["/v1/logs"])
        return [
            record
            for request in requests
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]

    def rejected(self) -> list[str]:
        """Return one line for every request rejected with an error status."""
        with self._lock:
            return list(self._rejected)

    def rejected_connects(self) -> list[str]:
        """Return the targets of the CONNECT requests rejected so far, such as ``o1.ingest.us.sentry.io:443``."""
        with self._lock:
            return list(self._rejected_connects)

    # Recording, called from the handler threads

    def _record_envelope(self, project_id: str, envelope: Envelope, content_encoding: str) -> None:
        with self._lock:
            self._envelopes.append(ReceivedEnvelope(project_id, envelope, content_encoding))
        if self._listener:
            types = ", ".join(item.type or "unknown" for item in envelope.items)
            self._listener(f"envelope for project {project_id}: {types}")

    def _record_otlp(self, path: str, message: Any) -> None:
        with self._lock:
            self._otlp[path].append(message)
        if self._listener:
            self._listener(f"OTLP {path}: {message.ByteSize()} bytes")

    def _record_rejected(self, line: str) -> None:
        logger.warning("Capture server rejected %s", line)
        with self._lock:
            self._rejected.append(line)
        if self._listener:
            self._listener(f"rejected: {line}")

    def _record_connect(self, target: str) -> None:
        with self._lock:
            self._rejected_connects.append(target)
        if self._listener:
            self._listener(f"rejected CONNECT {target}")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in separate writes. With Nagle's algorithm on, a keep-alive
            # client would wait for a delayed ACK (about 40 ms here) before each response completes.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                length_header = self.headers.get("Content-Length")
                if length_header is None:
                    self._fail(411, "missing Content-Length")
                    return
                length = int(length_header)
                if length > MAX_BODY_BYTES:
                    self._fail(413, f"body of {length} bytes exceeds the max of {MAX_BODY_BYTES}")
                    return
                raw = self.rfile.read(length)
                try:
                    body = decode_body(raw, self.headers.get("Content-Encoding"))
                except UnsupportedEncoding as exc:
                    self._fail(415, str(exc))
                    return
                except (OSError, zlib.error, EOFError) as exc:
                    self._fail(400, f"invalid {self.headers.get('Content-Encoding')} body: {exc}")
                    return

                envelope_match = ENVELOPE_PATH.match(path)
                if envelope_match:
                    self._envelope(envelope_match["project"], body)
                elif path in OTLP_MESSAGES:
                    self._otlp(path, body)
                else:
                    self._fail(404, "path not found")

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?", 1)[0] == "/health":
                    self._reply(200, b'{"status":"ok"}', "application/json")
                else:
                    self._fail(404, "path not found")

            def do_CONNECT(self) -> None:  # noqa: N802 - http.server's naming
                capture._record_connect(self.path)
                self.close_connection = True
                self._reply(403, b"this proxy forwards nothing\n", "text/plain")

            def _envelope(self, project_id: str, body: bytes) -> None:
                try:
                    envelope = Envelope.deserialize(body)
                except Exception as exc:  # noqa: BLE001 - any parse failure is a bad request
                    self._fail(400, f"invalid Sentry envelope: {exc}")
                    return
                encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
                capture._record_envelope(project_id, envelope, encoding)
                event_id = (envelope.headers or {}).get("event_id")
                self._reply(200, json.dumps({"id": event_id}).encode(), "application/json")

            def _otlp(self, path: str, body: bytes) -> None:
                request_type, response_type = OTLP_MESSAGES[path]
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if content_type != "application/x-protobuf":
                    self._fail(415, f"invalid Content-Type {content_type or '(missing)'}, expected application/x-protobuf")
                    return
                try:
                    message = request_type.FromString(body)
                except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
                    self._fail(400, f"invalid OTLP {path} message: {exc}")
                    return
                capture._record_otlp(path, message)
                self._reply(200, response_type().SerializeToString(), "application/x-protobuf")

            def _fail(self, status: int, reason: str) -> None:
                capture._record_rejected(f"{self.command} {self.path}: {status} {reason}")
                self.close_connection = True
                self._reply(status, json.dumps({"detail": reason}).encode(), "application/json")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def main() -> None:
    with CaptureServer(listener=lambda line: print(line, flush=True)) as capture:
        print(f"SENTRY_DSN={capture.dsn}")
        print(f"OTEL_EXPORTER_OTLP_ENDPOINT={capture.otlp_endpoint}")
        print("Waiting for envelopes and OTLP requests; press Ctrl-C to stop.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
