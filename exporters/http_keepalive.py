"""One keep-alive HTTP/1.1 connection for small POST requests, with as few system calls as possible.

The Sentry exporter sends one envelope per HTTP request from the batch worker thread. Every system
call there releases the GIL, and while the app's threads run, each release hands the GIL to them
and back, with cold caches. `http.client` makes two ``send`` calls per request and parses response
headers through the ``email`` package. This connection writes a request with one ``sendall`` and
usually reads its response with one ``recv``: in a quiet loop on the development machine, 40 µs of
CPU per request instead of 100.

Requests can also be pipelined: a group of envelopes is written at once and the responses are
read in order, so a group costs about two system calls instead of two per envelope.
`KeepAliveConnection.post_many` explains when a request is sent again and when it is not.

Scope, on purpose: POST requests with a complete body (``Content-Length``), responses framed by
``Content-Length``, chunked transfer coding or the end of the connection, interim ``1xx``
responses skipped. No proxies (the caller uses urllib3 for those) and no upgrades.
"""

from __future__ import annotations

import select
import socket
import ssl
from typing import Mapping, NamedTuple, Sequence

# Limits on what a server may send back. A response beyond them is a protocol error, so a broken
# or hostile receiver cannot make the exporter buffer without bound.
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
RECV_BYTES = 65536


class ProtocolError(OSError):
    """A response that is not HTTP/1.x as this connection reads it. The connection is closed."""


