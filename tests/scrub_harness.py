"""Turn privacy-corpus cases into spans and Sentry events, run a scrubber on them, and read the result.

A span case (every location except "sentry_event") becomes one finished `ReadableSpan`, shaped like
what the instrumentations emit: a server, client, consumer or internal span with ordinary
attributes, the case's ``context`` attributes, and a resource. Special ``context`` keys:

- ``span.kind``: "server", "client", "consumer" or "internal", when the keys alone do not tell.
- ``span.name``: the span name. Without it, the name is derived from the span's shape.
- ``event.name``: the name of the event of an "event_attribute" case whose key does not start with
  ``exception.`` (default "log").
- ``exception.*``: attributes of the exception event, for "event_attribute" cases on that event.

The exception event carries ``exception.type``, ``exception.message``, ``exception.stacktrace`` and
``exception.escaped``. As in OpenTelemetry's ``record_exception``, the stacktrace ends with
``<type>: <message>``, so a message appears in both attributes.

A "sentry_event" case becomes the JSON-like dict that sentry-sdk 2.x hands to ``before_send``: an
error event with one exception, one stack frame with local variables, a request, ``extra`` and
breadcrumbs. Frame variables are stored as sentry-sdk's serializer stores them: strings and numbers
as their ``repr``, mappings and lists item by item. ``Leak.key`` / ``Keep.key`` is one of the
paths in SENTRY_PATHS, or starts with one of SENTRY_PATH_PREFIXES followed by a field name.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Union
from urllib.parse import quote, quote_plus

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from scrub_corpus import SPAN_ID_HEX, TRACE_ID_HEX, Keep, Leak, python_traceback

Case = Union[Leak, Keep]

TRACE_ID = int(TRACE_ID_HEX, 16)
SPAN_ID = int(SPAN_ID_HEX, 16)
PARENT_SPAN_ID = 0x1A2B3C4D5E6F7A8B
LINKED_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
LINKED_SPAN_ID = 0xB7AD6B7169203331
START_TIME_NS = 1_714_558_530_000_000_000
END_TIME_NS = START_TIME_NS + 48_000_000

SUMMARY_RULES_KEY = "raptorflow.scrub.rules"
SUMMARY_COUNT_KEY = "raptorflow.scrub.count"

SENTRY_PATHS = (
    "message",
    "logentry.message",
    "logentry.formatted",
    "exception.value",
    "request.url",
    "request.method",
    "request.query_string",
    "breadcrumb.message",
    "release",
)
# A path below request.data may name nested fields ("request.data.payment.card_number"). Below the
# other prefixes, the rest of the path is one field name, dots included ("extra.sys.argv").
SENTRY_PATH_PREFIXES = (
    "frame_vars.",
    "request.data.",
    "request.headers.",
    "request.cookies.",
    "request.env.",
    "extra.",
    "breadcrumb.data.",
)

_RESOURCE_ATTRIBUTES = {
    "service.name": "shop-api",
    "service.version": "2024.05.1",
    "deployment.environment.name": "production",
    "telemetry.sdk.name": "opentelemetry",
    "telemetry.sdk.language": "python",
    "telemetry.sdk.version": "1.45.2",
    "host.name": "shop-api-7c9d8f6b5-x2x4q",
    "process.pid": 2817,
    "process.runtime.name": "cpython",
    "process.runtime.version": "3.11.9",
}

# Ordinary attributes of each span shape. The case's context and key are added on top.
_SERVER_ATTRIBUTES = {
    "http.request.method": "POST",
    "http.route": "/api/checkout",
    "url.scheme": "https",
    "url.path": "/api/checkout",
    "server.address": "shop.example.com",
    "server.port": 443,
    "http.response.status_code": 500,
}
_DB_CLIENT_ATTRIBUTES = {
    "db.system": "postgresql",
    "db.namespace": "shop",
    "server.address": "db.internal.example.net",
    "server.port": 5432,
}
_HTTP_CLIENT_ATTRIBUTES = {
    "http.request.method": "GET",
    "server.address": "api.example.net",
    "server.port": 443,
    "http.response.status_code": 401,
}
_CONSUMER_ATTRIBUTES = {
    "messaging.system": "kafka",
    "messaging.destination.name": "orders",
    "messaging.operation.type": "process",
}
_INTERNAL_ATTRIBUTES = {"code.function": "place_order", "code.namespace": "shop.checkout"}

# Keys that only server spans carry.
_SERVER_KEYS = frozenset({
    "client.address", "http.client_ip", "net.peer.ip", "network.peer.address", "http.target", "http.route",
    "url.query", "url.path", "url.scheme", "user_agent.original", "session.id", "enduser.id", "user.id",
})

_SPECIAL_CONTEXT_KEYS = frozenset({"span.kind", "span.name", "event.name"})

_DEFAULT_EXCEPTION_TYPE = "shop.errors.CheckoutError"
_DEFAULT_EXCEPTION_MESSAGE = "order 8841 could not be charged"
_DEFAULT_FRAMES = (
    ("/srv/shop/checkout.py", 88, "place_order", "receipt = await gateway.charge(order, card)"),
    ("/srv/shop/payments/gateway.py", 142, "charge", "raise CheckoutError(str(exc)) from exc"),
)


# ---------------------------------------------------------------------------------------------
# Spans
# ---------------------------------------------------------------------------------------------


def _frozen(attributes: Mapping[str, object]) -> BoundedAttributes:
    """Attributes as the SDK stores them on a finished span, event or link (lists become tuples)."""
    return BoundedAttributes(maxlen=128, attributes=dict(attributes), immutable=True)


def _span_shape(case: Case, context: Mapping[str, object]) -> tuple[SpanKind, dict[str, object]]:
    """Pick the span kind and its ordinary attributes from the keys the span will carry."""
    keys = set(context)
    if case.location == "attribute":
        keys.add(case.key)
    kind_name = context.get("span.kind")
    is_db = any(key.startswith("db.") for key in keys)
    if kind_name == "server":
        return SpanKind.SERVER, dict(_SERVER_ATTRIBUTES)
    if kind_name == "client":
        return SpanKind.CLIENT, dict(_DB_CLIENT_ATTRIBUTES if is_db else _HTTP_CLIENT_ATTRIBUTES)
    if kind_name == "consumer":
        return SpanKind.CONSUMER, dict(_CONSUMER_ATTRIBUTES)
    if kind_name == "internal":
        return SpanKind.INTERNAL, dict(_INTERNAL_ATTRIBUTES)
    if kind_name is not None:
        raise ValueError(f"{case.id}: invalid span.kind {kind_name!r}, expected server, client, consumer or internal")
    if is_db:
        return SpanKind.CLIENT, dict(_DB_CLIENT_ATTRIBUTES)
    if keys & {"url.full", "http.url"}:
        return SpanKind.CLIENT, dict(_HTTP_CLIENT_ATTRIBUTES)
    if keys & _SERVER_KEYS or any(key.startswith(("http.request.header.", "http.response.header.")) for key in keys):
        return SpanKind.SERVER, dict(_SERVER_ATTRIBUTES)
    if any(key.startswith("messaging.") for key in keys):
        return SpanKind.CONSUMER, dict(_CONSUMER_ATTRIBUTES)
    return SpanKind.INTERNAL, dict(_INTERNAL_ATTRIBUTES)


def _default_span_name(kind: SpanKind, attributes: Mapping[str, object]) -> str:
    if kind is SpanKind.SERVER:
        return f"{attributes.get('http.request.method', 'GET')} {attributes.get('http.route', '/')}"
    if kind is SpanKind.CLIENT and ("db.system" in attributes or "db.system.name" in attributes):
        statement = attributes.get("db.statement", attributes.get("db.query.text"))
        words = re.findall(r"[A-Za-z]+", statement) if isinstance(statement, str) else []
        operation = words[0].upper() if words else "SELECT"
        system = attributes.get("db.system", attributes.get("db.system.name"))
        return operation if system == "redis" else f"{operation} {attributes.get('db.namespace', 'shop')}"
    if kind is SpanKind.CLIENT:
        return str(attributes.get("http.request.method", "GET"))
    if kind is SpanKind.CONSUMER:
        return f"{attributes.get('messaging.destination.name', 'orders')} process"
    return "place_order"


def _exception_event(case: Case, context: Mapping[str, object]) -> Event:
    exception_context = {key: value for key, value in context.items() if key.startswith("exception.")}
    attributes: dict[str, object] = {
        "exception.type": exception_context.get("exception.type", _DEFAULT_EXCEPTION_TYPE),
        "exception.message": exception_context.get("exception.message", _DEFAULT_EXCEPTION_MESSAGE),
        "exception.escaped": "False",
    }
    attributes.update(exception_context)
    attributes[case.key] = case.value
    if "exception.stacktrace" not in attributes:
        last_line = f"{attributes['exception.type']}: {attributes['exception.message']}"
        attributes["exception.stacktrace"] = python_traceback(last_line, *_DEFAULT_FRAMES)
    return Event("exception", _frozen(attributes), timestamp=END_TIME_NS - 1_000_000)


_SHARED_RESOURCE = Resource(_RESOURCE_ATTRIBUTES)


def build_span(case: Case) -> ReadableSpan:
    """Build the finished span that carries ``case.value`` at ``case.location``."""
    if case.location == "sentry_event":
        raise ValueError(f"{case.id}: a sentry_event case becomes an event, use build_sentry_event")
    context = dict(case.context)
    kind, attributes = _span_shape(case, context)
    is_exception_event = case.location == "event_attribute" and case.key.startswith("exception.")
    for key, value in context.items():
        if key in _SPECIAL_CONTEXT_KEYS or (is_exception_event and key.startswith("exception.")):
            continue
        attributes[key] = value
    if case.location == "attribute":
        attributes[case.key] = case.value

    events: list[Event] = []
    status = Status(StatusCode.UNSET)
    if is_exception_event:
        events.append(_exception_event(case, context))
        status = Status(StatusCode.ERROR)
    elif case.location == "event_attribute":
        event_name = str(context.get("event.name", "log"))
        events.append(Event(event_name, _frozen({case.key: case.value}), timestamp=START_TIME_NS + 5_000_000))

    links: list[Link] = []
    if case.location == "link_attribute":
        linked = SpanContext(LINKED_TRACE_ID, LINKED_SPAN_ID, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        links.append(Link(linked, _frozen({case.key: case.value})))

    # In a process every span of a provider shares one Resource object, so only a resource case
    # gets a resource of its own.
    resource = _SHARED_RESOURCE
    if case.location == "resource_attribute":
        resource = Resource({**_RESOURCE_ATTRIBUTES, case.key: case.value})

    if case.location == "span_name":
        name = str(case.value)
    else:
        name = str(context.get("span.name") or _default_span_name(kind, attributes))

    return ReadableSpan(
        name=name,
        context=SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
        parent=SpanContext(TRACE_ID, PARENT_SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
        resource=resource,
        attributes=_frozen(attributes),
        events=events,
        links=links,
        kind=kind,
        status=status,
        start_time=START_TIME_NS,
        end_time=END_TIME_NS,
        instrumentation_scope=InstrumentationScope("raptorflow.corpus", "0.1.0"),
    )


# ---------------------------------------------------------------------------------------------
# Sentry events
# ---------------------------------------------------------------------------------------------


def sentry_var(value: object) -> object:
    """Store a frame variable as sentry-sdk 2.x's serializer does (``repr`` of each leaf value)."""
    if isinstance(value, Mapping):
        return {str(key): sentry_var(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [sentry_var(item) for item in value]
    return repr(value)


def _base_sentry_event() -> dict[str, Any]:
    frame = {
        "filename": "shop/checkout.py",
        "abs_path": "/srv/shop/checkout.py",
        "function": "place_order",
        "module": "shop.checkout",
        "lineno": 88,
        "pre_context": [
            "    async def place_order(self, order, card):",
            "        gateway = self.gateways[order.currency]",
        ],
        "context_line": "        receipt = await gateway.charge(order, card)",
        "post_context": ["        await self.repo.mark_paid(order.id, receipt.id)", "        return receipt"],
        "in_app": True,
        "vars": {
            "self": "<shop.checkout.CheckoutService object at 0x7f3a2c1d9e50>",
            "order": "<Order id=8841 status='pending'>",
            "retries": "2",
        },
    }
    return {
        "event_id": "5f3c9a06c21b4e8d9f0a1b2c3d4e5f60",
        "timestamp": "2024-05-01T10:15:30.482913Z",
        "platform": "python",
        "level": "error",
        "logger": "shop.checkout",
        "server_name": "shop-api-7c9d8f6b5-x2x4q",
        "release": "shop-api@2024.05.1",
        "environment": "production",
        "transaction": "/api/checkout",
        "transaction_info": {"source": "route"},
        "logentry": {
            "message": "checkout failed for order %s",
            "formatted": "checkout failed for order 8841",
            "params": ["8841"],
        },
        "exception": {
            "values": [
                {
                    "type": "PaymentDeclined",
                    "value": "card declined by issuer",
                    "module": "shop.payments",
                    "mechanism": {"type": "logging", "handled": True},
                    "stacktrace": {"frames": [frame]},
                }
            ]
        },
        "request": {
            "url": "https://shop.example.com/api/checkout",
            "method": "POST",
            "query_string": "step=payment",
            "headers": {
                "Host": "shop.example.com",
                "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "Content-Length": "187",
            },
            "cookies": {"theme": "dark"},
            "data": {"order_id": 8841, "currency": "EUR", "items": [{"sku": "SKU-2231", "quantity": 2}]},
            "env": {"SERVER_NAME": "shop-api", "SERVER_PORT": "8000"},
        },
        "extra": {"sys.argv": ["/usr/local/bin/uvicorn", "shop.app:app"]},
        "breadcrumbs": {
            "values": [
                {
                    "type": "http",
                    "category": "httplib",
                    "level": "info",
                    "timestamp": "2024-05-01T10:15:30.401000Z",
                    "data": {"url": "https://payments.example.net/v1/charges", "method": "POST", "status_code": 402},
                },
            ]
        },
        "contexts": {
            "trace": {
                "trace_id": TRACE_ID_HEX,
                "span_id": SPAN_ID_HEX,
                "parent_span_id": f"{PARENT_SPAN_ID:016x}",
                "op": "http.server",
                "status": "internal_error",
            },
            "runtime": {"name": "CPython", "version": "3.11.9", "build": "3.11.9 (main, Apr  2 2024, 08:25:04) [GCC 12.2.0]"},
        },
        "modules": {"fastapi": "0.115.0", "sqlalchemy": "2.0.30", "sentry-sdk": "2.76.0"},
        "sdk": {
            "name": "sentry.python.fastapi",
            "version": "2.76.0",
            "integrations": ["fastapi", "logging", "sqlalchemy", "starlette"],
            "packages": [{"name": "pypi:sentry-sdk", "version": "2.76.0"}],
        },
    }


def _sentry_slot(event: dict[str, Any], path: str, create: bool) -> tuple[dict[str, Any], str]:
    """Return the container and the field name of ``path`` in ``event``.

    With ``create``, missing containers below ``request.data`` and a breadcrumb's ``data`` are added.
    """
    exception = event["exception"]["values"][-1]
    request = event["request"]
    breadcrumbs = event["breadcrumbs"]["values"]

    if path in ("message", "release"):
        return event, path
    if path in ("logentry.message", "logentry.formatted"):
        return event["logentry"], path.split(".")[1]
    if path == "exception.value":
        return exception, "value"
    if path in ("request.url", "request.method", "request.query_string"):
        return request, path.split(".")[1]

    if path == "breadcrumb.message":
        return breadcrumbs[-1], "message"
    if path.startswith("breadcrumb.data."):
        data = breadcrumbs[-1].setdefault("data", {}) if create else breadcrumbs[-1]["data"]
        return data, path.removeprefix("breadcrumb.data.")
    if path.startswith("frame_vars."):
        return exception["stacktrace"]["frames"][-1]["vars"], path.removeprefix("frame_vars.")

    if path.startswith("request.data."):
        container = request["data"]
        *parents, field = path.removeprefix("request.data.").split(".")
        for parent in parents:
            container = container.setdefault(parent, {}) if create else container[parent]
        return container, field

    for prefix, section in (
        ("request.headers.", request["headers"]),
        ("request.cookies.", request["cookies"]),
        ("request.env.", request["env"]),
        ("extra.", event["extra"]),
    ):
        if path.startswith(prefix):
            return section, path.removeprefix(prefix)
    raise ValueError(
        f"Sentry event path {path!r} is not supported. Use one of SENTRY_PATHS or a path under SENTRY_PATH_PREFIXES."
    )


def build_sentry_event(case: Case) -> dict[str, Any]:
    """Build the sentry-sdk error event that carries ``case.value`` at the path ``case.key``."""
    if case.location != "sentry_event":
        raise ValueError(f"{case.id}: only sentry_event cases become Sentry events, use build_span")
    event = _base_sentry_event()
    if "exception.type" in case.context:
        event["exception"]["values"][-1]["type"] = case.context["exception.type"]
    tags = {key: value for key, value in case.context.items() if key != "exception.type"}
    if tags:
        event["tags"] = tags
    if case.key == "breadcrumb.message":
        event["breadcrumbs"]["values"].append(
            {"type": "log", "category": "shop.checkout", "level": "warning", "timestamp": "2024-05-01T10:15:30.455000Z"}
        )
    elif case.key.startswith("breadcrumb.data."):
        event["breadcrumbs"]["values"].append(
            {
                "type": "http",
                "category": "httplib",
                "level": "info",
                "timestamp": "2024-05-01T10:15:30.455000Z",
                "data": {"method": "GET", "status_code": 200},
            }
        )
    container, field = _sentry_slot(event, case.key, create=True)
    value = case.value
    if case.key.startswith("frame_vars."):
        value = sentry_var(value)
    container[field] = copy.deepcopy(value)
    return event


# ---------------------------------------------------------------------------------------------
# Running a scrubber and reading the result
# ---------------------------------------------------------------------------------------------


def build_input(case: Case) -> ReadableSpan | dict[str, Any]:
    """Build the span or the Sentry event of ``case``."""
    return build_sentry_event(case) if case.location == "sentry_event" else build_span(case)


def run_ours(scrubber: Any, case: Case) -> ReadableSpan | dict[str, Any] | None:
    """Scrub the input of ``case`` with raptorflow's scrubber. Returns None when the scrubber dropped the span."""
    if case.location == "sentry_event":
        return scrubber.scrub_sentry_event(build_sentry_event(case))
    return scrubber.scrub_span(build_span(case))


def _event_of(case: Case, span: ReadableSpan) -> Event | None:
    name = "exception" if case.key.startswith("exception.") else str(case.context.get("event.name", "log"))
    for event in span.events:
        if event.name == name:
            return event
    return None


def extract(case: Case, output: ReadableSpan | dict[str, Any] | None) -> object:
    """Return the value at the case's location in a (scrubbed) span or event, or None when it is gone."""
    if output is None:
        return None
    if case.location == "sentry_event":
        try:
            container, field = _sentry_slot(output, case.key, create=False)
        except (KeyError, IndexError, TypeError):
            return None
        return container.get(field) if isinstance(container, Mapping) else None
    span = output
    if case.location == "span_name":
        return span.name
    if case.location == "attribute":
        return (span.attributes or {}).get(case.key)
    if case.location == "event_attribute":
        event = _event_of(case, span)
        return None if event is None else (event.attributes or {}).get(case.key)
    if case.location == "link_attribute":
        return (span.links[0].attributes or {}).get(case.key) if span.links else None
    if case.location == "resource_attribute":
        return span.resource.attributes.get(case.key)
    raise ValueError(f"{case.id}: unknown location {case.location!r}")


def _span_as_dict(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind.name,
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": dict(span.attributes or {}),
        "events": [{"name": event.name, "attributes": dict(event.attributes or {})} for event in span.events],
        "links": [{"attributes": dict(link.attributes or {})} for link in span.links],
        "resource": dict(span.resource.attributes),
    }


def serialize(obj: ReadableSpan | Mapping[str, Any] | None) -> str:
    """Serialize every exported field of a span (name, attributes, events, links, resource) or an event as JSON."""
    if obj is None:
        return ""
    data = _span_as_dict(obj) if isinstance(obj, ReadableSpan) else obj
    return json.dumps(data, sort_keys=True, default=repr)


def encoded_forms(secret: str) -> set[str]:
    """Return the forms of a secret in serialized output: raw, percent-encoded, JSON-escaped, or both."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret, safe="/:@")}
    forms |= {json.dumps(form)[1:-1] for form in list(forms)}
    return forms


def leaked(case: Case, text: str) -> list[str]:
    """Return the secrets of ``case`` that appear in ``text`` in any of their encoded forms."""
    secrets: Sequence[str] = getattr(case, "secrets", ())
    return [secret for secret in secrets if any(form in text for form in encoded_forms(secret))]


def as_text(value: object) -> str:
    """Flatten an extracted value (string, sequence, mapping, number) to text for substring checks."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "\n".join(as_text(item) for item in value)
    return str(value)


def scrub_rules(span: ReadableSpan) -> list[str] | None:
    """Return the rule names of the summary attribute, or None when the span has no summary."""
    rules = (span.attributes or {}).get(SUMMARY_RULES_KEY)
    if rules is None:
        return None
    if isinstance(rules, str):
        return [rule.strip() for rule in rules.split(",") if rule.strip()]
    return [str(rule) for rule in rules]

