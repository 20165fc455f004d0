"""OTLP exporters for traces, metrics and logs, built from the validated settings.

The OpenTelemetry exporters read ``OTEL_EXPORTER_OTLP_*`` themselves when an argument is None.
We pass endpoint, timeout and compression explicitly, so a value our settings table rejected
(and warned about once) is not parsed a second time by the exporter. Headers and certificate
files are left to the exporter, which reads them from the same variables.
"""

from __future__ import annotations

import logging
from typing import Any

from raptorflow_otel.distro.settings import Settings

_logger = logging.getLogger(__name__)

SIGNAL_PATHS = {"TRACES": "v1/traces", "METRICS": "v1/metrics", "LOGS": "v1/logs"}


def endpoint_configured(settings: Settings, signal: str) -> bool:
    return bool(
        settings["OTEL_EXPORTER_OTLP_ENDPOINT"] or settings[f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"]
    )


def protocol(settings: Settings, signal: str) -> str:
    return settings[f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"] or settings["OTEL_EXPORTER_OTLP_PROTOCOL"]


def signal_endpoint(settings: Settings, signal: str) -> str | None:
    """Return the URL to export ``signal`` to, per the OTLP exporter specification.

    A per-signal endpoint is used as is. The base endpoint gets the signal path appended for
    http/protobuf and is used as is for gRPC. None lets the exporter use its default
    (``http://localhost:4318/v1/<signal>`` or ``localhost:4317``).
    """
    specific = settings[f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"]
    if specific:
        return specific
    base = settings["OTEL_EXPORTER_OTLP_ENDPOINT"]
    if not base:
        return None
    if protocol(settings, signal) == "grpc":
        return base
    return base.rstrip("/") + "/" + SIGNAL_PATHS[signal]


def create_exporter(settings: Settings, signal: str) -> Any | None:
    """Build the OTLP exporter for ``signal`` (TRACES, METRICS or LOGS); None if it cannot be."""
    transport = protocol(settings, signal)
    kwargs: dict[str, Any] = {"timeout": settings["OTEL_EXPORTER_OTLP_TIMEOUT"] / 1000}
    endpoint = signal_endpoint(settings, signal)
    if endpoint:
        kwargs["endpoint"] = endpoint
    try:
        if transport == "grpc":
            return _grpc_exporter(signal, settings, kwargs)
        return _http_exporter(signal, settings, kwargs)
    except ImportError as error:
        _logger.warning(
            "OTLP %s export over %s is not available (%s); install raptorflow-otel[grpc] "
            "or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf. %s are not exported over OTLP.",
            signal.lower(),
            transport,
            error,
            signal.capitalize(),
        )
        return None


def _http_exporter(signal: str, settings: Settings, kwargs: dict[str, Any]) -> Any:
    from opentelemetry.exporter.otlp.proto.http import Compression

    compression = settings["OTEL_EXPORTER_OTLP_COMPRESSION"]
    kwargs["compression"] = Compression.Gzip if compression == "gzip" else Compression.NoCompression
    if signal == "TRACES":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**kwargs)
    if signal == "METRICS":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(**kwargs)


def _grpc_exporter(signal: str, settings: Settings, kwargs: dict[str, Any]) -> Any:
    from grpc import Compression

    compression = settings["OTEL_EXPORTER_OTLP_COMPRESSION"]
    kwargs["compression"] = Compression.Gzip if compression == "gzip" else Compression.NoCompression
    endpoint = kwargs.get("endpoint")
    if endpoint and endpoint.startswith("http://"):
        kwargs["insecure"] = True
    if signal == "TRACES":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**kwargs)
    if signal == "METRICS":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return OTLPLogExporter(**kwargs)
