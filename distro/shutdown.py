"""Flush telemetry when the process stops, within the configured export timeouts.

The SDK flushes its providers from an ``atexit`` hook, but a process killed by a signal never runs
``atexit``. uvicorn (0.55) handles SIGTERM gracefully, then restores the handler that was there
before it started and raises the signal again, so the process dies by the signal and the last
batch of spans and metrics would be lost. The handler installed here is the one uvicorn restores:
it flushes, then restores the default action and raises the signal again, so the exit status
stays what it would have been.

Neither way out may hang when a destination is down. In opentelemetry-sdk 1.45 the batch span
processor waits up to 30 s for its worker to drain the queue whatever ``OTEL_BSP_EXPORT_TIMEOUT``
says, and each OTLP export of that drain may take ``OTEL_EXPORTER_OTLP_TIMEOUT`` (retries
included). So `shutdown_within_timeouts` runs each provider's shutdown on a helper thread and
stops waiting for it after that signal's export timeout, and `install_exit_flush` puts it in
place of the providers' own ``atexit`` hooks.
"""

from __future__ import annotations

import atexit
import functools
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any, Callable

from raptorflow_otel.processors.drops import log_unreported_drops
from raptorflow_otel.processors.guard import guarded

if TYPE_CHECKING:
    from raptorflow_otel.distro.providers import Telemetry

_logger = logging.getLogger(__name__)

# Shutdown stages in order: what is flushed, the Telemetry attribute, and the setting that bounds
# the stage. Spans go first because exporting them records error metrics and ends the tracked
# sessions, and logs go last because the span transform reads the logged exceptions.
# NOTE: the settings table has no OTEL_BLRP_EXPORT_TIMEOUT, so the log stage is bounded by the time
# of one OTLP export instead.
SHUTDOWN_STAGES = (
    ("spans", "tracer_provider", "OTEL_BSP_EXPORT_TIMEOUT"),
    ("metrics", "meter_provider", "OTEL_METRIC_EXPORT_TIMEOUT"),
    ("logs", "logger_provider", "OTEL_EXPORTER_OTLP_TIMEOUT"),
)

# Telemetry objects whose shutdown has started, so a second call returns at once. They are kept
# (one per process in practice) and compared by identity, because Telemetry is not hashable.
_shut_down: list[Any] = []
_shut_down_lock = threading.Lock()


def install_sigterm_flush(flush: Callable[[], object]) -> bool:
    """Install the SIGTERM handler unless the app or another library already has one."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        _logger.debug("SIGTERM already has a handler; telemetry is flushed at exit only.")
        return False

    def flush_then_terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        guarded(flush, what="telemetry flush at SIGTERM")
        signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, flush_then_terminate)
    return True


def install_exit_flush(telemetry: "Telemetry") -> None:
    """Replace the providers' own ``atexit`` shutdowns by ``telemetry.shutdown``, which is bounded."""
    for _, attribute, _ in SHUTDOWN_STAGES:
        provider = getattr(telemetry, attribute)
        if provider is not None:
            # The SDK registered the bound method, and an equal bound method unregisters it.
            atexit.unregister(provider.shutdown)
    atexit.register(telemetry.shutdown)


def shutdown_within_timeouts(telemetry: "Telemetry") -> None:
    """Shut the tracer, meter and logger providers down in order, each within its export timeout.

    A stage that is still running at its deadline is left to its daemon thread, and one warning
    names the setting. The process is about to exit, so what that stage has not exported is lost.
    """
    with _shut_down_lock:
        if any(started is telemetry for started in _shut_down):
            return
        _shut_down.append(telemetry)
    for stage, attribute, setting in SHUTDOWN_STAGES:
        provider = getattr(telemetry, attribute)
        if provider is None:
            continue
        timeout_millis = telemetry.settings[setting]
        action: Callable[[], Any] = provider.shutdown
        if stage == "metrics":
            # The meter provider also bounds its own final collection and export.
            action = functools.partial(provider.shutdown, timeout_millis=timeout_millis)
        if not run_with_deadline(action, timeout_millis / 1000, what=f"{stage} shutdown"):
            _logger.warning(
                "raptorflow-otel: %s shutdown did not finish within %s=%d ms, so the %s not yet "
                "exported are dropped. Check that the exporter's endpoint responds, or raise %s.",
                stage,
                setting,
                timeout_millis,
                stage,
                setting,
            )
    guarded(log_unreported_drops, what="drop summary at shutdown")


def run_with_deadline(function: Callable[[], Any], timeout_seconds: float, *, what: str) -> bool:
    """Run ``function`` on a daemon thread and wait for it, returning False when it outlives the timeout."""
    thread = threading.Thread(
        target=guarded,
        args=(function,),
        kwargs={"what": what},
        name=f"raptorflow-otel {what}",
        daemon=True,
    )
    try:
        thread.start()
    except RuntimeError:
        # Python 3.12 and newer start no thread from an atexit handler. The stage then runs here.
        # NOTE: in that case only the SDK's own limits bound it (30 s for the span batch processor).
        guarded(function, what=what)
        return True
    thread.join(timeout_seconds)
    return not thread.is_alive()
