"""End-to-end: secrets that the shop's support routes leak never reach Sentry or OTLP.

Each test sends one real request to the example shop running under ``opentelemetry-instrument``.
The request goes through a support route of ``examples/shop_app.py`` that puts a secret where real
apps put them. These places are SQL with inline literals, a Redis AUTH command, captured
``Authorization`` and vendor token headers, a ``?token=`` or ``?api_key=`` query, ``user:password@``
in a URL, a batch insert's error message and a JWT in a span event. Each test then checks two things. No form of the secret is in
any byte that the Sentry receiver or the OTLP receiver got (`leak_search.find_leaks`). The scrubbed
data still arrived, in most tests with ``raptorflow.scrub.rules`` naming the rule that fired.

Most tests share one app with opentelemetry-instrumentation-fastapi (``RAPTORFLOW_FASTAPI_MODE=
contrib``), which can capture request headers. The query-string test also runs against FastAPI's
native telemetry, which records the query in ``url.query`` by its own rules.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from contextlib import ExitStack
from typing import Any, Callable
from urllib.parse import urlencode

import pytest

from leak_search import (
    ShopStack,
    TracedResponse,
    attributes_of,
    is_http_client_span,
    is_server_span,
    only_span,
    query_of,
    run_shop_stack,
    scrub_rules,
    send_traced,
    sentry_items,
    url_of,
    wait_for_trace,
)

# Synthetic secrets. Each is unique enough that finding it anywhere in the exports is a leak.
CACHE_PASSWORD = "rds-Pw-7c41f09be2"
BEARER_TOKEN = "agt_4f1c9e2b7a6d5e3c8b0a9f1e2d3c4b5a"
API_KEY = "invk-93b1e7c0d4a25f68"
SHOPIFY_TOKEN = "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"
GITLAB_TOKEN = "glpat-Xq3vR8tLm2Nc7Wb4Kd9z"
DATABASE_PASSWORD = "pg-Pw-2b8e61d0f7"
FEED_PASSWORD = "feed-Pw-0d9c7e5a31"
FEED_TOKEN = "fdtk-61e4b0c9a2d73f85"
CUSTOMER_EMAIL = "nadia.okafor.1987@mailbox.example.org"
GITHUB_TOKEN = "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"
US_SSN = "512-47-3390"
IBAN = "DE12 5001 0517 0648 4898 90"  # valid mod-97 checksum
CARD_NUMBER = "4539 1488 0343 6467"  # Visa prefix, valid Luhn check digit
PASSWORD = "Tr0ub4dor-42x"
PRIVATE_KEY_BODY = "L346wxNtGAKaPBlypQPxoJVLYjwRHfVDSQDlSJVwyFTjNzIkSErkoQfNoyC28WhV"
PRIVATE_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{PRIVATE_KEY_BODY}\n-----END RSA PRIVATE KEY-----"

# Headers that the app captures on its server spans and on its httpx client spans.
SERVER_HEADERS = "authorization,x-api-key,private-token,x-shopify-access-token,x-support-identity,referer"
CLIENT_HEADERS = "authorization,private-token,x-shopify-access-token"


def make_jwt(claims: dict[str, Any]) -> str:
    """Sign ``claims`` as an HS256 JWT with a test key."""

    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = encode(json.dumps(claims).encode())
    signature = hmac.new(b"test-widget-key", f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{encode(signature)}"


IDENTITY_JWT = make_jwt({"sub": "cust_88412", "name": "Nadia Okafor", "exp": 1893456000})


class Stacks:
    """Starts one shop stack per FastAPI mode on first use and stops them all at the end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._exit_stack = ExitStack()
        self._stacks: dict[str, ShopStack] = {}

    def get(self, mode: str) -> ShopStack:
        if mode not in self._stacks:
            env = {
                "RAPTORFLOW_FASTAPI_MODE": mode,
                "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": SERVER_HEADERS,
                "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": CLIENT_HEADERS,
                "SHOP_SUPPORT_CACHE_URL": f"redis://default:{CACHE_PASSWORD}@cache.example.internal:6379/0",
            }
            workdir = self._tmp_path_factory.mktemp(f"scrub-e2e-{mode}")
            self._stacks[mode] = self._exit_stack.enter_context(run_shop_stack(workdir, env))
        return self._stacks[mode]

    def close(self) -> None:
        self._exit_stack.close()


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    stacks = Stacks(tmp_path_factory)
    yield stacks
    stacks.close()


