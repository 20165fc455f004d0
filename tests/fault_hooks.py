"""Start the example shop with one distro component made to raise, for the host-app safety tests.

Usage: ``python fault_hooks.py TARGET PORT`` with the distro's settings in the environment. The
script replaces the target's method with one that raises ``RuntimeError("injected fault ...")``,
then runs OpenTelemetry's auto-instrumentation (what ``opentelemetry-instrument`` does at start)
and serves ``shop_app:app`` with uvicorn on 127.0.0.1. The replacement happens before the distro
builds its pipeline, so bound methods captured at start-up raise too.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# target name -> (module, attribute path of the callable to break)
TARGETS = {
    "session propagator": ("raptorflow_otel.processors.sessions", "SessionPropagator._extract"),
    "session span start": ("raptorflow_otel.processors.sessions", "SessionSpanProcessor.on_start"),
    "session span end": ("raptorflow_otel.processors.sessions", "SessionSpanProcessor.on_end"),
    "session tracker": ("raptorflow_otel.processors.session_tracker", "SessionTracker.observe"),
    "span pipeline": ("raptorflow_otel.processors.pipeline", "PipelineSpanProcessor.on_end"),
    "logged exceptions": ("raptorflow_otel.processors.logged_exceptions", "LoggedExceptions._keep"),
    "exception formatting": ("raptorflow_otel.processors.logged_exceptions", "exception_attributes"),
    "error categorization": ("raptorflow_otel.processors.categorize", "ErrorCategorizer.__call__"),
    "privacy scrubbing": ("raptorflow_otel.processors.scrubbing", "Scrubber.scrub_span"),
    "sentry events": ("raptorflow_otel.exporters.sentry_exporter", "build_transaction"),
    "sentry exporter": ("raptorflow_otel.exporters.sentry_exporter", "SentryExporter.export"),
    "otlp span exporter": ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter.export"),
    "otlp metric exporter": ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter.export"),
    "sqlalchemy spans": ("raptorflow_otel.distro.sqlalchemy_spans", "_start_span"),
}


def break_target(name: str) -> None:
    module_name, path = TARGETS[name]
    owner = importlib.import_module(module_name)
    *parents, attribute = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - stands in for any signature
        raise RuntimeError(f"injected fault in {name}")

    setattr(owner, attribute, broken)


def main() -> None:
    target, port = sys.argv[1], int(sys.argv[2])
    break_target(target)
    from opentelemetry.instrumentation.auto_instrumentation import initialize

    initialize()
    import uvicorn

    uvicorn.run("shop_app:app", app_dir=str(EXAMPLES), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
