"""Build the tracer, meter and logger providers from the settings, and install them globally.

What gets built:

- spans: one `PipelineSpanProcessor` whose transformed copies go to Sentry (when ``SENTRY_DSN``
  or ``SENTRY_SPOTLIGHT`` is set), to OTLP and to the console (per ``OTEL_TRACES_EXPORTER``);
- metrics: a periodic reader per ``OTEL_METRICS_EXPORTER``;
- logs: a logger provider whenever spans go to Sentry, because FastAPI's native telemetry reports
  unhandled exceptions as log records, plus an OTLP log exporter when ``OTEL_LOGS_EXPORTER`` names one.

A signal with no destination gets no provider, so it costs the app nothing. With no destination
at all, one warning reports it and the app runs uninstrumented.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry import _logs as logs
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from raptorflow_otel.distro.sampling import RecordLocalRootsSampler, ratio_sampler
from raptorflow_otel.distro.settings import Settings
from raptorflow_otel.exporters import otlp, sentry_coexistence
from raptorflow_otel.exporters.sentry_events import EventCommon
from raptorflow_otel.exporters.sentry_exporter import SentryExporter
from raptorflow_otel.processors.categorize import ErrorCategorizer
from raptorflow_otel.processors.drops import count_failed_exports, rate_limit_exporter_logs
from raptorflow_otel.processors.error_categories import ErrorRules
from raptorflow_otel.processors.guard import GuardedSpanProcessor
from raptorflow_otel.processors.logged_exceptions import LoggedExceptions
from raptorflow_otel.processors.pipeline import PipelineSpanProcessor, SpanTransform
from raptorflow_otel.processors.scrubbing import Scrubber, ScrubOptions
from raptorflow_otel.processors.session_tracker import SessionTracker
from raptorflow_otel.processors.sessions import SessionPropagator, SessionSpanProcessor

_logger = logging.getLogger(__name__)

SCRUBBING_OFF_MESSAGE = (
    "raptorflow-otel: RAPTORFLOW_SCRUB_ENABLED=false, so spans are exported without privacy "
    "scrubbing and may carry passwords, tokens and personal data. Unset it to scrub again."
)

NOT_EXPORTED_MESSAGE = (
    "raptorflow-otel: telemetry is not exported because no destination is configured. "
    "Set OTEL_EXPORTER_OTLP_ENDPOINT (an OpenTelemetry Collector) or SENTRY_DSN."
)


@dataclass
class Telemetry:
    """The providers and exporters `configure_telemetry` built, for shutdown, tests and health."""

    settings: Settings
    resource: Resource
    tracer_provider: TracerProvider | None = None
    meter_provider: Any | None = None
    logger_provider: Any | None = None
    sentry_exporter: SentryExporter | None = None
    scrubber: Scrubber | None = None
    span_exporters: list[SpanExporter] = field(default_factory=list)
    metric_exporters: list[Any] = field(default_factory=list)
    session_tracker: SessionTracker | None = None

    def shutdown(self) -> None:
        """Shut the providers down, each within its export timeout (see `distro.shutdown`)."""
        from raptorflow_otel.distro.shutdown import shutdown_within_timeouts

        shutdown_within_timeouts(self)


def package_version() -> str:
    try:
        return version("raptorflow-otel")
    except PackageNotFoundError:
        return "0+unknown"


def build_resource() -> Resource:
    """Build the SDK's resource plus process attributes; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win."""
    own = Resource(
        {
            "service.instance.id": str(uuid.uuid4()),
            "process.pid": os.getpid(),
            "telemetry.distro.name": "raptorflow-otel",
            "telemetry.distro.version": package_version(),
        }
    )
    return own.merge(Resource.create())


def build_sampler(settings: Settings, *, record_unsampled_roots: bool) -> Sampler:
    name = settings["OTEL_TRACES_SAMPLER"]
    if name is None:
        sampler = ratio_sampler(settings["SENTRY_TRACES_SAMPLE_RATE"])
    else:
        ratio = settings["OTEL_TRACES_SAMPLER_ARG"]
        ratio = 1.0 if ratio is None else ratio
        sampler = {
            "always_on": ALWAYS_ON,
            "always_off": ALWAYS_OFF,
            "parentbased_always_on": DEFAULT_ON,
            "parentbased_always_off": DEFAULT_OFF,
            "traceidratio": TraceIdRatioBased(ratio),
            "parentbased_traceidratio": ParentBasedTraceIdRatio(ratio),
        }[name]
    return RecordLocalRootsSampler(sampler) if record_unsampled_roots else sampler


def _exporter_names(settings: Settings, signal: str, default_when_endpoint: tuple[str, ...]) -> tuple[str, ...]:
    names = settings[f"OTEL_{signal}_EXPORTER"]
    if names is None:
        names = default_when_endpoint if otlp.endpoint_configured(settings, signal) else ()
    return tuple(name for name in names if name != "none")