@pytest.fixture(scope="module")
def stack(stacks) -> ShopStack:
    return stacks.get("contrib")


def request_and_wait(stack: ShopStack, method: str, path: str, *, errors: int = 0, **kwargs: Any) -> TracedResponse:
    traced = send_traced(stack.app, method, path, **kwargs)
    wait_for_trace(stack.sentry, stack.otlp, traced, errors=errors)
    return traced


def assert_no_leak(stack: ShopStack, *needles: str) -> None:
    leaks = stack.leaks(needles)
    assert not leaks, "secret reached a receiver:\n" + "\n".join(map(str, leaks))


def span_where(stack: ShopStack, traced: TracedResponse, condition: Callable[[Any], bool]) -> Any:
    return only_span(stack.otlp, traced.trace_id, condition)


def server_span(stack: ShopStack, traced: TracedResponse) -> Any:
    return span_where(stack, traced, is_server_span)


def client_span(stack: ShopStack, traced: TracedResponse) -> Any:
    return span_where(stack, traced, is_http_client_span)


def header_attribute(span: Any, header: str) -> Any:
    """A captured request header's attribute value.

    The ASGI and httpx instrumentations 0.66b2 write ``-`` in header names as ``_``
    (``http.request.header.x_api_key``), so both spellings are looked up.
    """
    attributes = attributes_of(span)
    dashed = f"http.request.header.{header}"
    underscored = f"http.request.header.{header.replace('-', '_')}"
    assert dashed in attributes or underscored in attributes, sorted(attributes)
    return attributes.get(dashed, attributes.get(underscored))


