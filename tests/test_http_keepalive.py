"""The Sentry exporter's keep-alive HTTP connection, against real servers on 127.0.0.1.

A scripted TCP server plays the server's side byte by byte, to reach cases that a well-behaved
server does not produce: closing in the middle of a group, garbage, stalls. Real uvicorn and
Node.js servers check the ordinary path, pipelining included.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import uvicorn

from raptorflow_otel.exporters.http_keepalive import KeepAliveConnection, ProtocolError

# What a scripted server does with one request: bytes to send back, CLOSE to drop the connection
# without a response, (bytes, CLOSE) to respond and then drop it, or STALL to never respond.
CLOSE = object()
STALL = object()


class ScriptedServer:
    """A TCP server on 127.0.0.1 that responds to each HTTP request with what ``script`` returns.

    ``script(connection_index, request_id)`` gets the request's ``X-Id`` header. The server records
    every request it read, per connection, and how many complete requests its first read held.
    """

    def __init__(self, script: Callable[[int, str], object]) -> None:
        self.script = script
        self.requests: list[tuple[int, str]] = []
        self.first_read_requests: list[int] = []
        self.reads: list[int] = []  # complete requests found by each read that found any
        self.closed = threading.Event()  # set each time the server closes a connection
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()

    def connection(self, timeout: float = 5.0) -> KeepAliveConnection:
        return KeepAliveConnection("127.0.0.1", self.port, timeout=timeout)

    def _serve(self) -> None:
        index = 0
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(sock, index), daemon=True).start()
            index += 1

    def _handle(self, sock: socket.socket, index: int) -> None:
        try:
            self._converse(sock, index)
        finally:
            sock.close()
            self.closed.set()

    def _converse(self, sock: socket.socket, index: int) -> None:
        buffer = b""
        first = True
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            requests, buffer = _split_requests(buffer)
            if requests:
                self.reads.append(len(requests))
            if first:
                self.first_read_requests.append(len(requests))
                first = False
            for request_id in requests:
                self.requests.append((index, request_id))
                answer = self.script(index, request_id)
                if answer is STALL:
                    time.sleep(30)
                    return
                if answer is CLOSE:
                    return
                if isinstance(answer, tuple):
                    sock.sendall(answer[0])
                    return
                sock.sendall(answer)  # type: ignore[arg-type]


def _split_requests(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete requests in ``buffer`` (their X-Id values) and the bytes left over."""
    ids = []
    while b"\r\n\r\n" in buffer:
        head, rest = buffer.split(b"\r\n\r\n", 1)
        fields = dict(
            line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line
        )
        length = int(fields.get(b"Content-Length", b"0"))
        if len(rest) < length:
            break
        ids.append(fields.get(b"X-Id", b"").decode())
        buffer = rest[length:]
    return ids, buffer


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def requests_with_ids(count: int) -> list[tuple[dict[str, str], bytes]]:
    return [({"X-Id": str(number), "Content-Type": "text/plain"}, b"x" * 100) for number in range(count)]


def test_posts_reuse_one_connection() -> None:
    with ScriptedServer(lambda connection, request_id: ok(f"answer {request_id}".encode())) as server:
        connection = server.connection()
        answers = [connection.post("/api/1/envelope/", {"X-Id": str(number)}, b"{}") for number in range(5)]

    assert [answer.body for answer in answers] == [f"answer {number}".encode() for number in range(5)]
    assert {answer.status for answer in answers} == {200}
    assert [index for index, _ in server.requests] == [0] * 5


def test_pipelined_group_in_order() -> None:
    with ScriptedServer(lambda connection, request_id: ok(request_id.encode())) as server:
        responses, error = server.connection().post_many("/api/1/envelope/", requests_with_ids(16))

    assert error is None
    assert [response.body for response in responses] == [str(number).encode() for number in range(16)]
    assert server.first_read_requests[0] == 1  # a new connection carries one request first
    assert max(server.reads) > 1  # then the server found several requests in one read
    assert [index for index, _ in server.requests] == [0] * 16