class ResponseHeaders(dict):
    """Response headers by lowercase name. ``get`` accepts any case, as urllib3's headers do."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


class Response(NamedTuple):
    status: int
    headers: ResponseHeaders
    body: bytes


class KeepAliveConnection:
    """A client connection to one host, reopened when the server closes it.

    Not thread-safe: the caller holds a lock around `post` and `post_many`.
    """

    def __init__(self, host: str, port: int, *, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        # False once the server failed to respond to pipelined requests. Requests then go one by one.
        self.pipelining = True
        # After a failed post_many: whether the failed socket had carried a response before, which
        # means the server was reachable and the connection broke, not that the server is down.
        self.broke_after_response = False
        self._responses_on_socket = 0
        self._tls = tls
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        name = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._host_header = name if port in (80, 443) else f"{name}:{port}"

    def post(self, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Send one POST and return its final response; raise an ``OSError`` when there is none."""
        responses, error = self.post_many(path, [(headers, body)])
        if error is not None:
            raise error
        return responses[0]

    def post_many(
        self, path: str, requests: Sequence[tuple[Mapping[str, str], bytes]]
    ) -> tuple[list[Response], OSError | None]:
        """Send POST requests pipelined (one write), and read their responses in order.

        Returns the responses read and the error that stopped reading, or None when every request
        got its response. A request is sent again only when the server cannot have processed it:
        after a response that announces ``Connection: close``, the server reads nothing more, so
        the requests after it go on a new connection. Requests without a response after any
        other failure are not sent again, because the server may have processed them; the caller
        counts them as lost. RFC 9112 section 9.3.2 allows pipelining non-idempotent requests when
        the client can tell which ones a partial failure affected, and these rules identify them.

        Pipelining starts once the connection has carried a response, so a server that closes after
        each response gets one request per connection. Before a connection is reused, a check
        without waiting finds whether the server closed it while idle (as urllib3 does), so an
        idle close costs a new connection, not a request.
        After a failure that left some responses of a group unread, ``pipelining`` turns off for
        this connection and later requests go one at a time.
        """
        payloads = [self._request_bytes(path, headers, body) for headers, body in requests]
        responses: list[Response] = []
        while len(responses) < len(payloads):
            answered = len(responses)
            pending: list[bytes] = []
            try:
                sock = self._usable_socket() or self._connect()
                # A new connection carries one request first: a server that closes after each
                # response (HTTP/1.0) would otherwise reset the connection with requests unread.
                persistent = self.pipelining and self._responses_on_socket > 0
                pending = payloads[answered:] if persistent else payloads[answered : answered + 1]
                sock.sendall(b"".join(pending))
                for _ in pending:
                    status, headers, body, keep_alive = self._read_response()
                    responses.append(Response(status, headers, body))
                    self._responses_on_socket += 1
                    if not keep_alive:
                        self.close()
                        break
            except OSError as error:
                self.broke_after_response = self._responses_on_socket > 0
                self.close()
                if len(pending) > 1 and len(responses) > answered:
                    self.pipelining = False
                return responses, error
        return responses, None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buffer.clear()
                self._responses_on_socket = 0

    # Internals

    def _request_bytes(self, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self._host_header}", f"Content-Length: {len(body)}"]
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} contains a line break")
            lines.append(f"{name}: {value}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1") + body

    def _usable_socket(self) -> socket.socket | None:
        """Return the open socket, or None after closing it if the server closed its side.

        An idle keep-alive socket has nothing to read. Readable means that the server closed it or
        sent bytes before any request, and either way the connection cannot carry a new request.
        """
        if self._sock is None:
            return None
        readable, _, _ = select.select([self._sock], [], [], 0)
        if readable:
            self.close()
            return None
        return self._sock

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._buffer.clear()
        self._responses_on_socket = 0
        return sock

    def _fill(self, at_least: int) -> None:
        """Receive until the buffer contains ``at_least`` bytes."""
        assert self._sock is not None
        while len(self._buffer) < at_least:
            chunk = self._sock.recv(RECV_BYTES)
            if not chunk:
                raise ProtocolError("the server closed the connection in the middle of a response")
            self._buffer += chunk

    def _read_line_end(self, marker: bytes, limit: int, *, response_start: bool = False) -> int:
        """Receive until the buffer contains ``marker``, and return its index.

        ``response_start`` marks a read at the start of a response, where a closed connection
        with nothing received means the server sent no response at all.
        """
        assert self._sock is not None
        end = self._buffer.find(marker)
        while end < 0:
            if len(self._buffer) > limit:
                raise ProtocolError(f"response head longer than {limit} bytes")
            chunk = self._sock.recv(RECV_BYTES)
            if not chunk:
                if response_start and not self._buffer:
                    raise ConnectionAbortedError("the server closed the connection without a response")
                raise ProtocolError("the server closed the connection in the middle of a response")
            search_from = max(0, len(self._buffer) - len(marker) + 1)
            self._buffer += chunk
            end = self._buffer.find(marker, search_from)
        if end > limit:
            raise ProtocolError(f"response head longer than {limit} bytes")
        return end

    def _read_response(self) -> tuple[int, ResponseHeaders, bytes, bool]:
        while True:
            end = self._read_line_end(b"\r\n\r\n", MAX_HEAD_BYTES, response_start=True)
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            version, status, headers = _parse_head(head)
            if status >= 200 or status == 101:
                break

        keep_alive = _keeps_alive(version, headers)
        if status in (204, 304) or 100 <= status < 200:
            return status, headers, b"", keep_alive
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, headers, self._read_chunked(), keep_alive
        length = headers.get("content-length")
        if length is not None:
            size = _content_length(length)
            self._fill(size)
            body = bytes(self._buffer[:size])
            del self._buffer[:size]
            return status, headers, body, keep_alive
        return status, headers, self._read_until_close(), False

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            end = self._read_line_end(b"\r\n", MAX_HEAD_BYTES)
            size_field = bytes(self._buffer[:end]).split(b";", 1)[0].strip()
            del self._buffer[: end + 2]
            try:
                size = int(size_field, 16)
            except ValueError:
                raise ProtocolError(f"invalid chunk size {size_field[:20]!r}") from None
            if size == 0:
                # Trailer fields, if any, end with an empty line.
                while True:
                    end = self._read_line_end(b"\r\n", MAX_HEAD_BYTES)
                    del self._buffer[: end + 2]
                    if end == 0:
                        return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise ProtocolError(f"response body longer than {MAX_BODY_BYTES} bytes")
            self._fill(size + 2)
            body += self._buffer[:size]
            del self._buffer[: size + 2]

    def _read_until_close(self) -> bytes:
        assert self._sock is not None
        while True:
            if len(self._buffer) > MAX_BODY_BYTES:
                raise ProtocolError(f"response body longer than {MAX_BODY_BYTES} bytes")
            chunk = self._sock.recv(RECV_BYTES)
            if not chunk:
                body = bytes(self._buffer)
                self._buffer.clear()
                return body
            self._buffer += chunk


def _parse_head(head: bytes) -> tuple[str, int, ResponseHeaders]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit() or rest[3:4] not in ("", " "):
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:40]!r}")
    headers = ResponseHeaders()
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError(f"invalid header line: {line[:40]!r}")
        key = name.strip().lower()
        value = value.strip()
        # Repeated fields are joined, as RFC 9110 section 5.3 allows for list-valued ones.
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return version, int(code), headers


def _keeps_alive(version: str, headers: ResponseHeaders) -> bool:
    connection = headers.get("connection")
    if not connection:
        return version != "HTTP/1.0"
    tokens = {token.strip() for token in connection.lower().split(",")}
    if "close" in tokens:
        return False
    return version != "HTTP/1.0" or "keep-alive" in tokens


def _content_length(value: str) -> int:
    first = value.split(",")[0].strip()
    if not first.isdigit():
        raise ProtocolError(f"invalid Content-Length {value[:20]!r}")
    size = int(first)
    if size > MAX_BODY_BYTES:
        raise ProtocolError(f"response body longer than {MAX_BODY_BYTES} bytes")
    return size
