"""Tests for `exporters/sentry_propagator.py`.

The propagator is exercised the way the distro configures it: in a `CompositePropagator` after
the W3C `tracecontext` and `baggage` propagators. Interoperability is checked against the Sentry
SDK's own header parsers (pure functions; no Sentry client is initialised).
"""

from __future__ import annotations

import os

import httpx
import pytest
from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from raptorflow_otel.exporters.sentry_propagator import SentryPropagator, sentry_baggage_from_context
from raptorflow_otel.processors import guard

TRACE_HEX = "771a43a4192642f0b136d5159a501700"
SPAN_HEX = "b0e6f15b45c36b12"
OTHER_TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"
OTHER_SPAN_HEX = "00f067aa0ba902b7"


def _composite(**kwargs) -> CompositePropagator:
    return CompositePropagator(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator(), SentryPropagator(**kwargs)]
    )


def _span_context(ctx: Context) -> SpanContext:
    return trace.get_current_span(ctx).get_span_context()


def _context_with_span(
    trace_hex: str = TRACE_HEX, span_hex: str = SPAN_HEX, sampled: bool = True
) -> Context:
    span_context = SpanContext(
        trace_id=int(trace_hex, 16),
        span_id=int(span_hex, 16),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def _members(header: str) -> list[tuple[str, str]]:
    return [tuple(member.strip().split("=", 1)) for member in header.split(",")]  # type: ignore[misc]


def _keys(header: str) -> list[str]:
    return [key for key, _ in _members(header)]


# --- extract ---------------------------------------------------------------------------------


def test_inject_extract_round_trip():
    propagator = SentryPropagator()
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=_context_with_span())
    assert carrier["sentry-trace"] == f"{TRACE_HEX}-{SPAN_HEX}-1"

    extracted = _span_context(propagator.extract(carrier))
    assert extracted.is_valid
    assert extracted.is_remote
    assert (extracted.trace_id, extracted.span_id) == (int(TRACE_HEX, 16), int(SPAN_HEX, 16))
    assert extracted.trace_flags.sampled


@pytest.mark.parametrize(
    ("suffix", "sampled"),
    [("-1", True), ("-0", False), ("", False)],
    ids=["sampled", "not-sampled", "deferred"],
)
def test_sampled_flag_mapping(suffix, sampled):
    ctx = SentryPropagator().extract({"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}{suffix}"})
    flags = _span_context(ctx).trace_flags
    assert flags == (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)


def test_inject_unsampled_span_zero_flag():
    carrier: dict[str, str] = {}
    SentryPropagator().inject(carrier, context=_context_with_span(sampled=False))
    assert carrier["sentry-trace"].endswith("-0")


def test_extract_whitespace_and_folded_headers():
    ctx = SentryPropagator().extract({"sentry-trace": f" \t{TRACE_HEX}-{SPAN_HEX}-1 \n"})
    assert _span_context(ctx).trace_id == int(TRACE_HEX, 16)
    folded = f"{TRACE_HEX}-{SPAN_HEX}-1, {OTHER_TRACE_HEX}-{OTHER_SPAN_HEX}-0"
    assert _span_context(SentryPropagator().extract({"sentry-trace": folded})).span_id == int(SPAN_HEX, 16)


def test_traceparent_wins_over_sentry_trace():
    carrier = {
        "traceparent": f"00-{OTHER_TRACE_HEX}-{OTHER_SPAN_HEX}-01",
        "sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-0",
    }
    extracted = _span_context(_composite().extract(carrier))
    assert extracted.trace_id == int(OTHER_TRACE_HEX, 16)
    assert extracted.span_id == int(OTHER_SPAN_HEX, 16)
    assert extracted.trace_flags.sampled


def test_extract_without_valid_traceparent():
    for carrier in (
        {"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1"},
        {"traceparent": "00-not-a-traceparent-01", "sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1"},
    ):
        extracted = _span_context(_composite().extract(carrier))
        assert extracted.trace_id == int(TRACE_HEX, 16)
        assert extracted.is_remote