def build_sentry_exporter(settings: Settings) -> SentryExporter | None:
    dsn = settings["SENTRY_DSN"]
    spotlight = settings["SENTRY_SPOTLIGHT"]
    if not dsn and not spotlight:
        return None
    common = EventCommon(
        environment=settings["SENTRY_ENVIRONMENT"],
        release=settings["SENTRY_RELEASE"],
        server_name=socket.gethostname() or settings["OTEL_SERVICE_NAME"],
        sdk_version=package_version(),
        in_app_include=tuple(settings["RAPTORFLOW_IN_APP_INCLUDE"]),
        project_root=os.getcwd(),
    )
    return SentryExporter(
        # sentry-sdk reads SENTRY_DSN itself when given None, and raises BadDsn on a value the
        # settings rejected. An empty string means no DSN, so only Spotlight (when set) is sent to.
        dsn=dsn or "",
        common=common,
        sample_rate=settings["SENTRY_SAMPLE_RATE"],
        spotlight_url=spotlight,
        debug=settings["SENTRY_DEBUG"],
        max_pending_traces=settings["RAPTORFLOW_SENTRY_PENDING_TRACES"],
        # Room for two full export batches, each of which may queue one envelope per span.
        queue_size=2 * min(settings["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"], settings["OTEL_BSP_MAX_QUEUE_SIZE"]),
    )


def configure_telemetry(settings: Settings, *, install_globally: bool = True) -> Telemetry | None:
    """Build every provider the settings ask for; return None when telemetry is off."""
    if settings["OTEL_SDK_DISABLED"]:
        _logger.info("raptorflow-otel: OTEL_SDK_DISABLED=true, telemetry is off.")
        return None

    scrubber = build_scrubber(settings)
    resource = build_resource()
    if scrubber is not None:
        resource = scrubber.scrub_resource(resource)
    telemetry = Telemetry(settings=settings, resource=resource, scrubber=scrubber)
    telemetry.sentry_exporter = build_sentry_exporter(settings)
    rate_limit_exporter_logs()
    for name in _exporter_names(settings, "TRACES", ("otlp",)):
        exporter = otlp.create_exporter(settings, "TRACES") if name == "otlp" else ConsoleSpanExporter()
        if exporter is not None:
            count_failed_exports(exporter, f"{name} traces", "spans", SpanExportResult.FAILURE)
            telemetry.span_exporters.append(exporter)
    for name in _exporter_names(settings, "METRICS", ("otlp",)):
        exporter = otlp.create_exporter(settings, "METRICS") if name == "otlp" else _console_metric_exporter()
        if exporter is not None:
            count_failed_exports(exporter, f"{name} metrics", "metric exports", _metric_failure())
            telemetry.metric_exporters.append(exporter)
    log_exporter_names = _exporter_names(settings, "LOGS", ())

    destinations = [telemetry.sentry_exporter, *telemetry.span_exporters, *telemetry.metric_exporters]
    if not any(destinations) and not log_exporter_names:
        _logger.warning(NOT_EXPORTED_MESSAGE)
        return None

    logged_exceptions = LoggedExceptions() if telemetry.sentry_exporter is not None else None
    # Metrics first: the error categorization step of the tracer provider counts errors with them.
    if telemetry.metric_exporters:
        telemetry.meter_provider = _meter_provider(settings, resource, telemetry.metric_exporters)
    if telemetry.sentry_exporter is not None or telemetry.span_exporters:
        telemetry.tracer_provider = _tracer_provider(settings, resource, telemetry, logged_exceptions)
    if logged_exceptions is not None or log_exporter_names:
        telemetry.logger_provider = _logger_provider(
            settings, resource, logged_exceptions, log_exporter_names, scrubber
        )

    if install_globally:
        _install(settings, telemetry)
    return telemetry


def build_scrubber(settings: Settings) -> Scrubber | None:
    """Build the privacy scrubber from the settings; None (with a warning) when it is turned off."""
    if not settings["RAPTORFLOW_SCRUB_ENABLED"]:
        _logger.warning(SCRUBBING_OFF_MESSAGE)
        return None
    return Scrubber(ScrubOptions.from_settings(settings))


