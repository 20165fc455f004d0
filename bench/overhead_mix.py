"""The request mix of the overhead benchmark, shared by the in-process driver and the HTTP load.

Standard library only: the in-process driver imports it inside each setup's venv.

Requests come in cycles of 20, in this order (`request_at`):

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


# A session makes this many requests, so the session tracker records sessions starting and ending.
REQUESTS_PER_SESSION = 5
CYCLE = 20


def _session_headers(index: int) -> tuple[tuple[str, str], ...]:
    return (("x-session-id", f"bench-session-{index // REQUESTS_PER_SESSION}"), ("user-agent", "bench/1.0"))


def _signup(index: int) -> BenchRequest:
    email = f"jane.doe+{index}@example.com"
    body = json.dumps({"email": email, "password": f"correct-horse-{index}", "phone": f"+1 415 555 {index % 10000:04d}"})
    return BenchRequest(
        "POST",
        f"/signup?email={email.replace('+', '%2B')}&utm_source=mail",
        (
            ("content-type", "application/json"),
            # A JWT-shaped bearer token (header and payload are real base64url JSON).
            ("authorization", f"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJl{index:08d}"),
            ("cookie", f"session=s3cr3t-cookie-{index}; theme=dark"),
            *_session_headers(index),
        ),
        body.encode(),
        200,
    )


def request_at(index: int) -> BenchRequest:
    """Return request number ``index`` of the mix.

    The kind repeats every 20 requests. Ids, e-mails, tokens and sessions differ from one request
    to the next, so the scrubber's caches of clean values help no more than with real traffic.
    """
    slot = index % CYCLE
    if slot < 11:
        return BenchRequest("GET", f"/items/{1 + index * 7 % 100}", _session_headers(index), b"", 200)
    if slot < 15:
        return _signup(index)
    if slot < 17:
        return BenchRequest("GET", f"/items/{5000 + index}", _session_headers(index), b"", 404)
    if slot < 19:
        return BenchRequest("GET", f"/no-such-page/{index}", (), b"", 404)
    return BenchRequest("GET", f"/orders/{1 + index % 100}/refund", _session_headers(index), b"", 500)
