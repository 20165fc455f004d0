"""The `opentelemetry_distro` entry point: settings, logging and instrumentation choices.

`opentelemetry-instrument` calls, in order: ``RaptorflowDistro.configure()``, the configurator
(`raptorflow_otel.distro.configurator`), ``load_instrumentor`` once per installed
instrumentation, then the ``opentelemetry_post_instrument`` hooks, all before the app is imported.
"""

from __future__ import annotations

import importlib.util
import logging

from opentelemetry.instrumentation.distro import BaseDistro

from raptorflow_otel.distro import runtime
from raptorflow_otel.distro.fastapi_defaults import set_operation_spans_default
from raptorflow_otel.distro.settings import load_settings
from raptorflow_otel.processors.guard import report_internal_error

_logger = logging.getLogger(__name__)
_package_logger = logging.getLogger("raptorflow_otel")

# Contrib FastAPI instrumentation would add `http receive` / `http send` spans per ASGI message.
FASTAPI_EXCLUDED_SPANS = ["receive", "send"]


def fastapi_has_native_telemetry() -> bool:
    """True when the installed FastAPI traces requests itself (FastAPI 0.16x and newer)."""
    try:
        return importlib.util.find_spec("fastapi.telemetry") is not None
    except (ImportError, ValueError):
        return False


def configure_logging(level_name: str) -> None:
    _package_logger.setLevel(level_name)
    if _package_logger.level < logging.WARNING and not _package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        _package_logger.addHandler(handler)


class _HideContribSQLAlchemyConflict(logging.Filter):
    """Drop the loader's error that contrib SQLAlchemy instrumentation refuses SQLAlchemy 2.1.

    opentelemetry-instrument checks that error before asking the distro, so it is logged even
    though this distro traces SQLAlchemy itself, any version. The message would only mislead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("sqlalchemy only instruments") and "sqlalchemy" in message)


class RaptorflowDistro(BaseDistro):
    """Reads the settings once and decides how each instrumentation is loaded."""

    def _configure(self, **kwargs):
        runtime.settings = load_settings()
        configure_logging(runtime.settings["RAPTORFLOW_LOG_LEVEL"])
        logging.getLogger("opentelemetry.instrumentation.auto_instrumentation._load").addFilter(
            _HideContribSQLAlchemyConflict()
        )

    def load_instrumentor(self, entry_point, **kwargs):
        """Load one instrumentation; a failure is logged and never stops the others or the app."""
        try:
            self._load(entry_point, **kwargs)
        except ModuleNotFoundError as error:
            # The instrumented library is not installed: nothing to instrument, nothing wrong.
            _logger.debug("Instrumentation %r skipped: %s", entry_point.name, error)
        except Exception as error:  # noqa: BLE001 - one broken instrumentation must not stop the rest
            report_internal_error(f"instrumentation {entry_point.name!r}", error)

    def _load(self, entry_point, **kwargs):
        name = entry_point.name
        if name == "sqlalchemy":
            # Replaced by our own engine-level listeners, installed in post_instrument.
            return
        if name == "fastapi":
            mode = _fastapi_mode()
            if mode == "native":
                _logger.debug("FastAPI traces come from its native telemetry; contrib skipped.")
                runtime.instrumented["fastapi"] = "native"
                set_operation_spans_default(runtime.settings["RAPTORFLOW_FASTAPI_OPERATION_SPANS"])
                return
            kwargs.setdefault("exclude_spans", FASTAPI_EXCLUDED_SPANS)
            runtime.instrumented["fastapi"] = "contrib"
        super().load_instrumentor(entry_point, **kwargs)
        runtime.instrumented.setdefault(name, "contrib")


def _fastapi_mode() -> str:
    configured = runtime.settings["RAPTORFLOW_FASTAPI_MODE"] if runtime.settings else "auto"
    native = fastapi_has_native_telemetry()
    if configured == "native" and not native:
        _logger.warning(
            "RAPTORFLOW_FASTAPI_MODE=native, but the installed FastAPI has no native telemetry "
            "(it needs FastAPI 0.16x or newer); using opentelemetry-instrumentation-fastapi."
        )
        return "contrib"
    if configured == "auto":
        return "native" if native else "contrib"
    return configured


def post_instrument() -> None:
    """Install our SQLAlchemy instrumentation (when this distro is the one running)."""
    settings = runtime.settings
    if settings is None or settings["OTEL_SDK_DISABLED"]:
        return
    disabled = set(settings["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"])
    if "*" in disabled or "sqlalchemy" in disabled:
        return
    try:
        from raptorflow_otel.distro.sqlalchemy_spans import instrument_sqlalchemy, semconv_mode_from_env

        mode = semconv_mode_from_env(",".join(settings["OTEL_SEMCONV_STABILITY_OPT_IN"]))
        if instrument_sqlalchemy(semconv_mode=mode):
            runtime.instrumented["sqlalchemy"] = "raptorflow"
    except Exception as error:  # noqa: BLE001 - see load_instrumentor
        report_internal_error("instrumentation 'sqlalchemy'", error)