def test_chunked_close_delimited_and_interim_responses() -> None:
    answers = {
        "0": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
        "1": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-Sentry-Rate-Limits: 60:transaction\r\n"
        b"Content-Length: 0\r\n\r\n",
        "2": (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", CLOSE),
    }
    with ScriptedServer(lambda connection, request_id: answers[request_id]) as server:
        connection = server.connection()
        chunked, limited, delimited = (
            connection.post("/", {"X-Id": request_id}, b"") for request_id in ("0", "1", "2")
        )

    assert (chunked.status, chunked.body) == (200, b"hello world")
    assert limited.status == 429
    assert limited.headers.get("Retry-After") == "7"
    assert limited.headers.get("x-sentry-rate-limits") == "60:transaction"
    assert delimited.body == b"until the end"


def test_dropped_idle_connection_reopened() -> None:
    def script(connection: int, request_id: str) -> object:
        # Connection 0 is closed after its first response, as a server does after its keep-alive
        # timeout, and the response does not announce it.
        return (ok(b"done"), CLOSE) if connection == 0 else ok(b"done")

    with ScriptedServer(script) as server:
        connection = server.connection()
        first = connection.post("/", {"X-Id": "first"}, b"")
        assert server.closed.wait(5)
        second = connection.post("/", {"X-Id": "second"}, b"")

    assert first.body == b"done"
    assert second.body == b"done"
    assert server.requests == [(0, "first"), (1, "second")]


def test_reset_after_read_not_resent() -> None:
    def script(connection: int, request_id: str) -> object:
        # The server reads "second", then drops the connection without a response.
        return CLOSE if request_id == "second" else ok(b"done")

    with ScriptedServer(script) as server:
        connection = server.connection()
        connection.post("/", {"X-Id": "first"}, b"")
        responses, error = connection.post_many("/", [({"X-Id": "second"}, b"")])

    assert responses == []
    assert isinstance(error, ConnectionError)
    assert server.requests == [(0, "first"), (0, "second")]  # not sent again on a new connection


def test_connection_close_resends_rest() -> None:
    def script(connection: int, request_id: str) -> object:
        if connection == 0 and request_id == "2":
            return (ok(b"2", "Connection: close"), CLOSE)
        return ok(request_id.encode())

    with ScriptedServer(script) as server:
        responses, error = server.connection().post_many("/", requests_with_ids(8))

    assert error is None
    assert [response.body for response in responses] == [str(number).encode() for number in range(8)]
    # Every request was processed exactly once: 0 to 2 on the first connection, the rest on a new one.
    assert server.requests == [(0, "0"), (0, "1"), (0, "2")] + [(1, str(number)) for number in range(3, 8)]


def test_abrupt_close_not_resent() -> None:
    def script(connection: int, request_id: str) -> object:
        return CLOSE if connection == 0 and request_id == "3" else ok(request_id.encode())

    with ScriptedServer(script) as server:
        connection = server.connection()
        responses, error = connection.post_many("/", requests_with_ids(8))
        seen_after_failure = len(server.requests)
        later, later_error = connection.post_many("/", requests_with_ids(2))

    assert [response.body for response in responses] == [b"0", b"1", b"2"]
    assert isinstance(error, OSError)
    assert seen_after_failure == 4  # nothing was sent again
    assert connection.pipelining is False
    assert later_error is None
    assert [response.body for response in later] == [b"0", b"1"]
    assert server.first_read_requests[-1] == 1  # one request at a time now
    assert server.reads[-2:] == [1, 1]


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    ],
    ids=["not-http", "huge-head", "huge-length", "bad-chunk", "bad-header"],
)
def test_unreadable_response_protocol_error(answer: bytes) -> None:
    with ScriptedServer(lambda connection, request_id: answer) as server:
        connection = server.connection()
        responses, error = connection.post_many("/", requests_with_ids(1))

    assert responses == []
    assert isinstance(error, ProtocolError)
    assert connection._sock is None


def test_stalled_server_times_out() -> None:
    with ScriptedServer(lambda connection, request_id: STALL) as server:
        responses, error = server.connection(timeout=0.3).post_many("/", requests_with_ids(3))

    assert responses == []
    assert isinstance(error, TimeoutError)


def test_refused_connection_is_an_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    responses, error = KeepAliveConnection("127.0.0.1", port, timeout=2).post_many("/", requests_with_ids(2))

    assert responses == []
    assert isinstance(error, ConnectionRefusedError)


def test_header_line_break_rejected() -> None:
    connection = KeepAliveConnection("127.0.0.1", 9, timeout=1)
    with pytest.raises(ValueError, match="line break"):
        connection.post_many("/", [({"X-Evil": "a\r\nInjected: 1"}, b"")])


@pytest.fixture
def uvicorn_server() -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.append((scope["path"], body))
        answer = f'{{"id":"{len(received)}"}}'.encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1], received
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_uvicorn_pipelined_groups(uvicorn_server: tuple[int, list[tuple[str, bytes]]]) -> None:
    port, received = uvicorn_server
    connection = KeepAliveConnection("127.0.0.1", port, timeout=5)
    groups = [connection.post_many("/api/1/envelope/", requests_with_ids(16)) for _ in range(3)]

    for responses, error in groups:
        assert error is None
        assert [response.status for response in responses] == [200] * 16
    bodies = [response.body for responses, _ in groups for response in responses]
    assert bodies == [f'{{"id":"{number}"}}'.encode() for number in range(1, 49)]
    assert len(received) == 48
    assert connection.pipelining is True


NODE_SERVER = """
const http = require("http");
let count = 0;
const server = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    count += 1;
    response.setHeader("Content-Type", "application/json");
    response.end(JSON.stringify({ id: String(count), bytes: Buffer.concat(chunks).length }));
  });
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_pipelined_groups(tmp_path: Path) -> None:
    script = tmp_path / "server.js"
    script.write_text(NODE_SERVER)
    process = subprocess.Popen(["node", str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        connection = KeepAliveConnection("127.0.0.1", port, timeout=5)
        groups = [connection.post_many("/api/1/envelope/", requests_with_ids(16)) for _ in range(3)]
    finally:
        process.terminate()
        process.wait(10)

    for responses, error in groups:
        assert error is None
        assert [response.status for response in responses] == [200] * 16
    bodies = [response.body for responses, _ in groups for response in responses]
    assert bodies == [f'{{"id":"{number}","bytes":100}}'.encode() for number in range(1, 49)]
    assert connection.pipelining is True