def test_extract_ignores_active_local_span():
    # Like the W3C propagator, `context=None` starts from an empty context.
    with trace.use_span(NonRecordingSpan(_span_context(_context_with_span(OTHER_TRACE_HEX)))):
        ctx = SentryPropagator().extract({"sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1"})
    assert _span_context(ctx).trace_id == int(TRACE_HEX, 16)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "garbage",
        f"{TRACE_HEX}",
        f"{TRACE_HEX}-",
        f"{TRACE_HEX}-{SPAN_HEX}-2",
        f"{TRACE_HEX}-{SPAN_HEX}-1-extra",
        f"{TRACE_HEX}{SPAN_HEX}1",
        f"{TRACE_HEX.upper()}-{SPAN_HEX}-1",
        f"{TRACE_HEX[:-1]}-{SPAN_HEX}-1",
        f"{TRACE_HEX}-{SPAN_HEX}0-1",
        f"{'0' * 32}-{SPAN_HEX}-1",
        f"{TRACE_HEX}-{'0' * 16}-1",
        f"-{SPAN_HEX}-1",
        f"00-{TRACE_HEX}-{SPAN_HEX}-01",
        f"{TRACE_HEX}-{SPAN_HEX}-1" + "0" * 5000,
        "é" * 40,
    ],
)
def test_malformed_sentry_trace_is_ignored(header):
    base = Context()
    assert SentryPropagator().extract({"sentry-trace": header}, context=base) is base
    assert not _span_context(_composite().extract({"sentry-trace": header})).is_valid


def test_extract_odd_header_values():
    for carrier in ({"sentry-trace": 12345}, {"sentry-trace": [None, b"\xff"]}, {"sentry-trace": None}):
        assert not _span_context(SentryPropagator().extract(carrier)).is_valid
    carrier = {"sentry-trace": [b"", f"{TRACE_HEX}-{SPAN_HEX}-1".encode()]}
    assert _span_context(SentryPropagator().extract(carrier)).trace_id == int(TRACE_HEX, 16)


def test_extract_broken_getter_is_reported(monkeypatch):
    # The conftest makes the guard raise, and this test checks the production behaviour instead.
    monkeypatch.setattr(guard, "RAISE_INTERNAL_ERRORS", False)

    class BrokenGetter(Getter):
        def get(self, carrier, key):
            raise RuntimeError("broken getter")

        def keys(self, carrier):
            return []

    before = guard.failure_counts().get("SentryPropagator.extract", 0)
    base = Context()
    assert SentryPropagator().extract({}, context=base, getter=BrokenGetter()) is base
    assert guard.failure_counts()["SentryPropagator.extract"] == before + 1


# --- Sentry baggage (dynamic sampling context) ----------------------------------------------


def test_dsc_members_visible_from_context():
    carrier = {
        "sentry-trace": f"{TRACE_HEX}-{SPAN_HEX}-1",
        "baggage": (
            f"other=1,sentry-trace_id={TRACE_HEX},sentry-public_key=49d0f7386ad645858ae85020e393bef3,"
            "sentry-replay_id=2d4fa3c1b5a24e66a2b1e8d0c9f8a7b6,sentry-sample_rate=0.5,sentry-sampled=true,"
            "sentry-release=shop%401.2.3%2Bbuild"
        ),
    }
    ctx = _composite().extract(carrier)
    assert sentry_baggage_from_context(ctx) == {
        "trace_id": TRACE_HEX,
        "public_key": "49d0f7386ad645858ae85020e393bef3",
        "replay_id": "2d4fa3c1b5a24e66a2b1e8d0c9f8a7b6",
        "sample_rate": "0.5",
        "sampled": "true",
        "release": "shop@1.2.3+build",
    }
    # Non-Sentry members stay in OTel baggage but are not part of the DSC.
    assert otel_baggage.get_baggage("other", ctx) == "1"


def test_sentry_baggage_default_context():
    assert sentry_baggage_from_context() == {}
    ctx = otel_baggage.set_baggage("sentry-environment", "prod", Context())
    assert sentry_baggage_from_context(ctx) == {"environment": "prod"}


def test_inject_head_of_trace_dsc():
    propagator = _composite(
        public_key="49d0f7386ad645858ae85020e393bef3",
        environment="prod",
        release="shop@1.2.3+build",
        sample_rate=0.25,
    )
    ctx = otel_baggage.set_baggage("user", "alice smith", _context_with_span())
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=ctx)

    assert carrier["traceparent"] == f"00-{TRACE_HEX}-{SPAN_HEX}-01"
    assert carrier["sentry-trace"] == f"{TRACE_HEX}-{SPAN_HEX}-1"
    members = dict(_members(carrier["baggage"]))
    assert _keys(carrier["baggage"])[0] == "user"  # the W3C member written first stays first
    assert members["sentry-trace_id"] == TRACE_HEX
    assert members["sentry-public_key"] == "49d0f7386ad645858ae85020e393bef3"
    assert members["sentry-environment"] == "prod"
    assert members["sentry-release"] == "shop%401.2.3%2Bbuild"  # percent-encoded
    assert members["sentry-sample_rate"] == "0.25"
    assert members["sentry-sampled"] == "true"

    # A downstream OTel service decodes the same values.
    downstream = _composite().extract(carrier)
    assert sentry_baggage_from_context(downstream)["release"] == "shop@1.2.3+build"
    assert otel_baggage.get_baggage("user", downstream) == "alice smith"