def create_ticket(stack: ShopStack, **fields: Any) -> dict[str, Any]:
    body = {"email": "someone@example.com", "subject": "Grinder is noisy", "message": "", **fields}
    response = stack.app.post("/support/tickets", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_inline_sql_literal_becomes_placeholder(stack):
    marker = "Brien-7f3a0c"
    text = f"O'{marker} 14 Harbour Lane"  # a name and a street, which no value rule detects

    traced = request_and_wait(stack, "POST", "/support/search", json={"text": text})

    assert traced.response.status_code == 200
    assert_no_leak(stack, text, marker, "14 Harbour Lane")
    statement_span = span_where(stack, traced, lambda span: "db.statement" in attributes_of(span))
    statement = attributes_of(statement_span)["db.statement"]
    assert statement == "SELECT id, subject FROM support_tickets WHERE subject LIKE ? OR message LIKE ? ORDER BY id DESC LIMIT ?"
    # The distro's SQLAlchemy spans sanitize the statement when they record it, so the scrubber
    # finds nothing left to replace there and names no rule.
    assert scrub_rules(statement_span) == ()
    (transaction,) = sentry_items(stack.sentry, "transaction", traced.trace_id)
    assert [span["description"] for span in transaction["spans"] if span["op"] == "db"] == [statement]


def test_redis_auth_password_removed(stack):
    traced = request_and_wait(
        stack, "POST", "/support/tickets", json={"email": "a.b@example.com", "subject": "Late parcel"}
    )

    assert traced.response.status_code == 201
    assert_no_leak(stack, CACHE_PASSWORD)
    auth = span_where(stack, traced, lambda span: span.name == "AUTH")
    assert auth.kind == auth.SPAN_KIND_CLIENT
    assert attributes_of(auth)["db.system"] == "redis"
    assert attributes_of(auth)["db.statement"] == "AUTH ? ?"
    assert scrub_rules(auth) == ("db-command-args",)
    (transaction,) = sentry_items(stack.sentry, "transaction", traced.trace_id)
    assert "AUTH ? ?" in [span["description"] for span in transaction["spans"]]


def test_bearer_header_filtered_on_server_span(stack):
    traced = request_and_wait(
        stack, "GET", "/support/stock/1", headers={"Authorization": f"Bearer {BEARER_TOKEN}"}
    )

    assert traced.response.status_code == 200
    assert_no_leak(stack, BEARER_TOKEN)
    server = server_span(stack, traced)
    assert header_attribute(server, "authorization") == ("[Filtered:secret-key]",)
    assert "secret-key" in scrub_rules(server)


def test_bearer_header_filtered_on_httpx_span(stack):
    traced = request_and_wait(
        stack, "GET", "/support/stock/2", headers={"Authorization": f"Bearer {BEARER_TOKEN}"}
    )

    assert traced.response.status_code == 200
    forwarded = stack.inventory.snapshot("/inventory/2")
    assert forwarded[-1].headers["authorization"] == f"Bearer {BEARER_TOKEN}"
    assert_no_leak(stack, BEARER_TOKEN)
    client = client_span(stack, traced)
    assert header_attribute(client, "authorization") == ("[Filtered:secret-key]",)
    assert "secret-key" in scrub_rules(client)


@pytest.mark.parametrize("mode", ["contrib", "native"])
def test_incoming_query_token_filtered(stacks, mode):
    stack = stacks.get(mode)
    ticket = create_ticket(stack, email=CUSTOMER_EMAIL)
    access_token = ticket["access_token"]

    traced = request_and_wait(stack, "GET", f"/support/tickets/{ticket['id']}?token={access_token}&lang=en")

    assert traced.response.status_code == 200
    assert_no_leak(stack, access_token)
    server = server_span(stack, traced)
    assert query_of(server) == {"token": ["[Filtered:secret-assignment]"], "lang": ["en"]}
    assert "secret-assignment" in scrub_rules(server)
    (transaction,) = sentry_items(stack.sentry, "transaction", traced.trace_id)
    assert transaction["transaction"] == "GET /support/tickets/{ticket_id}"


def test_outgoing_query_api_key_filtered(stack):
    traced = request_and_wait(stack, "GET", "/support/stock/3", headers={"X-Api-Key": API_KEY})

    assert traced.response.status_code == 200
    forwarded = stack.inventory.snapshot("/inventory/3")
    assert forwarded[-1].path == f"/inventory/3?api_key={API_KEY}"
    assert_no_leak(stack, API_KEY)
    client = client_span(stack, traced)
    assert query_of(client) == {"api_key": ["[Filtered:secret-assignment]"]}
    assert "secret-assignment" in scrub_rules(client)
    server = server_span(stack, traced)
    assert header_attribute(server, "x-api-key") == ("[Filtered:secret-key]",)


def test_connection_url_password_redacted(stack):
    source = f"postgresql://shop:{DATABASE_PASSWORD}@db.example.internal/shop"

    traced = request_and_wait(
        stack, "POST", "/support/import", json={"source_url": source, "tickets": []}, errors=1
    )

    assert traced.response.status_code == 500
    assert_no_leak(stack, DATABASE_PASSWORD)
    redacted = "postgresql://REDACTED:REDACTED@db.example.internal/shop"
    server = server_span(stack, traced)
    assert attributes_of(server)["support.import.source"] == redacted
    assert "url-userinfo" in scrub_rules(server)
    (error,) = sentry_items(stack.sentry, "event", traced.trace_id)
    (exception,) = [value for value in error["exception"]["values"] if value["type"] == "ConnectionError"]
    assert exception["value"] == f"Cannot read tickets from {redacted}: this example has no driver for it"


def test_outgoing_userinfo_and_token_removed(stack):
    port = stack.inventory.port
    feed_url = f"http://feed:{FEED_PASSWORD}@127.0.0.1:{port}/inventory/4?token={FEED_TOKEN}"
    basic = base64.b64encode(f"feed:{FEED_PASSWORD}".encode()).decode()

    traced = request_and_wait(stack, "POST", "/support/integrations/check", json={"feed_url": feed_url})

    assert traced.response.status_code == 200
    forwarded = stack.inventory.snapshot("/inventory/4")
    assert forwarded[-1].headers["authorization"] == f"Basic {basic}"
    assert forwarded[-1].path == f"/inventory/4?token={FEED_TOKEN}"
    assert_no_leak(stack, FEED_PASSWORD, FEED_TOKEN, basic)
    client = client_span(stack, traced)
    assert url_of(client) == f"http://REDACTED:REDACTED@127.0.0.1:{port}/inventory/4?token=[Filtered:secret-assignment]"
    assert {"url-userinfo", "secret-assignment"} <= set(scrub_rules(client))


def test_batch_insert_error_rows_filtered(stack):
    rows = [
        {"external_ref": "ZD-40917", "email": "li.wei.1990@mailbox.example.org", "subject": "Parcel 5521-kq lost"},
        {"external_ref": "ZD-40917", "email": "maria.santos.77@mailbox.example.org", "subject": "Refund 8830-zx"},
    ]
    body = {"source_url": "sqlite:///legacy-helpdesk.db", "tickets": rows}

    traced = request_and_wait(stack, "POST", "/support/import", json=body, errors=1)

    assert traced.response.status_code == 500
    assert_no_leak(stack, *(row["email"] for row in rows), "Parcel 5521-kq lost", "Refund 8830-zx")
    (error,) = sentry_items(stack.sentry, "event", traced.trace_id)
    # The chain has sqlite3's IntegrityError and SQLAlchemy's, whose message has the SQL and rows.
    (exception,) = [value for value in error["exception"]["values"] if value["module"] == "sqlalchemy.exc"]
    assert exception["type"] == "IntegrityError"
    assert "UNIQUE constraint failed: support_tickets.external_ref" in exception["value"]
    assert "[SQL: INSERT INTO support_tickets (external_ref, email, subject, message, access_token) VALUES (?, ?, ?, ?, ?)]" in exception["value"]
    assert "[parameters: [Filtered:sql-parameters]]" in exception["value"]
    server = server_span(stack, traced)
    assert "sql-parameters" in scrub_rules(server)


def test_jwt_in_span_event_filtered(stack):
    traced = request_and_wait(
        stack,
        "POST",
        "/support/tickets",
        json={"email": "c.d@example.com", "subject": "Where is my order?"},
        headers={"X-Support-Identity": IDENTITY_JWT},
    )

    assert traced.response.status_code == 201
    payload = IDENTITY_JWT.split(".")[1]
    assert_no_leak(stack, IDENTITY_JWT, payload)
    server = server_span(stack, traced)
    (event,) = [event for event in server.events if event.name == "support.customer.identified"]
    assert attributes_of(event) == {"support.identity": "[Filtered:jwt]"}
    assert "jwt" in scrub_rules(server)
    (transaction,) = sentry_items(stack.sentry, "transaction", traced.trace_id)
    assert IDENTITY_JWT not in json.dumps(transaction)


def test_vendor_token_headers_filtered(stack):
    headers = {"X-Shopify-Access-Token": SHOPIFY_TOKEN, "PRIVATE-TOKEN": GITLAB_TOKEN}

    traced = request_and_wait(stack, "GET", "/support/stock/4", headers=headers)

    assert traced.response.status_code == 200
    forwarded = stack.inventory.snapshot("/inventory/4")[-1]
    assert forwarded.headers["x-shopify-access-token"] == SHOPIFY_TOKEN
    assert forwarded.headers["private-token"] == GITLAB_TOKEN
    assert_no_leak(stack, SHOPIFY_TOKEN, GITLAB_TOKEN)
    for span in (server_span(stack, traced), client_span(stack, traced)):
        assert header_attribute(span, "x-shopify-access-token") == ("[Filtered:secret-key]",)
        assert header_attribute(span, "private-token") == ("[Filtered:secret-key]",)


def test_email_attribute_and_event_filtered(stack):
    message = f"Please reply to {CUSTOMER_EMAIL}, not to the order address."

    traced = request_and_wait(
        stack,
        "POST",
        "/support/tickets",
        json={"email": CUSTOMER_EMAIL, "subject": "Wrong invoice", "message": message},
    )

    assert traced.response.status_code == 201
    assert_no_leak(stack, CUSTOMER_EMAIL)
    server = server_span(stack, traced)
    assert attributes_of(server)["support.customer.email"] == "[Filtered:email]"
    (event,) = [event for event in server.events if event.name == "support.ticket.received"]
    assert attributes_of(event) == {
        "support.ticket.message": "Please reply to [Filtered:email], not to the order address."
    }
    assert "email" in scrub_rules(server)


def test_exception_quoting_input_filtered(stack):
    order_ref = f"sent to {CUSTOMER_EMAIL}"

    traced = request_and_wait(
        stack,
        "POST",
        "/support/tickets",
        json={"email": "e.f@example.com", "subject": "Damaged box", "order_ref": order_ref},
        errors=1,
    )

    assert traced.response.status_code == 500
    assert_no_leak(stack, CUSTOMER_EMAIL)
    (error,) = sentry_items(stack.sentry, "event", traced.trace_id)
    (exception,) = [value for value in error["exception"]["values"] if value["type"] == "ValueError"]
    assert exception["value"] == "invalid literal for int() with base 10: 'sent to [Filtered:email]'"


def inventory_url(stack: ShopStack, path: str) -> str:
    return f"http://127.0.0.1:{stack.inventory.port}{path}"


# Secrets of the kinds above in forms that real requests produce. A GitHub fine-grained token. A
# value on the second line of a text that repr() quotes in an exception message, where the line
# break becomes the two characters "\n" right before the value. Query values that an HTTP client
# percent-encodes, with "+" for a space.
# Each case: method, path, request arguments (a function of the stack), status, secret, and a text
# exported next to the secret, which shows that the field carrying the secret was exported.
ENCODED_CASES = [
    pytest.param(
        "POST", "/support/tickets",
        lambda stack: {"json": {"email": "g.h@example.com", "subject": f"CI token {GITHUB_TOKEN} leaked"}},
        201, GITHUB_TOKEN, "CI token ", id="github-token-in-attribute",
    ),
    pytest.param(
        "POST", "/support/tickets",
        lambda stack: {"json": {"email": "g.h@example.com", "subject": "Refund", "order_ref": f"A-1042\n{US_SSN}"}},
        500, US_SSN, "with base 10: '1042", id="ssn-on-second-line-of-exception",
    ),
    pytest.param(
        "POST", "/support/integrations/check",
        lambda stack: {"json": {"feed_url": inventory_url(stack, "/inventory/1?" + urlencode({"payout": IBAN}))}},
        200, IBAN, "/inventory/1?payout=", id="iban-in-outgoing-query",
    ),
    pytest.param(
        "GET", "/support/stock/1",
        lambda stack: {"headers": {"Referer": "https://shop.example/checkout?" + urlencode({"card": CARD_NUMBER})}},
        200, CARD_NUMBER, "shop.example/checkout?card=", id="card-in-referer-query",
    ),
    pytest.param(
        "POST", "/support/integrations/check",
        lambda stack: {"json": {"feed_url": inventory_url(stack, "/inventory/1?" + urlencode({"note": f"password={PASSWORD}"}))}},
        200, PASSWORD, "/inventory/1?note=", id="password-assignment-in-outgoing-query",
    ),
    pytest.param(
        "GET", "/support/tickets/1",
        lambda stack: {"params": {"token": "wrong", "attachment": PRIVATE_KEY}},
        404, PRIVATE_KEY_BODY, "&attachment=", id="private-key-in-incoming-query",
    ),
]


@pytest.mark.parametrize(("method", "path", "arguments", "status", "secret", "nearby"), ENCODED_CASES)
def test_encoded_secret_not_exported(stack, method, path, arguments, status, secret, nearby):
    traced = request_and_wait(stack, method, path, errors=1 if status == 500 else 0, **arguments(stack))

    assert traced.response.status_code == status
    assert stack.exported(nearby), f"{nearby!r} was not exported, so the secret's field was not either"
    assert_no_leak(stack, secret)


def test_nothing_leaked_after_shutdown(stacks):
    """Stop every app (SIGTERM flushes what it still buffers) and search everything once more."""
    all_secrets = [
        CACHE_PASSWORD, BEARER_TOKEN, API_KEY, SHOPIFY_TOKEN, GITLAB_TOKEN, DATABASE_PASSWORD,
        FEED_PASSWORD, FEED_TOKEN, CUSTOMER_EMAIL, IDENTITY_JWT, GITHUB_TOKEN, US_SSN, IBAN,
        CARD_NUMBER, PASSWORD, PRIVATE_KEY_BODY,
    ]
    started = [stacks.get(mode) for mode in ("contrib", "native")]
    for stack in started:
        stack.app.stop()

    for stack in started:
        assert_no_leak(stack, *all_secrets)
        assert stack.otlp.metric_names(), "no metrics arrived, so metric attributes were not searched"
