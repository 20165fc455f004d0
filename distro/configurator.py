"""The `opentelemetry_configurator` entry point: builds and installs the providers."""

from __future__ import annotations

from opentelemetry.sdk._configuration import _BaseConfigurator

from raptorflow_otel.distro import runtime
from raptorflow_otel.distro.forking import install_fork_hook
from raptorflow_otel.distro.providers import configure_telemetry
from raptorflow_otel.distro.settings import load_settings
from raptorflow_otel.distro.shutdown import install_exit_flush, install_sigterm_flush
from raptorflow_otel.processors.guard import report_internal_error


class RaptorflowConfigurator(_BaseConfigurator):
    """Configures tracing, metrics and logs from the environment (see `providers`)."""

    def _configure(self, **kwargs):
        if runtime.settings is None:
            # Another distro ran `configure`, but OTEL_PYTHON_CONFIGURATOR chose us.
            runtime.settings = load_settings()
        try:
            runtime.telemetry = configure_telemetry(runtime.settings)
            if runtime.telemetry is not None:
                install_exit_flush(runtime.telemetry)
                install_sigterm_flush(runtime.telemetry.shutdown)
                # gunicorn forks its workers from a master process that ran this configurator.
                install_fork_hook(runtime.telemetry)
        except Exception as error:  # noqa: BLE001 - the app must start even if telemetry cannot
            report_internal_error("telemetry set-up", error)
