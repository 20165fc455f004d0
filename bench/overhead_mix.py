"""The request mix of the overhead benchmark, shared by the in-process driver and the HTTP load.

Standard library only: the in-process driver imports it inside each setup's venv.

One cycle is 20 requests, sent in this order and repeated:

* 11 x ``GET /items/{id}`` with a session header: one query, 200;
* 4 x ``POST /signup`` carrying personal data (e-mail in the query string, a bearer token and a
  session cookie in the headers, e-mail, password and phone in the JSON body): one query, 200;
* 2 x ``GET /items/{id}`` of a missing item: one query, 404;
* 2 x an unknown path: 404 from the router;
* 1 x ``GET /orders/{id}/refund``: one query, then an unhandled exception, 500 (5 % of requests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchRequest:
    method: str
    path: str  # with the query string
    headers: tuple[tuple[str, str], ...]
    body: bytes
    expected_status: int


def _session_headers(number: int) -> tuple[tuple[str, str], ...]:
    return (("x-session-id", f"bench-session-{number % 7}"), ("user-agent", "bench/1.0"))


def _signup(number: int) -> BenchRequest:
    email = f"jane.doe+{number}@example.com"
    body = json.dumps({"email": email, "password": f"correct-horse-{number}", "phone": "+1 415 555 0100"})
    return BenchRequest(
        "POST",
        f"/signup?email={email.replace('+', '%2B')}&utm_source=mail",
        (
            ("content-type", "application/json"),
            # A JWT-shaped bearer token (header and payload are real base64url JSON).
            ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJlLXZhbHVl"),
            ("cookie", f"session=s3cr3t-cookie-{number}; theme=dark"),
            *_session_headers(number),
        ),
        body.encode(),
        200,
    )


def build_cycle() -> list[BenchRequest]:
    """Return one cycle of the mix; requests differ in ids so caches see realistic variety."""
    cycle = [BenchRequest("GET", f"/items/{1 + number * 9 % 100}", _session_headers(number), b"", 200) for number in range(11)]
    cycle += [_signup(number) for number in range(4)]
    cycle += [BenchRequest("GET", f"/items/{5000 + number}", _session_headers(number), b"", 404) for number in range(2)]
    cycle += [BenchRequest("GET", f"/no-such-page/{number}", (), b"", 404) for number in range(2)]
    cycle.append(BenchRequest("GET", "/orders/42/refund", _session_headers(3), b"", 500))
    return cycle


REQUEST_MIX = build_cycle()
