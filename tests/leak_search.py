"""Search everything the loopback receivers got for a secret, in the forms telemetry may carry it.

A secret can reach an exporter raw, percent-encoded (a URL, a query string), JSON-escaped (a Sentry
envelope) or quoted by ``repr`` (an exception message such as ``invalid literal for int()``).
`secret_forms` lists those forms and `find_leaks` looks for each of them in the bytes of every
request that a receiver recorded: path, headers and body, after the receiver has undone gzip or
deflate. A hit is described by where it sits (an OTLP span attribute, a JSON path inside a Sentry
envelope item), so that a failure message names the leaking field.

Also here: `run_shop_stack`, which runs the shop with both receivers and a fake inventory service,
requests that carry their own ``traceparent``, and waiting until the telemetry of that one trace
has arrived at both receivers.
"""

from __future__ import annotations

import json
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from sentry_sdk.envelope import Envelope

from app_process import AppProcess, run_shop
from receivers import OTLPReceiver, Receiver, SentryReceiver, wait_for

# Content encodings after which a recorded body is plain bytes (the receivers undo gzip and deflate).
_SEARCHABLE_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})
_CONTEXT_BYTES = 60


def secret_forms(secret: str) -> set[bytes]:
    """Return the byte forms in which ``secret`` may appear in exported telemetry."""
    texts = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        str(httpx.QueryParams({"k": secret}))[2:],
        repr(secret)[1:-1],
    }
    for text in list(texts):
        texts.add(json.dumps(text)[1:-1])
        texts.add(json.dumps(text, ensure_ascii=False)[1:-1])
    return {text.encode("utf-8") for text in texts if text}


@dataclass(frozen=True)
class Leak:
    needle: str
    form: bytes
    receiver: str
    path: str
    where: str

    def __str__(self) -> str:
        return f"{self.needle!r} as {self.form!r} in {self.receiver} {self.path}: {self.where}"


def find_leaks(needles: Iterable[str], sentry: SentryReceiver, otlp: OTLPReceiver) -> list[Leak]:
    """Return every place where a form of one of ``needles`` occurs in what the receivers got."""
    forms = [(needle, form) for needle in needles for form in secret_forms(needle)]
    leaks: list[Leak] = []
    for name, receiver in (("sentry", sentry), ("otlp", otlp)):
        for request in receiver.snapshot():
            encoding = request.headers.get("content-encoding", "").lower()
            assert encoding in _SEARCHABLE_ENCODINGS, (
                f"{name} got a body with Content-Encoding {encoding!r}, which the receiver does not "
                f"decode, so it cannot be searched for secrets"
            )
            raw = "\n".join([request.path, *(f"{k}: {v}" for k, v in request.headers.items())]).encode()
            for needle, form in forms:
                if form in raw:
                    leaks.append(Leak(needle, form, name, request.path, "request line or headers"))
                if form in request.body:
                    where = _describe(name, request.path, request.body, form)
                    leaks.append(Leak(needle, form, name, request.path, where))
    return leaks


def _describe(receiver: str, path: str, body: bytes, form: bytes) -> str:
    """Name the fields that contain ``form``, or show the bytes around it."""
    try:
        if receiver == "otlp" and path.startswith("/v1/traces"):
            places = list(_otlp_span_places(ExportTraceServiceRequest.FromString(body), form))
        elif receiver == "sentry":
            places = list(_envelope_places(Envelope.deserialize(body), form))
        else:
            places = []
    except Exception as error:  # noqa: BLE001 - the description is only for the failure message
        places = [f"(decoding the body to name the field failed: {error!r})"]
    if places:
        return "; ".join(places)
    index = body.find(form)
    return repr(body[max(0, index - _CONTEXT_BYTES) : index + len(form) + _CONTEXT_BYTES])


def _otlp_span_places(message: ExportTraceServiceRequest, form: bytes) -> Iterator[str]:
    for resource_spans in message.resource_spans:
        for key, value in _attribute_items(resource_spans.resource.attributes):
            if form in value:
                yield f"resource attribute {key}={value!r}"
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                label = f"span {span.name!r} ({scope_spans.scope.name})"
                if form in span.name.encode():
                    yield f"{label} name"
                for key, value in _attribute_items(span.attributes):
                    if form in value:
                        yield f"{label} attribute {key}={value!r}"
                for event in span.events:
                    for key, value in _attribute_items(event.attributes):
                        if form in value:
                            yield f"{label} event {event.name!r} attribute {key}={value!r}"
                if form in span.status.message.encode():
                    yield f"{label} status message {span.status.message!r}"


def _attribute_items(attributes: Any) -> Iterator[tuple[str, bytes]]:
    for attribute in attributes:
        yield attribute.key, attribute.value.SerializeToString()


def _envelope_places(envelope: Envelope, form: bytes) -> Iterator[str]:
    for item in envelope.items:
        payload = item.payload.get_bytes()
        if form not in payload:
            continue
        try:
            document = json.loads(payload)
        except ValueError:
            yield f"{item.type} item (not JSON)"
            continue
        text = form.decode("utf-8", "replace")
        found = False
        for json_path, value in _json_strings(document, ""):
            if text in value or text in json.dumps(value)[1:-1]:
                found = True
                yield f"{item.type} item at {json_path} = {value[:300]!r}"
        if not found:
            yield f"{item.type} item (bytes only)"


