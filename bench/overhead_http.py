"""A bounded HTTP/1.1 load for the overhead benchmark: fixed request rate, a fixed pool of connections.

Requests are scheduled at ``rate`` per second (open loop). Each takes a keep-alive connection from
a pool of ``connections``. When all are busy it waits for one, so at most ``connections`` requests
are in flight and the load never grows past that. Latency runs from the scheduled send time to the
last byte of the response, so time spent waiting for a connection behind a slow request counts
(no coordinated omission).

Plain asyncio streams, no HTTP library: the load runs on the same two cores as the server, and the
lighter it is, the less it disturbs what it measures. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from overhead_mix import BenchRequest, request_at

HOST = "127.0.0.1"


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, one per completed request
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # by kind: "status", "connection"

    def percentile(self, share: float) -> float:
        """Return the nearest-rank percentile: the smallest latency with ``share`` of them at or below it."""
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def encode(request: BenchRequest, port: int) -> bytes:
    lines = [f"{request.method} {request.path} HTTP/1.1", f"host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in request.headers]
    lines.append(f"content-length: {len(request.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + request.body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, timeout: float = 10.0) -> "Connection":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        return cls(reader, writer)

    async def exchange(self, payload: bytes) -> tuple[int, bool]:
        """Send one request; return the status and whether the server keeps the connection open."""
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = dict(line.lower().split(":", 1) for line in lines[1:] if ":" in line)
        length = int(headers.get("content-length", "0").strip())
        if length:
            await self.reader.readexactly(length)
        return status, headers.get("connection", "").strip() != "close"

    def close(self) -> None:
        self.writer.close()


async def run_load(
    port: int,
    mix: Sequence[BenchRequest] | None = None,
    *,
    first: int = 0,
    count: int,
    rate: float,
    connections: int,
    timeout: float = 30.0,
) -> LoadResult:
    """Send ``count`` requests at ``rate`` per second: ``mix`` in order and repeated, or by default
    the benchmark's requests from number ``first`` on."""
    loop = asyncio.get_running_loop()
    result = LoadResult()

    def request_for(index: int) -> BenchRequest:
        return mix[index % len(mix)] if mix else request_at(first + index)

    pool: asyncio.Queue[Connection | None] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(None)  # opened on first use

    async def one(index: int, scheduled: float) -> None:
        request = request_for(index)
        payload = encode(request, port)
        connection = await pool.get()
        try:
            if connection is None:
                connection = await Connection.open(port)
                status, keep = await asyncio.wait_for(connection.exchange(payload), timeout)
            else:
                try:
                    status, keep = await asyncio.wait_for(connection.exchange(payload), timeout)
                except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as error:
                    if getattr(error, "partial", b""):
                        raise
                    # uvicorn closes a connection after an unhandled exception without saying so
                    # in the 500 response. Like any HTTP client, send again on a new connection.
                    connection.close()
                    connection = await Connection.open(port)
                    status, keep = await asyncio.wait_for(connection.exchange(payload), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
            result.failures["connection"] += 1
            if connection is not None:
                connection.close()
            pool.put_nowait(None)
            return
        if not keep:
            connection.close()
            connection = None
        pool.put_nowait(connection)
        result.latencies.append(loop.time() - scheduled)
        result.statuses[status] += 1
        if status != request.expected_status:
            result.failures["status"] += 1

    start = loop.time()
    tasks = []
    for index in range(count):
        scheduled = start + index / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(index, scheduled)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        connection = pool.get_nowait()
        if connection is not None:
            connection.close()
    return result


async def wait_until_serving(port: int, path: str = "/items/1", timeout: float = 60.0) -> None:
    """Poll ``path`` until it returns 200; raise TimeoutError when it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    probe = encode(BenchRequest("GET", path, (), b"", 200), port)
    while True:
        try:
            connection = await Connection.open(port)
            try:
                status, _ = await asyncio.wait_for(connection.exchange(probe), 5)
            finally:
                connection.close()
            if status == 200:
                return
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            pass
        if loop.time() > deadline:
            raise TimeoutError(f"no server responded with 200 on {HOST}:{port} within {timeout} s")
        await asyncio.sleep(0.2)
