"""Property-based: a generated secret, anywhere a request can put it, never reaches Sentry or OTLP.

One shop runs under ``opentelemetry-instrument`` for the whole module. It exports to a Sentry and an
OTLP receiver on 127.0.0.1 and captures every request header on server and httpx spans. For each
example, hypothesis draws a secret of one detector kind and one location. The kinds are e-mail
addresses, card numbers, IBANs, JWTs, vendor tokens, AWS key ids, ``password=...`` assignments, PEM
private keys, IPv4 addresses and US SSNs. The test sends one real request that puts the secret at
its location:

* attribute: a ticket subject, which the route sets as a span attribute;
* event: a ticket message, which the route adds as a span-event attribute;
* exception: an order number that ``int()`` rejects, quoting it in the ValueError's message;
* sql: a search text, which the route inlines as an SQL string literal;
* query: a query parameter of the incoming request, or of the outgoing httpx call;
* userinfo: the password of a database URL (span attribute and exception message), or of the
  outgoing httpx call's URL;
* header: an incoming request header, which the route passes on to the inventory service when it
  carries credentials.

In the first four locations the secret sits inside a short free text drawn from `CONTEXTS`.

Every request starts its own trace (``traceparent``), and the test waits until that trace has
arrived at both receivers. Then no form of the secret (raw, percent-encoded, JSON-escaped, as
``repr`` quotes it) may occur in any byte either receiver has got. The place where the secret was
put must also show a scrub marker, so an example whose secret never reached telemetry cannot pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from leak_search import (
    ShopStack,
    TracedResponse,
    attributes_of,
    is_http_client_span,
    is_server_span,
    only_span,
    query_of,
    run_shop_stack,
    send_traced,
    sentry_items,
    url_of,
    wait_for_trace,
)

# Each example is one HTTP round trip plus the wait for its export: 250 examples took 38 s on a
# 2-core machine. Shrinking is off because it would repeat round trips for minutes. A failure
# prints the secret, the request's draws and the field where the secret leaked instead.
PROPERTY_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)

ALPHANUMERIC = string.ascii_letters + string.digits
BASE64URL = ALPHANUMERIC + "-_"
BASE32 = string.ascii_uppercase + "234567"
HEX = "0123456789abcdef"


@dataclass(frozen=True)
class Secret:
    kind: str
    text: str
    # Parts of `text` that must never be exported: the whole of it, or only the secret value where
    # a rule keeps a harmless part by design (the key of ``password=...``, a PEM block's header).
    needles: tuple[str, ...]


def fixed_length(alphabet: str, size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=size)


# -- secrets, one strategy per detector kind -------------------------------------------------------


@st.composite
def emails(draw: st.DrawFn) -> Secret:
    local = draw(st.from_regex(r"[a-z][a-z0-9]{1,12}([._+-][a-z0-9]{1,10}){0,2}", fullmatch=True))
    labels = draw(st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True), min_size=1, max_size=3))
    tld = draw(st.sampled_from(["com", "org", "net", "io", "de", "co.uk", "example", "museum"]))
    address = f"{local}@{'.'.join(labels)}.{tld}"
    if draw(st.booleans()):
        address = address.upper() if draw(st.booleans()) else address.capitalize()
    return Secret("email", address, (address,))


def luhn_check_digit(payload: str) -> str:
    total = 0
    for index, char in enumerate(reversed(payload)):
        value = int(char)
        if index % 2 == 0:  # every second digit from the right is doubled, counting the check digit
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


# (card network, prefixes, lengths, digit groups of the printed form)
CARD_NETWORKS = (
    ("visa", ("4",), (13, 16, 19), None),
    ("mastercard", tuple(str(n) for n in range(51, 56)) + ("2221", "2500", "2720"), (16,), None),
    ("amex", ("34", "37"), (15,), (4, 6, 5)),
    ("discover", ("6011", "644", "65"), (16,), None),
    ("jcb", ("3528", "3589"), (16,), None),
    ("diners", ("36", "38"), (14,), (4, 6, 4)),
    ("unionpay", ("62",), (16, 19), None),
)


@st.composite
def card_numbers(draw: st.DrawFn) -> Secret:
    _network, prefixes, lengths, groups = draw(st.sampled_from(CARD_NETWORKS))
    prefix = draw(st.sampled_from(prefixes))
    length = draw(st.sampled_from(lengths))
    body = draw(fixed_length(string.digits, length - len(prefix) - 1))
    digits = prefix + body + luhn_check_digit(prefix + body)
    separator = draw(st.sampled_from(["", " ", "-"]))
    if separator:
        if groups and sum(groups) == length:
            sizes = list(groups)
        else:
            sizes = [4] * (length // 4)
            if length % 4:
                sizes.append(length % 4)
        parts, start = [], 0
        for size in sizes:
            parts.append(digits[start : start + size])
            start += size
        printed = separator.join(parts)
    else:
        printed = digits
    return Secret("credit-card", printed, tuple({printed, digits}))


# Country code -> BBAN format: (character class, count) pairs, "n" digits, "a" upper-case
# letters, "c" either.
IBAN_FORMATS = {
    "DE": (("n", 18),),
    "GB": (("a", 4), ("n", 14)),
    "NL": (("a", 4), ("n", 10)),
    "FR": (("n", 10), ("c", 11), ("n", 2)),
    "ES": (("n", 20),),
    "IT": (("a", 1), ("n", 10), ("c", 12)),
    "CH": (("n", 5), ("c", 12)),
    "BE": (("n", 12),),
    "NO": (("n", 11),),
    "PL": (("n", 24),),
}
_IBAN_CLASSES = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}


def iban_check_digits(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    number = int("".join(str(int(char, 36)) for char in rearranged))
    return f"{98 - number % 97:02d}"


@st.composite
def ibans(draw: st.DrawFn) -> Secret:
    country = draw(st.sampled_from(sorted(IBAN_FORMATS)))
    bban = "".join(draw(fixed_length(_IBAN_CLASSES[kind], count)) for kind, count in IBAN_FORMATS[country])
    compact = country + iban_check_digits(country, bban) + bban
    if draw(st.booleans()):
        printed = " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    else:
        printed = compact
    return Secret("iban", printed, tuple({printed, compact}))


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def jwts(draw: st.DrawFn) -> Secret:
    algorithm = draw(st.sampled_from(["HS256", "RS256", "ES256"]))
    header = base64url(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    claims = {
        "sub": draw(st.from_regex(r"(usr|cust)_[0-9]{3,9}", fullmatch=True)),
        "exp": draw(st.integers(1_700_000_000, 2_100_000_000)),
    }
    if draw(st.booleans()):
        claims["scope"] = draw(st.sampled_from(["support:read", "orders:write", "admin"]))
    payload = base64url(json.dumps(claims).encode())
    key = draw(st.binary(min_size=8, max_size=16))
    signature = base64url(hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    token = f"{header}.{payload}.{signature}"
    return Secret("jwt", token, (token, payload, signature))


@st.composite
def vendor_tokens(draw: st.DrawFn) -> Secret:
    vendor = draw(st.sampled_from(["github", "github-fine-grained", "slack", "stripe", "stripe-webhook", "sentry-org", "sentry-user", "gitlab"]))
    if vendor == "github":
        token = draw(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"])) + draw(fixed_length(ALPHANUMERIC, 36))
    elif vendor == "github-fine-grained":
        token = "github_pat_" + draw(fixed_length(ALPHANUMERIC, 22)) + "_" + draw(fixed_length(ALPHANUMERIC, 59))
    elif vendor == "slack":
        prefix = draw(st.sampled_from(["xoxb-", "xoxp-", "xoxa-"]))
        numbers = [draw(fixed_length(string.digits, draw(st.integers(10, 13)))) for _ in range(2)]
        token = prefix + "-".join(numbers) + "-" + draw(fixed_length(ALPHANUMERIC, 24))
    elif vendor == "stripe":
        prefix = draw(st.sampled_from(["sk_live_", "sk_test_", "rk_live_", "rk_test_"]))
        token = prefix + draw(st.text(ALPHANUMERIC, min_size=24, max_size=99))
    elif vendor == "stripe-webhook":
        token = "whsec_" + draw(fixed_length(ALPHANUMERIC, 32))
    elif vendor == "sentry-org":
        claims = base64url(json.dumps({"iat": draw(st.integers(1_700_000_000, 1_800_000_000)), "org": "shop"}).encode())
        token = "sntrys_" + claims + "_" + draw(fixed_length(BASE64URL, 43))
    elif vendor == "sentry-user":
        token = "sntryu_" + draw(fixed_length(HEX, 64))
    else:
        token = "glpat-" + draw(fixed_length(BASE64URL, 20))
    return Secret("vendor-token", token, (token,))


@st.composite
def aws_access_key_ids(draw: st.DrawFn) -> Secret:
    key_id = draw(st.sampled_from(["AKIA", "ASIA"])) + draw(fixed_length(BASE32, 16))
    return Secret("aws-access-key", key_id, (key_id,))


# Characters of generated passwords, besides letters and digits.
PASSWORD_PUNCTUATION = "!@$%^*-_.+=~"


@st.composite
def secret_assignments(draw: st.DrawFn) -> Secret:
    key = draw(st.sampled_from(["password", "passwd", "pwd", "secret", "api_key", "apiKey", "access_token", "client_secret", "DB_PASSWORD"]))
    value = draw(fixed_length(ALPHANUMERIC, 4)) + draw(st.text(ALPHANUMERIC + PASSWORD_PUNCTUATION, min_size=6, max_size=24))
    form = draw(st.sampled_from(["{k}={v}", "{k}: {v}", "{k} = {v}", '{k}="{v}"', '"{k}": "{v}"', "--{k}={v}", "{k}='{v}'"]))
    return Secret("secret-assignment", form.format(k=key, v=value), (value,))


@st.composite
def private_keys(draw: st.DrawFn) -> Secret:
    label = draw(st.sampled_from(["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"]))
    body = base64.b64encode(draw(st.binary(min_size=48, max_size=150))).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    block = f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"
    return Secret("private-key", block, tuple(line for line in lines if len(line) >= 16))


@st.composite
def ipv4_addresses(draw: st.DrawFn) -> Secret:
    first = draw(st.integers(11, 223).filter(lambda octet: octet != 127))
    rest = draw(st.lists(st.integers(0, 255), min_size=3, max_size=3))
    address = ".".join(str(octet) for octet in [first, *rest])
    return Secret("ip-address", address, (address,))


@st.composite
def us_ssns(draw: st.DrawFn) -> Secret:
    area = draw(st.integers(1, 899).filter(lambda number: number != 666))
    group = draw(st.integers(1, 99))
    serial = draw(st.integers(1, 9999))
    ssn = f"{area:03d}-{group:02d}-{serial:04d}"
    return Secret("us-ssn", ssn, (ssn,))


SECRETS = st.one_of(
    emails(), card_numbers(), ibans(), jwts(), vendor_tokens(), aws_access_key_ids(),
    secret_assignments(), private_keys(), ipv4_addresses(), us_ssns(),
)

# Free text around a secret, as a customer or a log line would write it.
CONTEXTS = st.sampled_from(
    [
        "{}",
        "see {}",
        "Customer wrote: {} - please check",
        "({})",
        "ref {}.",
        '"{}"',
        "line one\n{}\nline three",
        "{}, thanks",
    ]
)


# -- requests, one builder per location ----------------------------------------------------------


@dataclass
class PlannedRequest:
    method: str
    path: str
    kwargs: dict[str, Any]
    statuses: tuple[int, ...]
    # Returns the exported text where the secret was put; it must show a scrub marker.
    landing: Callable[[ShopStack, TracedResponse], str]
    errors: int = 0
    # More byte forms of the secret that this request creates (a Basic credential).
    extra_needles: tuple[str, ...] = ()


def server_attribute(key: str) -> Callable[[ShopStack, TracedResponse], str]:
    def landing(stack: ShopStack, traced: TracedResponse) -> str:
        return str(attributes_of(only_span(stack.otlp, traced.trace_id, is_server_span))[key])

    return landing


def server_event_attribute(event_name: str, key: str) -> Callable[[ShopStack, TracedResponse], str]:
    def landing(stack: ShopStack, traced: TracedResponse) -> str:
        server = only_span(stack.otlp, traced.trace_id, is_server_span)
        (event,) = [event for event in server.events if event.name == event_name]
        return str(attributes_of(event)[key])

    return landing


def statement_landing(stack: ShopStack, traced: TracedResponse) -> str:
    span = only_span(stack.otlp, traced.trace_id, lambda span: "db.statement" in attributes_of(span))
    return attributes_of(span)["db.statement"]


def error_value_landing(exception_type: str) -> Callable[[ShopStack, TracedResponse], str]:
    def landing(stack: ShopStack, traced: TracedResponse) -> str:
        (error,) = sentry_items(stack.sentry, "event", traced.trace_id)
        values = [value["value"] for value in error["exception"]["values"] if value["type"] == exception_type]
        assert values, error["exception"]["values"]
        return values[-1]

    return landing


def url_landing(stack: ShopStack, traced: TracedResponse) -> str:
    return url_of(only_span(stack.otlp, traced.trace_id, is_http_client_span))


def query_parameter_landing(
    condition: Callable[[Any], bool], name: str
) -> Callable[[ShopStack, TracedResponse], str]:
    """Return a landing that reads query parameter ``name`` of the span that satisfies ``condition``."""

    def landing(stack: ShopStack, traced: TracedResponse) -> str:
        return str(query_of(only_span(stack.otlp, traced.trace_id, condition)).get(name))

    return landing


def ticket_body(**fields: str) -> dict[str, str]:
    return {"email": "customer@example.com", "subject": "Question about my order", "message": "", **fields}


def plan_request(location: str, text: str, stack: ShopStack, data: st.DataObject) -> PlannedRequest:
    """Build the request that puts ``text`` (the secret, maybe inside free text) at ``location``."""
    inventory = f"http://127.0.0.1:{stack.inventory.port}"
    if location == "attribute":
        return PlannedRequest(
            "POST", "/support/tickets", {"json": ticket_body(subject=text)}, (201,),
            server_attribute("support.ticket.subject"),
        )
    if location == "event":
        return PlannedRequest(
            "POST", "/support/tickets", {"json": ticket_body(message=text)}, (201,),
            server_event_attribute("support.ticket.received", "support.ticket.message"),
        )
    if location == "exception":
        # The prefix makes sure int() rejects it, also when the secret is all digits.
        return PlannedRequest(
            "POST", "/support/tickets", {"json": ticket_body(order_ref=f"order {text}")}, (500,),
            error_value_landing("ValueError"), errors=1,
        )
    if location == "sql":
        return PlannedRequest("POST", "/support/search", {"json": {"text": text}}, (200,), statement_landing)
    if location == "query":
        name = data.draw(st.sampled_from(["token", "api_key", "ref", "email", "q", "utm_content"]), label="parameter")
        if data.draw(st.booleans(), label="outgoing"):
            feed_url = f"{inventory}/inventory/1?{urlencode({name: text})}"
            return PlannedRequest(
                "POST", "/support/integrations/check", {"json": {"feed_url": feed_url}}, (200,),
                query_parameter_landing(is_http_client_span, name),
            )
        # Without its ?token= the route returns 422; either way the request is traced.
        return PlannedRequest(
            "GET", "/support/tickets/1", {"params": {name: text}}, (404, 422),
            query_parameter_landing(is_server_span, name),
        )
    if location == "userinfo":
        password = quote(text, safe="")
        if data.draw(st.booleans(), label="outgoing"):
            feed_url = f"http://feed:{password}@127.0.0.1:{stack.inventory.port}/inventory/1"
            basic = base64.b64encode(f"feed:{text}".encode()).decode()
            return PlannedRequest(
                "POST", "/support/integrations/check", {"json": {"feed_url": feed_url}}, (200,),
                url_landing, extra_needles=(basic,),
            )
        source = f"postgresql://shop:{password}@db.example.internal/shop"
        return PlannedRequest(
            "POST", "/support/import", {"json": {"source_url": source, "tickets": []}}, (500,),
            server_attribute("support.import.source"), errors=1,
        )
    if location == "header":
        one_line = text.replace("\n", " ")  # a header value cannot contain a line break
        name = data.draw(
            st.sampled_from(["Authorization", "X-Api-Key", "PRIVATE-TOKEN", "X-Shopify-Access-Token", "X-Customer-Note", "Referer"]),
            label="header",
        )
        value = {
            "Authorization": f"Bearer {one_line}",
            "Referer": f"https://shop.example/account?{urlencode({'ref': one_line})}",
        }.get(name, one_line)
        attribute = "http.request.header." + name.lower().replace("-", "_")
        return PlannedRequest(
            "GET", "/support/stock/1", {"headers": {name: value}}, (200,), server_attribute(attribute)
        )
    raise AssertionError(f"unknown location {location!r}")


LOCATIONS = ("attribute", "event", "exception", "sql", "query", "userinfo", "header")

# Needles of every secret sent, for the last search after the app has stopped.
SENT_NEEDLES: list[str] = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {
        "RAPTORFLOW_FASTAPI_MODE": "contrib",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": ".*",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": ".*",
    }
    with run_shop_stack(tmp_path_factory.mktemp("scrub-properties"), env) as shop_stack:
        yield shop_stack


@PROPERTY_SETTINGS
@given(secret=SECRETS, location=st.sampled_from(LOCATIONS), context=CONTEXTS, data=st.data())
def test_secret_never_exported(stack, secret, location, context, data):
    text = secret.text if location in ("query", "userinfo", "header") else context.format(secret.text)
    planned = plan_request(location, text, stack, data)
    needles = (*secret.needles, *planned.extra_needles)
    SENT_NEEDLES.extend(needles)

    traced = send_traced(stack.app, planned.method, planned.path, **planned.kwargs)
    assert traced.response.status_code in planned.statuses, traced.response.text
    wait_for_trace(stack.sentry, stack.otlp, traced, errors=planned.errors)

    leaks = stack.leaks(needles)
    assert not leaks, f"{secret.kind} at {location} reached a receiver:\n" + "\n".join(map(str, leaks))
    landed = planned.landing(stack, traced)
    assert any(marker in landed for marker in ("[Filtered:", "REDACTED", "LIKE ?")), landed


def test_no_secret_exported_after_shutdown(stack):
    """Stop the app (SIGTERM flushes what it still buffers) and search every byte once more."""
    assert SENT_NEEDLES, "the property test sent nothing"
    stack.app.stop()

    leaks = stack.leaks(SENT_NEEDLES)
    assert not leaks, "\n".join(map(str, leaks))
    assert stack.otlp.metric_names(), "no metrics arrived, so metric attributes were not searched"