def _json_strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _json_strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _json_strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


# -- the app under test ---------------------------------------------------------------------------

# What the fake inventory service returns for every request.
INVENTORY_BODY = json.dumps({"product_id": 1, "in_stock": 5}).encode()


@dataclass
class ShopStack:
    """The shop under ``opentelemetry-instrument`` with the receivers it exports to and calls."""

    app: AppProcess
    sentry: SentryReceiver
    otlp: OTLPReceiver
    inventory: Receiver

    def leaks(self, needles: Iterable[str]) -> list[Leak]:
        return find_leaks(needles, self.sentry, self.otlp)

    def exported(self, text: str) -> bool:
        """Tell whether any form of ``text`` reached a receiver."""
        return bool(find_leaks([text], self.sentry, self.otlp))


@contextmanager
def run_shop_stack(workdir: Path, env: Mapping[str, str]) -> Iterator[ShopStack]:
    """Run the shop exporting to a Sentry and an OTLP receiver, with a fake inventory service.

    ``env`` adds to (or overrides) the base settings: both destinations, a 100 ms span batch delay
    and a metric export every second, so that telemetry arrives while a test waits for it.
    """
    with SentryReceiver() as sentry, OTLPReceiver() as otlp, Receiver(INVENTORY_BODY) as inventory:
        full_env = {
            "SENTRY_DSN": sentry.dsn,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_SERVICE_NAME": "shop",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "SHOP_INVENTORY_URL": f"http://127.0.0.1:{inventory.port}",
            **env,
        }
        with run_shop(full_env, workdir) as app:
            yield ShopStack(app, sentry, otlp, inventory)


# -- one request, one trace ----------------------------------------------------------------------


@dataclass
class TracedResponse:
    trace_id: str
    response: httpx.Response


def send_traced(app: AppProcess, method: str, path: str, **kwargs: Any) -> TracedResponse:
    """Send one request whose ``traceparent`` header starts a fresh, sampled trace."""
    trace_id = secrets.token_hex(16)
    headers = {**kwargs.pop("headers", {}), "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    response = httpx.request(method, app.base_url + path, headers=headers, timeout=30, **kwargs)
    return TracedResponse(trace_id, response)


def otlp_spans(otlp: OTLPReceiver, trace_id: str) -> list[Any]:
    trace_id_bytes = bytes.fromhex(trace_id)
    return [span for span in otlp.spans() if span.trace_id == trace_id_bytes]


def only_span(otlp: OTLPReceiver, trace_id: str, condition: Callable[[Any], bool]) -> Any:
    """The one OTLP span of the trace that satisfies ``condition``; AssertionError if not exactly one."""
    spans = otlp_spans(otlp, trace_id)
    matches = [span for span in spans if condition(span)]
    assert len(matches) == 1, [span.name for span in spans]
    return matches[0]


def is_server_span(span: Any) -> bool:
    return span.kind == span.SPAN_KIND_SERVER


def is_http_client_span(span: Any) -> bool:
    """Tell an httpx span from other client spans: only it has a URL (SQL and Redis spans have none)."""
    attributes = attributes_of(span)
    return span.kind == span.SPAN_KIND_CLIENT and ("url.full" in attributes or "http.url" in attributes)


def url_of(span: Any) -> str:
    """The full URL of a span: ``url.full`` (new semantic conventions) or ``http.url`` (old)."""
    attributes = attributes_of(span)
    return attributes.get("url.full") or attributes["http.url"]


def query_of(span: Any) -> dict[str, list[str]]:
    """The parsed query string of a server or client span, from ``url.query`` or the full URL."""
    attributes = attributes_of(span)
    query = attributes["url.query"] if "url.query" in attributes else urlsplit(url_of(span)).query
    return parse_qs(query, keep_blank_values=True)


def sentry_items(sentry: SentryReceiver, item_type: str, trace_id: str) -> list[dict[str, Any]]:
    return [
        item
        for item in sentry.items(item_type)
        if item.get("contexts", {}).get("trace", {}).get("trace_id") == trace_id
    ]


def wait_for_trace(
    sentry: SentryReceiver, otlp: OTLPReceiver, traced: TracedResponse, *, errors: int = 0, timeout: float = 15.0
) -> None:
    """Wait until both receivers have the request's server span, and Sentry ``errors`` error events.

    The server span ends after its children, and the batch processor exports spans in the order
    they end, so its arrival means the whole trace has arrived.
    """
    trace_id = traced.trace_id
    wait_for(
        lambda: any(span.kind == span.SPAN_KIND_SERVER for span in otlp_spans(otlp, trace_id)),
        timeout=timeout,
    )
    wait_for(lambda: sentry_items(sentry, "transaction", trace_id), timeout=timeout)
    if errors:
        wait_for(lambda: len(sentry_items(sentry, "event", trace_id)) >= errors, timeout=timeout)


def attributes_of(span: Any) -> dict[str, Any]:
    """An OTLP span's (or event's) attributes as a dict of Python values."""
    return {attribute.key: _any_value(attribute.value) for attribute in span.attributes}


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_any_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return {item.key: _any_value(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def scrub_rules(span: Any) -> tuple[str, ...]:
    return tuple(attributes_of(span).get("raptorflow.scrub.rules", ()))