def test_inject_continues_incoming_dsc():
    incoming = {
        "traceparent": f"00-{TRACE_HEX}-{SPAN_HEX}-01",
        "baggage": (
            f"sentry-trace_id={TRACE_HEX},sentry-public_key=upstreamkey,"
            "sentry-replay_id=2d4fa3c1b5a24e66a2b1e8d0c9f8a7b6,vendor=x"
        ),
    }
    propagator = _composite(public_key="ourkey", environment="ours", sample_rate=1.0)
    ctx = propagator.extract(incoming)
    outgoing: dict[str, str] = {}
    propagator.inject(outgoing, context=ctx)

    keys = _keys(outgoing["baggage"])
    assert len(keys) == len(set(keys))
    members = dict(_members(outgoing["baggage"]))
    # Upstream started the Sentry trace, so its DSC is forwarded unchanged and ours is not added.
    assert members["sentry-public_key"] == "upstreamkey"
    assert members["sentry-replay_id"] == "2d4fa3c1b5a24e66a2b1e8d0c9f8a7b6"
    assert "sentry-environment" not in members
    assert "sentry-sample_rate" not in members
    assert members["vendor"] == "x"


def test_inject_fills_missing_dsc_trace_id():
    ctx = otel_baggage.set_baggage("sentry-replay_id", "r1", _context_with_span())
    carrier: dict[str, str] = {}
    SentryPropagator(environment="unused").inject(carrier, context=ctx)
    assert carrier["baggage"] == f"sentry-trace_id={TRACE_HEX},sentry-replay_id=r1"


def test_inject_merges_dict_carrier_baggage():
    carrier = {"baggage": f"a=1, b=2;prop=x ,sentry-trace_id={OTHER_TRACE_HEX}"}
    SentryPropagator(environment="prod").inject(carrier, context=_context_with_span())
    assert _members(carrier["baggage"]) == [
        ("a", "1"),
        ("b", "2;prop=x"),
        ("sentry-trace_id", OTHER_TRACE_HEX),  # already present: kept, not duplicated
        ("sentry-environment", "prod"),
        ("sentry-sampled", "true"),
    ]


def test_inject_merges_httpx_headers_baggage():
    headers = httpx.Headers({"baggage": "tenant=acme", "accept": "application/json"})
    ctx = otel_baggage.set_baggage("tenant", "acme", _context_with_span())
    _composite(release="shop@2.0").inject(headers, context=ctx)

    assert headers.get_list("baggage") == [
        f"tenant=acme,sentry-trace_id={TRACE_HEX},sentry-release=shop%402.0,sentry-sampled=true"
    ]
    assert headers["sentry-trace"] == f"{TRACE_HEX}-{SPAN_HEX}-1"
    assert headers["accept"] == "application/json"


def test_inject_folds_repeated_baggage_headers():
    headers = httpx.Headers([("baggage", "a=1"), ("baggage", "b=2")])
    SentryPropagator().inject(headers, context=_context_with_span())
    assert headers.get_list("baggage") == [f"a=1,b=2,sentry-trace_id={TRACE_HEX},sentry-sampled=true"]


def test_inject_carrier_without_get():
    class ListSetter(Setter):
        def set(self, carrier, key, value):
            carrier.append((key, value))

    carrier: list[tuple[str, str]] = []
    SentryPropagator().inject(carrier, context=_context_with_span(), setter=ListSetter())
    assert carrier == [
        ("sentry-trace", f"{TRACE_HEX}-{SPAN_HEX}-1"),
        ("baggage", f"sentry-trace_id={TRACE_HEX},sentry-sampled=true"),
    ]


def test_inject_without_span_writes_nothing():
    carrier = {"baggage": "a=1"}
    SentryPropagator(environment="prod").inject(carrier, context=Context())
    assert carrier == {"baggage": "a=1"}
    _composite().inject(carrier, context=Context())
    assert "sentry-trace" not in carrier


def test_inject_skips_complete_baggage():
    carrier = {"baggage": f"sentry-trace_id={TRACE_HEX},sentry-sampled=true"}
    writes: list[str] = []

    class RecordingSetter(Setter):
        def set(self, carrier, key, value):
            writes.append(key)
            carrier[key] = value

    SentryPropagator().inject(carrier, context=_context_with_span(), setter=RecordingSetter())
    assert writes == ["sentry-trace"]