def _tracer_provider(
    settings: Settings,
    resource: Resource,
    telemetry: Telemetry,
    logged_exceptions: LoggedExceptions | None,
) -> TracerProvider:
    sentry = telemetry.sentry_exporter
    provider = TracerProvider(
        resource=resource,
        sampler=build_sampler(settings, record_unsampled_roots=sentry is not None),
    )
    tracker = None
    if telemetry.meter_provider is not None:
        tracker = SessionTracker(
            ttl_seconds=settings["RAPTORFLOW_SESSION_TTL_SECONDS"],
            idle_seconds=settings["RAPTORFLOW_SESSION_IDLE_SECONDS"],
            max_sessions=settings["RAPTORFLOW_SESSION_MAX"],
            conversion_routes=settings["RAPTORFLOW_SESSION_CONVERSION_ROUTES"],
            meter_provider=telemetry.meter_provider,
        )
        telemetry.session_tracker = tracker
    provider.add_span_processor(
        GuardedSpanProcessor(SessionSpanProcessor(sentry.request_sessions if sentry is not None else None, tracker))
    )
    steps = []
    if logged_exceptions is not None:
        steps.append(("logged exceptions", logged_exceptions.attach))
    categorizer = ErrorCategorizer(
        ErrorRules(settings["RAPTORFLOW_ERROR_CATEGORIES"]),
        meter_provider=telemetry.meter_provider,
    )
    steps.append(("error categorization", categorizer))
    if telemetry.scrubber is not None:
        steps.append(("privacy scrubbing", telemetry.scrubber.scrub_span))
    exporters: list[SpanExporter] = [*([sentry] if sentry else []), *telemetry.span_exporters]
    provider.add_span_processor(GuardedSpanProcessor(
        PipelineSpanProcessor(
            SpanTransform(steps, fail_closed={"privacy scrubbing"}),
            exporters,
            error_sink=sentry,
            max_queue_size=settings["OTEL_BSP_MAX_QUEUE_SIZE"],
            schedule_delay_millis=settings["OTEL_BSP_SCHEDULE_DELAY"],
            max_export_batch_size=settings["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
            export_timeout_millis=settings["OTEL_BSP_EXPORT_TIMEOUT"],
        )
    ))
    return provider


def _metric_failure() -> Any:
    from opentelemetry.sdk.metrics.export import MetricExportResult

    return MetricExportResult.FAILURE


def _console_metric_exporter() -> Any:
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

    return ConsoleMetricExporter()


def _meter_provider(settings: Settings, resource: Resource, exporters: list[Any]) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    readers = [
        PeriodicExportingMetricReader(
            exporter,
            export_interval_millis=settings["OTEL_METRIC_EXPORT_INTERVAL"],
            export_timeout_millis=settings["OTEL_METRIC_EXPORT_TIMEOUT"],
        )
        for exporter in exporters
    ]
    return MeterProvider(resource=resource, metric_readers=readers)


def _logger_provider(
    settings: Settings,
    resource: Resource,
    logged_exceptions: LoggedExceptions | None,
    exporter_names: tuple[str, ...],
    scrubber: Scrubber | None,
) -> Any:
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter, LogRecordExportResult

    from raptorflow_otel.processors.logged_exceptions import ExceptionLoggerProvider

    provider = ExceptionLoggerProvider(resource=resource)
    if logged_exceptions is not None:
        provider.add_log_record_processor(logged_exceptions)
    if scrubber is not None and exporter_names:
        from raptorflow_otel.processors.scrub_logs import ScrubbingLogProcessor

        provider.add_log_record_processor(ScrubbingLogProcessor(scrubber))
    for name in exporter_names:
        exporter = otlp.create_exporter(settings, "LOGS") if name == "otlp" else ConsoleLogRecordExporter()
        if exporter is not None:
            count_failed_exports(exporter, f"{name} logs", "log records", LogRecordExportResult.FAILURE)
            provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider


def _install(settings: Settings, telemetry: Telemetry) -> None:
    if telemetry.tracer_provider is not None:
        trace.set_tracer_provider(telemetry.tracer_provider)
    if telemetry.meter_provider is not None:
        metrics.set_meter_provider(telemetry.meter_provider)
    if telemetry.logger_provider is not None:
        logs.set_logger_provider(telemetry.logger_provider)
    if not settings.is_set("OTEL_PROPAGATORS"):
        _install_default_propagators(settings)
    _add_session_propagator(settings)
    if telemetry.sentry_exporter is not None:
        sentry_coexistence.install()
    if telemetry.scrubber is not None:
        sentry_coexistence.install_scrubber(telemetry.scrubber)


def _add_session_propagator(settings: Settings) -> None:
    """Add the extract-only session propagator to whatever propagators are installed.

    It is added even when ``OTEL_PROPAGATORS`` names the propagators, since it injects nothing and
    only reads the request's session headers.
    """
    from opentelemetry import propagate
    from opentelemetry.propagators.composite import CompositePropagator

    hash_key = settings["RAPTORFLOW_SCRUB_HASH_KEY"]
    session = SessionPropagator(
        session_header=settings["RAPTORFLOW_SESSION_HEADER"],
        session_cookie=settings["RAPTORFLOW_SESSION_COOKIE"],
        user_header=settings["RAPTORFLOW_USER_HEADER"],
        cookie_key=hash_key.encode() if hash_key else None,
    )
    propagate.set_global_textmap(CompositePropagator([propagate.get_global_textmap(), session]))


def _install_default_propagators(settings: Settings) -> None:
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from raptorflow_otel.exporters.sentry_propagator import SentryPropagator

    dsn = settings["SENTRY_DSN"]
    public_key = None
    if dsn:
        from sentry_sdk.utils import Dsn

        public_key = Dsn(dsn).public_key
    sentry = SentryPropagator(
        public_key=public_key,
        environment=settings["SENTRY_ENVIRONMENT"],
        release=settings["SENTRY_RELEASE"],
        sample_rate=settings["SENTRY_TRACES_SAMPLE_RATE"],
    )
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), sentry])
    )
