"""The Sentry transport's pipelined sending: what it counts as lost and when it reports an outage.

Uses the scripted server of tests/test_http_keepalive.py on 127.0.0.1 and a real sentry-sdk
client with `DirectHttpTransport`, so rate limits and lost-event records are sentry-sdk's own.
"""

from __future__ import annotations

import socket
from collections import Counter

import sentry_sdk
from sentry_sdk.envelope import Envelope

from raptorflow_otel.exporters.sentry_transport import DirectHttpTransport
from test_http_keepalive import CLOSE, ScriptedServer, ok


def make_transport(port: int) -> tuple[DirectHttpTransport, Counter]:
    client = sentry_sdk.Client(
        dsn=f"http://0123456789abcdef0123456789abcdef@127.0.0.1:{port}/1",
        default_integrations=False,
        integrations=[],
        transport=DirectHttpTransport,
    )
    transport = client.transport
    assert isinstance(transport, DirectHttpTransport)
    dropped: Counter = Counter()
    transport.on_dropped_event = lambda reason: dropped.update([reason])  # type: ignore[method-assign]
    return transport, dropped


def envelopes(count: int) -> list[Envelope]:
    batch = []
    for number in range(count):
        envelope = Envelope(headers={"event_id": f"{number:032x}"})
        envelope.add_event({"event_id": f"{number:032x}", "message": f"event {number}"})
        batch.append(envelope)
    return batch


def test_all_responses_no_error() -> None:
    with ScriptedServer(lambda connection, request_id: ok(b'{"id":"x"}')) as server:
        transport, dropped = make_transport(server.port)
        error = transport.send_envelopes(envelopes(16))

    assert error is None
    assert dropped == Counter()
    assert len(server.requests) == 16
    assert {index for index, _ in server.requests} == {0}


def test_partial_close_counts_rest_lost() -> None:
    answered = Counter()

    def script(connection: int, request_id: str) -> object:
        answered[connection] += 1
        # The first connection is dropped after its fifth response, without a Connection header.
        return (ok(b"{}"), CLOSE) if connection == 0 and answered[0] == 5 else ok(b"{}")

    with ScriptedServer(script) as server:
        transport, dropped = make_transport(server.port)
        first = transport.send_envelopes(envelopes(16))
        second = transport.send_envelopes(envelopes(3))

    assert first is None  # the server is reachable, so no pause
    assert dropped == Counter({"network": 11})
    assert second is None
    assert [index for index, _ in server.requests].count(0) == 5


def test_refused_server_is_unreachable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    transport, dropped = make_transport(port)
    error = transport.send_envelopes(envelopes(4))

    assert isinstance(error, ConnectionRefusedError)
    assert dropped == Counter({"network": 4})


def test_reset_on_reused_connection_is_reachable() -> None:
    answered = Counter()

    def script(connection: int, request_id: str) -> object:
        answered[connection] += 1
        # The 17th request on the first connection is read, then the connection is dropped.
        return CLOSE if connection == 0 and answered[0] == 17 else ok(b"{}")

    with ScriptedServer(script) as server:
        transport, dropped = make_transport(server.port)
        first = transport.send_envelopes(envelopes(16))
        second = transport.send_envelopes(envelopes(16))
        third = transport.send_envelopes(envelopes(2))

    assert first is None
    assert second is None  # the connection broke after serving a group: no pause
    assert third is None
    assert dropped == Counter({"network": 16})
    assert [index for index, _ in server.requests].count(1) == 2
