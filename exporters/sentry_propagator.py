"""Propagate traces to and from Sentry SDKs through the `sentry-trace` and `baggage` headers.

`SentryPropagator` is meant to run inside a `CompositePropagator` AFTER the W3C `tracecontext`
and `baggage` propagators (entry point `opentelemetry_propagator` named `sentry`, so
`OTEL_PROPAGATORS=tracecontext,baggage,sentry`). The order matters in both directions:

* extract: a span context already extracted from `traceparent` is kept, so `sentry-trace` is only
  used when the request carried no valid `traceparent`.
* inject: the `baggage` header written by the W3C propagator is read back from the carrier, and
  Sentry's dynamic sampling context (DSC, the `sentry-*` baggage members) is merged into it. A
  W3C baggage propagator running after this one would overwrite the merged header.

The incoming DSC is not stored separately. The W3C baggage propagator already copies every
member, `sentry-*` ones included, into OTel baggage, and `sentry_baggage_from_context` reads them
from there. Without that propagator in the chain the incoming DSC is lost, and this service acts
as the head of the Sentry trace.

Malformed headers are ignored. Unexpected exceptions go through the project's internal-error
guard, which logs them (rate-limited) instead of raising into the host application.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators import textmap
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    format_span_id,
    format_trace_id,
)

from raptorflow_otel.processors.guard import guarded

__all__ = ["SentryPropagator", "sentry_baggage_from_context"]

_logger = logging.getLogger(__name__)

SENTRY_TRACE_HEADER = "sentry-trace"
BAGGAGE_HEADER = "baggage"
SENTRY_BAGGAGE_PREFIX = "sentry-"

# The limits that opentelemetry-api 1.45's `W3CBaggagePropagator` enforces. Staying within them
# keeps a downstream OTel service from discarding a header because of the members added here.
_MAX_BAGGAGE_BYTES = 8192
_MAX_BAGGAGE_MEMBERS = 180
_MAX_MEMBER_BYTES = 4096

# `{trace_id}-{span_id}[-{sampled}]` in lowercase hex, as sentry-sdk 2.x writes and parses it.
# Unlike sentry-sdk's parser, this one requires both ids because without them there is no parent.
_SENTRY_TRACE_RE = re.compile(r"([0-9a-f]{32})-([0-9a-f]{16})(?:-([01]))?")

# Baggage keys are HTTP tokens.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16

_logged_kinds: set[str] = set()


def _log_once(kind: str, level: int, message: str, *args: object) -> None:
    """Log `message` for the first problem of `kind` only, because headers arrive on every request."""
    if kind in _logged_kinds:
        return
    _logged_kinds.add(kind)
    _logger.log(level, message, *args)


def sentry_baggage_from_context(context: Context | None = None) -> dict[str, str]:
    """Return the Sentry DSC members in OTel baggage, with the `sentry-` prefix removed.

    For an incoming `baggage: sentry-trace_id=abc,sentry-replay_id=r1,other=x` the result is
    `{"trace_id": "abc", "replay_id": "r1"}`, with decoded values. `context` defaults to the
    current context. On an internal error the guard logs it and the result is `{}`.
    """
    members = guarded(_read_sentry_baggage, context, what="sentry_baggage_from_context")
    return members if members is not None else {}


def _read_sentry_baggage(context: Context | None) -> dict[str, str]:
    entries = otel_baggage.get_all(context=context)
    return {
        key[len(SENTRY_BAGGAGE_PREFIX) :]: str(value)
        for key, value in entries.items()
        if isinstance(key, str)
        and key.startswith(SENTRY_BAGGAGE_PREFIX)
        and len(key) > len(SENTRY_BAGGAGE_PREFIX)
    }


def _decode(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    return None


def _first_header_value(values: object) -> str | None:
    """Return the first non-empty string of a getter result (None, a string or a list)."""
    if values is None:
        return None
    single = _decode(values)
    if single is not None:
        return single
    if not isinstance(values, Iterable):
        return None
    for value in values:
        text = _decode(value)
        if text is not None and text.strip():
            return text
    return None


def _parse_sentry_trace(header: str) -> tuple[int, int, bool | None] | None:
    """Parse `{trace_id}-{span_id}[-{0|1}]` into (trace_id, span_id, sampled or None).

    Return None for anything malformed, including all-zero ids. Repeated headers folded into one
    comma-separated value are accepted, and the first non-empty one is used.
    """
    if "," in header:
        header = next((part for part in header.split(",") if part.strip()), "")
    match = _SENTRY_TRACE_RE.fullmatch(header.strip())
    if match is None:
        return None
    trace_hex, span_hex, sampled_flag = match.groups()
    if trace_hex == _INVALID_TRACE_ID or span_hex == _INVALID_SPAN_ID:
        return None
    sampled = None if sampled_flag is None else sampled_flag == "1"
    return int(trace_hex, 16), int(span_hex, 16), sampled


def _read_carrier_header(carrier: object, name: str) -> str | None:
    """Read a header that an earlier propagator wrote into the carrier.

    Only carriers with `.get` (dict, `httpx.Headers`, other mappings) can be read. For anything
    else the result is None. Multiple values are joined with commas, which is how HTTP combines
    repeated `baggage` headers.
    """
    get = getattr(carrier, "get", None)
    if not callable(get):
        return None
    try:
        value = get(name)
    except Exception:  # noqa: BLE001 - a foreign carrier type, not a bug here
        _log_once(
            "carrier-get",
            logging.WARNING,
            "reading %r from a %s carrier failed, so the Sentry baggage is set without merging",
            name,
            type(carrier).__name__,
        )
        return None
    single = _decode(value)
    if single is not None or not isinstance(value, Iterable):
        return single
    parts = [_decode(part) for part in value]
    return ",".join(part for part in parts if part is not None)


def _member_key(member: str) -> str:
    """Return the decoded key of one `key=value;properties` baggage list member."""
    return unquote(member.split("=", 1)[0].strip())


def _format_sample_rate(sample_rate: object) -> str | None:
    """Format a sample rate as the decimal string in [0, 1] that the DSC expects, or return None."""
    if sample_rate is None or isinstance(sample_rate, bool):
        return None
    try:
        rate = float(sample_rate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if math.isnan(rate) or not 0.0 <= rate <= 1.0:
        return None
    return repr(rate)


class SentryPropagator(textmap.TextMapPropagator):
    """Propagator for Sentry's `sentry-trace` header and the Sentry DSC in `baggage`.

    The constructor arguments are used only when this service is the head of the Sentry trace,
    that is when the context contains no `sentry-*` baggage. They become `sentry-public_key`,
    `sentry-environment`, `sentry-release` and `sentry-sample_rate` in the outgoing DSC, so a
    downstream Sentry SDK and Sentry's dynamic sampling see how the trace started. Empty values
    are ignored, and so is a `sample_rate` that is not a number in [0, 1].

    Sampling: `sentry-trace` ending in `-1` gives SAMPLED trace flags, and `-0` or no flag gives
    DEFAULT (not sampled) flags. A missing flag means the upstream Sentry SDK deferred the
    decision, which an OTel span context cannot express. The SDK's default `ParentBased` sampler
    therefore drops such requests unless `remote_parent_not_sampled` is configured otherwise.
    """

    def __init__(
        self,
        public_key: str | None = None,
        environment: str | None = None,
        release: str | None = None,
        sample_rate: float | str | None = None,
    ) -> None:
        head: dict[str, str] = {}
        configured = {"public_key": public_key, "environment": environment, "release": release}
        for name, value in configured.items():
            if isinstance(value, str) and value:
                head[name] = value
        rate = _format_sample_rate(sample_rate)
        if rate is not None:
            head["sample_rate"] = rate
        elif sample_rate is not None:
            _log_once(
                "invalid-sample-rate",
                logging.WARNING,
                "invalid Sentry sample_rate %r: expected a number from 0 to 1, so it is not propagated",
                sample_rate,
            )
        self._head_dsc = head

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        """Set the remote parent from `sentry-trace` in `context`, unless it already has a valid span.

        As in the W3C trace-context propagator, a missing `context` means a new empty Context
        rather than the current one, so an active local span never hides the incoming header.
        """
        if context is None:
            context = Context()
        extracted = guarded(self._extract, carrier, context, getter, what="SentryPropagator.extract")
        return context if extracted is None else extracted

    def _extract(self, carrier: textmap.CarrierT, context: Context, getter: textmap.Getter) -> Context:
        if trace.get_current_span(context).get_span_context().is_valid:
            # A valid `traceparent` was extracted earlier in the chain, and W3C takes precedence.
            return context
        header = _first_header_value(getter.get(carrier, SENTRY_TRACE_HEADER))
        if not header:
            return context
        parsed = _parse_sentry_trace(header)
        if parsed is None:
            _log_once("invalid-sentry-trace", logging.DEBUG, "ignoring invalid sentry-trace %r", header[:200])
            return context
        trace_id, span_id, sampled = parsed
        span_context = SpanContext(
            trace_id=trace_id,
            span_id=span_id,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        )
        return trace.set_span_in_context(NonRecordingSpan(span_context), context)

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        """Write `sentry-trace` for the span in `context` and merge the Sentry DSC into `baggage`.

        Nothing is written when the context has no valid span. `context` defaults to the current one.
        """
        guarded(self._inject, carrier, context, setter, what="SentryPropagator.inject")

    def _inject(self, carrier: textmap.CarrierT, context: Context | None, setter: textmap.Setter) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        trace_hex = format_trace_id(span_context.trace_id)
        sampled = span_context.trace_flags.sampled
        sentry_trace = f"{trace_hex}-{format_span_id(span_context.span_id)}-{'1' if sampled else '0'}"
        setter.set(carrier, SENTRY_TRACE_HEADER, sentry_trace)

        existing = _read_carrier_header(carrier, BAGGAGE_HEADER)
        merged = self._merge_baggage(existing, context, trace_hex, sampled)
        if merged is not None:
            setter.set(carrier, BAGGAGE_HEADER, merged)

    def _dsc_members(self, context: Context | None, trace_hex: str, sampled: bool) -> dict[str, str]:
        """Build the DSC to send, without prefix: the incoming one if any, else this service's own."""
        incoming = sentry_baggage_from_context(context)
        if incoming:
            # An upstream service started the Sentry trace. Its DSC is authoritative, and only a
            # missing trace id is filled in.
            return {"trace_id": trace_hex, **incoming}
        return {"trace_id": trace_hex, **self._head_dsc, "sampled": "true" if sampled else "false"}

    def _merge_baggage(
        self, existing_value: str | None, context: Context | None, trace_hex: str, sampled: bool
    ) -> str | None:
        """Merge the DSC into an existing `baggage` value, returning None when nothing changes.

        Existing members are kept verbatim and first. Sentry members whose key is already present
        are not repeated, and those that would exceed the W3C limits are dropped.
        """
        existing = [member.strip() for member in (existing_value or "").split(",") if member.strip()]
        present = {_member_key(member) for member in existing}
        size = len(",".join(existing).encode("utf-8"))
        count = len(existing)

        added: list[str] = []
        dropped = False
        for name, value in self._dsc_members(context, trace_hex, sampled).items():
            key = SENTRY_BAGGAGE_PREFIX + name
            if key in present or not _TOKEN_RE.fullmatch(key):
                continue
            member = f"{key}={quote(value, safe='')}"
            added_size = len(member) + (1 if count else 0)
            if (
                len(member) > _MAX_MEMBER_BYTES
                or count + 1 > _MAX_BAGGAGE_MEMBERS
                or size + added_size > _MAX_BAGGAGE_BYTES
            ):
                dropped = True
                continue
            added.append(member)
            present.add(key)
            size += added_size
            count += 1

        if dropped:
            _log_once(
                "baggage-limit",
                logging.INFO,
                "dropped Sentry baggage members that would exceed the W3C baggage limits "
                "(8192 bytes, 180 members, 4096 bytes per member)",
            )
        if not added:
            return None
        return ",".join(existing + added)

    @property
    def fields(self) -> set[str]:
        """Header names that `inject` may write."""
        return {SENTRY_TRACE_HEADER, BAGGAGE_HEADER}
