"""Samplers: trace sampling that still lets errors of unsampled traces reach Sentry."""

from __future__ import annotations

from typing import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.util.types import Attributes


class RecordLocalRootsSampler(Sampler):
    """Wraps a sampler so that a dropped local root span is still recorded, but not sampled.

    A local root (no parent, or a parent in another process) that the wrapped sampler drops is
    turned into RECORD_ONLY: the span records its attributes and exceptions, yet its trace flags
    mark it "not sampled", so it is never exported as a trace. Its children are still dropped by a
    parent-based sampler, which keeps the cost at one recorded span per unsampled request. The
    span pipeline reports such a span to Sentry only when it carries an exception.
    """

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state=None,  # noqa: ANN001 - matches the SDK signature
    ) -> SamplingResult:
        result = self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is not Decision.DROP:
            return result
        parent = get_current_span(parent_context).get_span_context()
        if parent.is_valid and not parent.is_remote:
            return result
        return SamplingResult(Decision.RECORD_ONLY, result.attributes, result.trace_state)

    def get_description(self) -> str:
        return f"RecordLocalRoots{{{self._delegate.get_description()}}}"


def ratio_sampler(rate: float) -> Sampler:
    """Build the sampler `SENTRY_TRACES_SAMPLE_RATE` configures: parent-based, trace-id ratio."""
    return ParentBased(TraceIdRatioBased(rate))
