"""A loopback HTTP receiver whose behaviour a test switches at run time, to break an exporter on purpose.

Modes:

* ``ok``: 200 with the configured body (``{}`` for Sentry, empty protobuf for OTLP);
* ``refused``: the listening socket is closed, so connections are refused; switching to another
  mode listens again on the same port;
* a status code such as ``500``, ``429`` or ``503``: that status with an empty body and
  ``Retry-After: <retry_after>`` seconds. Every error status carries that header, so a test can
  check that a client retries only the statuses it should, whatever the server requests;
* ``stall``: read the request, then answer nothing for up to 30 s (released early by a mode
  change), then 200;
* ``garbage``: bytes that are not HTTP, then the connection is closed.

Every request is counted by (mode, path), and the SHA-256 of each body is kept by mode, so a test
can tell a retry (the same body again) from a new batch.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STALL_SECONDS = 30.0


class FaultyReceiver:
    def __init__(self, ok_body: bytes = b"", content_type: str = "application/x-protobuf", retry_after: str = "1") -> None:
        self.ok_body = ok_body
        self.content_type = content_type
        self.retry_after = retry_after
        self.mode = "ok"
        self.counts: Counter = Counter()
        self.bodies: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self._listen()

    # -- control -------------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        previous = self.mode
        if previous == "stall":
            self._release.set()
            self._release = threading.Event()
        if mode == "refused":
            self._close_server()
        elif previous == "refused":
            self._listen()
        self.mode = mode

    def total(self, mode: str, path_prefix: str) -> int:
        with self._lock:
            return sum(count for (seen_mode, path), count in self.counts.items() if seen_mode == mode and path.startswith(path_prefix))

    def close(self) -> None:
        self._release.set()
        self._close_server()

    def __enter__(self) -> "FaultyReceiver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- server --------------------------------------------------------------------------------

    def _listen(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in separate writes. With Nagle's algorithm on, a keep-alive
            # client would wait for a delayed ACK (about 40 ms here) before each response completes.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = receiver.mode
                with receiver._lock:
                    receiver.counts[(mode, self.path)] += 1
                    receiver.bodies[mode].append(hashlib.sha256(body).hexdigest())
                if mode == "refused":
                    # A keep-alive connection opened before the receiver went down: drop it, as a
                    # restarting server would. New connections are refused by the closed socket.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "garbage":
                    self.wfile.write(b"\x00\xff this is not HTTP \xfe\r\n\r\n")
                    self.close_connection = True
                    return
                if mode == "stall":
                    receiver._release.wait(STALL_SECONDS)
                    mode = "ok"
                status = 200 if mode == "ok" else int(mode)
                payload = receiver.ok_body if status == 200 else b""
                self.send_response(status)
                if status != 200:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Type", receiver.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # Clients that give up on a stalled or garbage response reset the connection.

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _close_server(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
