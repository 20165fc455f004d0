"""A snapshot of the agent's state, for a health endpoint or a support request."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from raptorflow_otel.distro import runtime
from raptorflow_otel.processors.drops import dropped_counts
from raptorflow_otel.processors.guard import failure_counts


def get_health_status() -> dict[str, Any]:
    """Return what is configured, what was instrumented and what was dropped so far."""
    telemetry = runtime.telemetry
    status: dict[str, Any] = {
        "configured": runtime.settings is not None,
        "exporting": telemetry is not None,
        "instrumented": dict(runtime.instrumented),
        "internal_errors": failure_counts(),
        # Items lost by destination and reason, e.g. {"sentry": {"network": 12}}.
        "dropped": dropped_counts(),
    }
    if telemetry is not None:
        status["sentry"] = telemetry.sentry_exporter is not None
        status["span_exporters"] = [type(exporter).__name__ for exporter in telemetry.span_exporters]
        status["metric_exporters"] = [type(exporter).__name__ for exporter in telemetry.metric_exporters]
        if telemetry.sentry_exporter is not None:
            status["sentry_stats"] = asdict(telemetry.sentry_exporter.stats)
    return status