def test_baggage_member_limit():
    existing = ",".join(f"k{i}=v" for i in range(179))
    carrier = {"baggage": existing}
    SentryPropagator(environment="prod", release="r").inject(carrier, context=_context_with_span())
    keys = _keys(carrier["baggage"])
    assert len(keys) == 180
    assert keys[-1] == "sentry-trace_id"


def test_baggage_byte_limits():
    existing = "big=" + "x" * (8192 - len("big=") - 10)
    carrier = {"baggage": existing}
    SentryPropagator().inject(carrier, context=_context_with_span())
    assert carrier["baggage"] == existing
    assert carrier["sentry-trace"] == f"{TRACE_HEX}-{SPAN_HEX}-1"

    # An oversized configured value is dropped on its own, and the rest still goes out.
    carrier = {}
    SentryPropagator(release="r" * 5000).inject(carrier, context=_context_with_span())
    assert "sentry-release" not in carrier["baggage"]
    assert len(carrier["baggage"].encode()) <= 8192


def test_invalid_constructor_values_ignored():
    propagator = SentryPropagator(
        public_key="", environment=None, release=42, sample_rate="often"  # type: ignore[arg-type]
    )
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=_context_with_span(sampled=False))
    assert carrier["baggage"] == f"sentry-trace_id={TRACE_HEX},sentry-sampled=false"
    for bad_rate in (1.5, -0.1, float("nan"), True):
        carrier = {}
        SentryPropagator(sample_rate=bad_rate).inject(carrier, context=_context_with_span())
        assert "sample_rate" not in carrier["baggage"]
    carrier = {}
    SentryPropagator(sample_rate="1").inject(carrier, context=_context_with_span())
    assert "sentry-sample_rate=1.0" in carrier["baggage"]


def test_inject_broken_setter_is_reported(monkeypatch):
    # The conftest makes the guard raise, and this test checks the production behaviour instead.
    monkeypatch.setattr(guard, "RAISE_INTERNAL_ERRORS", False)

    class BrokenSetter(Setter):
        def set(self, carrier, key, value):
            raise RuntimeError("broken setter")

    before = guard.failure_counts().get("SentryPropagator.inject", 0)
    SentryPropagator().inject({}, context=_context_with_span(), setter=BrokenSetter())
    assert guard.failure_counts()["SentryPropagator.inject"] == before + 1


def test_inject_carrier_with_failing_get():
    class FailingGetCarrier(dict):
        def get(self, *args, **kwargs):
            raise RuntimeError("broken get")

    carrier = FailingGetCarrier()
    SentryPropagator().inject(carrier, context=_context_with_span())
    assert dict(carrier)["sentry-trace"] == f"{TRACE_HEX}-{SPAN_HEX}-1"
    assert dict(carrier)["baggage"] == f"sentry-trace_id={TRACE_HEX},sentry-sampled=true"


def test_fields():
    assert SentryPropagator().fields == {"sentry-trace", "baggage"}
    assert {"traceparent", "tracestate", "baggage", "sentry-trace"} == _composite().fields


# --- interoperability ------------------------------------------------------------------------


def test_sentry_sdk_parses_injected_headers():
    tracing_utils = pytest.importorskip("sentry_sdk.tracing_utils")
    carrier: dict[str, str] = {}
    ctx = otel_baggage.set_baggage("other", "1", _context_with_span(sampled=False))
    _composite(public_key="pk", release="shop@1.0 beta", sample_rate=0.1).inject(carrier, context=ctx)

    parsed = tracing_utils.extract_sentrytrace_data(carrier["sentry-trace"])
    assert parsed["trace_id"] == TRACE_HEX
    assert parsed["parent_span_id"] == SPAN_HEX
    assert parsed["parent_sampled"] is False

    dsc = tracing_utils.Baggage.from_incoming_header(carrier["baggage"]).sentry_items
    assert dsc["trace_id"] == TRACE_HEX
    assert dsc["public_key"] == "pk"
    assert dsc["release"] == "shop@1.0 beta"
    assert dsc["sample_rate"] == "0.1"
    assert dsc["sampled"] == "false"


def test_pyproject_entry_point():
    tomllib = pytest.importorskip("tomllib")
    pyproject = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
    with open(pyproject, "rb") as handle:
        entry_points = tomllib.load(handle)["project"]["entry-points"]["opentelemetry_propagator"]
    assert entry_points["sentry"] == "raptorflow_otel.exporters.sentry_propagator:SentryPropagator"
