"""Propagate traces to and from Sentry SDKs through the `sentry-trace` and `baggage` headers.

`SentryPropagator` is meant to run inside a `CompositePropagator` AFTER the W3C `tracecontext`
and `baggage` propagators (entry point `opentelemetry_propagator` named `sentry`, so
`OTEL_PROPAGATORS=tracecontext,baggage,sentry`). The order matters in both directions:

* extract: a span context already extracted from `traceparent` is kept; `sentry-trace` is only
  used when the request carried no (valid) `traceparent`.
* inject: the `baggage` header written by the W3C propagator is read back from the carrier and
  Sentry's dynamic sampling context (DSC, the `sentry-*` baggage members) is merged into it. If
  the W3C baggage propagator ran after this one it would overwrite the merged header.

Sentry's DSC arriving in the incoming `baggage` header is not stored separately: the W3C baggage
propagator already copies every member, `sentry-*` ones included, into OTel baggage, and
`sentry_baggage_from_context` reads them from there. Without that propagator in the chain the
incoming DSC is therefore not seen, and this service acts as the head of the Sentry trace.

Nothing here raises into the host application: malformed headers are ignored and internal
failures are logged once per kind.
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

__all__ = ["SentryPropagator", "sentry_baggage_from_context"]

_logger = logging.getLogger(__name__)

SENTRY_TRACE_HEADER = "sentry-trace"
BAGGAGE_HEADER = "baggage"
SENTRY_BAGGAGE_PREFIX = "sentry-"

# W3C Baggage limits (https://www.w3.org/TR/baggage/#limits); the per-member limit is the one
# the OTel W3C propagator applies, so members we add are never dropped by it downstream.
_MAX_BAGGAGE_BYTES = 8192
_MAX_BAGGAGE_MEMBERS = 180
_MAX_MEMBER_BYTES = 4096

# `{trace_id}-{span_id}[-{sampled}]`, lowercase hex as the Sentry SDKs write it. Unlike the
# Sentry SDK's own parser, trace and span id are required: without both there is no parent.
_SENTRY_TRACE_RE = re.compile(r"([0-9a-f]{32})-([0-9a-f]{16})(?:-([01]))?")
# A header longer than this cannot be valid; checked first so huge inputs cost nothing.
_MAX_SENTRY_TRACE_LENGTH = 128

# Baggage keys are RFC 7230 tokens.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16

_logged_kinds: set[str] = set()


def _log_once(kind: str, level: int, message: str, *args: object) -> None:
    """Log `message` only the first time a problem of `kind` happens (headers arrive per request,
    so logging every occurrence would flood the host application's logs)."""
    if kind in _logged_kinds:
        return
    _logged_kinds.add(kind)
    _logger.log(level, message, *args, exc_info=level >= logging.WARNING)


def sentry_baggage_from_context(context: Context | None = None) -> dict[str, str]:
    """Return the Sentry DSC members held in OTel baggage, with the `sentry-` prefix stripped.

    For incoming `baggage: sentry-trace_id=abc,sentry-replay_id=r1,other=x` this returns
    `{"trace_id": "abc", "replay_id": "r1"}`. Values are the decoded baggage values. `context`
    defaults to the current context. Never raises; returns `{}` on any problem.
    """
    try:
        entries = otel_baggage.get_all(context=context)
        return {
            key[len(SENTRY_BAGGAGE_PREFIX) :]: str(value)
            for key, value in entries.items()
            if isinstance(key, str)
            and key.startswith(SENTRY_BAGGAGE_PREFIX)
            and len(key) > len(SENTRY_BAGGAGE_PREFIX)
        }
    except Exception:  # noqa: BLE001 - a propagation helper must not break the request
        _log_once("baggage-read", logging.WARNING, "could not read Sentry baggage from context")
        return {}


def _first_header_value(values: object) -> str | None:
    """Normalise what a getter returns (None, a str, or a list of str) to one string."""
    if values is None:
        return None
    if isinstance(values, str):
        return values
    if isinstance(values, bytes):
        return values.decode("latin-1")
    if isinstance(values, Iterable):
        for value in values:
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if isinstance(value, str) and value.strip():
                return value
    return None


def _parse_sentry_trace(header: str) -> tuple[int, int, bool | None] | None:
    """Parse `{trace_id}-{span_id}[-{0|1}]` into (trace_id, span_id, sampled or None).

    Returns None for anything malformed, including all-zero ids. Several headers folded into one
    comma-separated value (RFC 9110 section 5.3) are tolerated: the first non-empty one is used.
    """
    if len(header) > _MAX_SENTRY_TRACE_LENGTH * 4:
        return None
    if "," in header:
        header = next((part for part in header.split(",") if part.strip()), "")
    header = header.strip()
    if len(header) > _MAX_SENTRY_TRACE_LENGTH:
        return None
    match = _SENTRY_TRACE_RE.fullmatch(header)
    if match is None:
        return None
    trace_hex, span_hex, sampled_flag = match.groups()
    if trace_hex == _INVALID_TRACE_ID or span_hex == _INVALID_SPAN_ID:
        return None
    sampled = None if sampled_flag is None else sampled_flag == "1"
    return int(trace_hex, 16), int(span_hex, 16), sampled


def _read_carrier_header(carrier: object, name: str) -> str | None:
    """Read a header already written into the carrier, if the carrier can tell us.

    Carriers with `.get` (dict, `httpx.Headers`, other mappings) are read; for anything else we
    cannot know what was written and return None. Multiple values are folded with commas, which
    is how HTTP combines repeated `baggage` headers.
    """
    getter = getattr(carrier, "get", None)
    if not callable(getter):
        return None
    value = getter(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        parts = [v.decode("latin-1") if isinstance(v, bytes) else v for v in value]
        return ",".join(p for p in parts if isinstance(p, str))
    return None


def _member_key(member: str) -> str:
    """The decoded key of one `key=value;properties` baggage list member."""
    return unquote(member.split("=", 1)[0].strip())


def _format_sample_rate(sample_rate: object) -> str | None:
    """Sentry expects the DSC sample rate as a decimal string in [0, 1]."""
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
    """Reads and writes Sentry's `sentry-trace` header and the Sentry DSC in `baggage`.

    Constructor arguments are only used when this service is the head of the Sentry trace, that
    is when the context holds no `sentry-*` baggage. They become `sentry-public_key`,
    `sentry-environment`, `sentry-release` and `sentry-sample_rate` in the outgoing DSC so that a
    downstream Sentry SDK and Sentry's dynamic sampling see where the trace started. Invalid
    values are ignored (a `sample_rate` outside [0, 1] is dropped).

    Sampling: `sentry-trace` ending in `-1` gives SAMPLED trace flags, `-0` or no flag gives
    DEFAULT (not sampled) flags. A missing flag means the upstream Sentry SDK deferred the
    decision; OTel has no way to express that in a span context, so with the default
    `ParentBased` sampler such requests are not sampled here. Configure the sampler's
    `remote_parent_not_sampled` if that matters.
    """

    def __init__(
        self,
        public_key: str | None = None,
        environment: str | None = None,
        release: str | None = None,
        sample_rate: float | str | None = None,
    ) -> None:
        head: dict[str, str] = {}
        for name, value in (
            ("public_key", public_key),
            ("environment", environment),
            ("release", release),
        ):
            if isinstance(value, str) and value:
                head[name] = value
        rate = _format_sample_rate(sample_rate)
        if rate is not None:
            head["sample_rate"] = rate
        elif sample_rate is not None:
            _log_once(
                "bad-sample-rate",
                logging.INFO,
                "ignoring Sentry sample_rate %r: not a number in [0, 1]",
                sample_rate,
            )
        self._head_dsc = head

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        """Return `context` with the remote parent from `sentry-trace`, unless it already has one.

        Like the W3C trace-context propagator, a missing `context` means a fresh empty Context
        rather than the current one, so an active local span never hides the incoming header.
        """
        if context is None:
            context = Context()
        try:
            if trace.get_current_span(context).get_span_context().is_valid:
                # A valid `traceparent` was extracted before us: W3C wins.
                return context
            header = _first_header_value(getter.get(carrier, SENTRY_TRACE_HEADER))
            if not header:
                return context
            parsed = _parse_sentry_trace(header)
            if parsed is None:
                _log_once("bad-sentry-trace", logging.DEBUG, "ignoring malformed sentry-trace header")
                return context
            trace_id, span_id, sampled = parsed
            span_context = SpanContext(
                trace_id=trace_id,
                span_id=span_id,
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
            )
            return trace.set_span_in_context(NonRecordingSpan(span_context), context)
        except Exception:  # noqa: BLE001 - a propagator must not break the request
            _log_once("extract", logging.WARNING, "sentry-trace extraction failed")
            return context

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        """Write `sentry-trace` for the current span and merge the Sentry DSC into `baggage`.

        Writes nothing when the context has no valid span. `context` defaults to the current one.
        """
        try:
            span_context = trace.get_current_span(context).get_span_context()
            if not span_context.is_valid:
                return
            trace_hex = format_trace_id(span_context.trace_id)
            sampled = span_context.trace_flags.sampled
            setter.set(
                carrier,
                SENTRY_TRACE_HEADER,
                f"{trace_hex}-{format_span_id(span_context.span_id)}-{'1' if sampled else '0'}",
            )
            merged = self._merged_baggage(carrier, context, trace_hex, sampled)
            if merged is not None:
                setter.set(carrier, BAGGAGE_HEADER, merged)
        except Exception:  # noqa: BLE001 - a propagator must not break the request
            _log_once("inject", logging.WARNING, "sentry-trace injection failed")

    def _dsc_members(self, context: Context | None, trace_hex: str, sampled: bool) -> dict[str, str]:
        """The Sentry DSC to send, without prefix: the incoming one if any, else our own."""
        incoming = sentry_baggage_from_context(context)
        if incoming:
            # Someone upstream started the Sentry trace; their DSC is authoritative and only the
            # trace id is filled in when it is missing.
            dsc = {"trace_id": trace_hex}
            dsc.update(incoming)
            return dsc
        # We are the head of the Sentry trace.
        dsc = {"trace_id": trace_hex}
        dsc.update(self._head_dsc)
        dsc["sampled"] = "true" if sampled else "false"
        return dsc

    def _merged_baggage(
        self, carrier: object, context: Context | None, trace_hex: str, sampled: bool
    ) -> str | None:
        """Return the new `baggage` value, or None when the carrier needs no change.

        Existing members are kept verbatim and first; Sentry members whose key is already present
        are not repeated. Sentry members that would break the W3C limits are dropped.
        """
        try:
            existing_value = _read_carrier_header(carrier, BAGGAGE_HEADER)
        except Exception:  # noqa: BLE001 - exotic carriers may fail on .get
            _log_once("carrier-get", logging.WARNING, "could not read baggage from carrier")
            existing_value = None
        existing = [m.strip() for m in (existing_value or "").split(",") if m.strip()]
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
            member_size = len(member) + (1 if count else 0)
            if (
                len(member) > _MAX_MEMBER_BYTES
                or count + 1 > _MAX_BAGGAGE_MEMBERS
                or size + member_size > _MAX_BAGGAGE_BYTES
            ):
                dropped = True
                continue
            added.append(member)
            present.add(key)
            size += member_size
            count += 1
        if dropped:
            _log_once(
                "baggage-limit",
                logging.INFO,
                "dropped Sentry baggage members to stay within W3C baggage limits",
            )
        if not added:
            return None
        return ",".join(existing + added)

    @property
    def fields(self) -> set[str]:
        """The headers `inject` may write."""
        return {SENTRY_TRACE_HEADER, BAGGAGE_HEADER}
