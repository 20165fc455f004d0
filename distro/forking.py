"""Give each forked worker process its own identity and working telemetry.

gunicorn forks its workers from a master process that already ran opentelemetry-instrument's
sitecustomize, so each worker starts with copies of the master's providers, exporters and
threads. (``uvicorn --workers`` and ``uvicorn --reload`` start their workers with
multiprocessing's spawn method: each is a new interpreter that configures itself.)

opentelemetry-sdk 1.45 fixes part of a forked copy in each provider's own after-fork hook: batch
processors and periodic metric readers start new threads with empty queues, and
``service.instance.id`` gets a new UUID. `install_fork_hook` registers one more hook, which runs
after those (hooks run in the order they were registered) and fixes the rest:

- ``process.pid`` would still be the master's, so the resource gets the child's pid;
- sentry-sdk's transport would share the master's pooled connections and could send envelopes
  the master had queued a second time, so the child gets a new Sentry client;
- OTLP/HTTP exporters would share the master's pooled keep-alive connections, so the child
  closes its copies (the master's sockets stay open);
- the session tracker, release-health counts and Sentry's pending child spans would be counted
  or sent by both processes, so the child starts them empty. A lock that a master thread held at
  the fork would stay locked forever, so they get new locks;
- system metrics would read the master's process, so they read the child's;
- gunicorn's ``UvicornWorker`` resets SIGTERM to its default action, and uvicorn later raises
  SIGTERM again, so a worker would die without flushing. The child installs the flush handler
  again after the worker resets its signals.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable

from opentelemetry.sdk.resources import Resource

from raptorflow_otel.distro.shutdown import install_sigterm_flush
from raptorflow_otel.processors.guard import guarded

if TYPE_CHECKING:
    from raptorflow_otel.distro.providers import Telemetry
    from raptorflow_otel.exporters.sentry_exporter import SentryExporter

_logger = logging.getLogger(__name__)

# Modules that define gunicorn's UvicornWorker: the uvicorn-worker package, and the copy that
# uvicorn 0.55 still ships (deprecated).
UVICORN_WORKER_MODULES = ("uvicorn_worker", "uvicorn.workers")

_state: dict[str, Any] = {"telemetry": None, "registered": False}


def install_fork_hook(telemetry: "Telemetry") -> None:
    """Register the after-fork hook once per process. A later call only replaces the telemetry it resets."""
    _state["telemetry"] = telemetry
    if _state["registered"] or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _state["registered"] = True


def _after_fork_in_child() -> None:
    telemetry = _state["telemetry"]
    if telemetry is None:
        return
    guarded(reset_after_fork, telemetry, what="telemetry reset in a forked process")


def reset_after_fork(telemetry: "Telemetry") -> None:
    """Make the copy of ``telemetry`` that a forked child inherited describe and serve the child."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("resource", lambda: refresh_resource(telemetry)),
        ("Sentry client", lambda: renew_sentry_client(telemetry.sentry_exporter)),
        ("OTLP connections", lambda: drop_inherited_connections(telemetry)),
        ("session state", lambda: reset_session_state(telemetry)),
        ("system metrics", point_system_metrics_at_this_process),
        ("SIGTERM flush", lambda: keep_sigterm_flush_in_uvicorn_worker(telemetry.shutdown)),
    ]
    # Each step is guarded on its own, so one that fails does not leave the others undone.
    for name, step in steps:
        guarded(step, what=f"{name} reset in a forked process")


def refresh_resource(telemetry: "Telemetry") -> None:
    """Put this process's pid and a new instance id on the resource of every provider.

    The SDK's ``_update_resource`` merges the given attributes into the provider's resource and
    hands the result to the tracers and loggers already made, which instrumentations keep.
    """
    fresh: dict[str, Any] = {"service.instance.id": _instance_id(), "process.pid": os.getpid()}
    if "process.parent_pid" in telemetry.resource.attributes:
        fresh["process.parent_pid"] = os.getppid()
    update = Resource(fresh)
    for provider in (telemetry.tracer_provider, telemetry.meter_provider, telemetry.logger_provider):
        if provider is None:
            continue
        update_resource = getattr(provider, "_update_resource", None)
        if update_resource is None:
            _logger.warning(
                "raptorflow-otel: %s of the installed opentelemetry-sdk has no _update_resource, so "
                "forked workers export the master's process.pid. Install opentelemetry-sdk 1.45, "
                "which has it.",
                type(provider).__name__,
            )
            continue
        update_resource(update)
    if telemetry.tracer_provider is not None:
        telemetry.resource = telemetry.tracer_provider.resource
    else:
        telemetry.resource = telemetry.resource.merge(update)


def _instance_id() -> str:
    """Return the instance id the SDK generated for this process, so all signals share one."""
    try:
        from opentelemetry.sdk.resources import ServiceInstanceIdResourceDetector
    except ImportError:
        return str(uuid.uuid4())
    # The detector caches one UUID per pid, which the SDK's own after-fork hooks already used.
    return str(ServiceInstanceIdResourceDetector().detect().attributes["service.instance.id"])


def renew_sentry_client(exporter: "SentryExporter | None") -> None:
    """Give the Sentry exporter a new sentry-sdk client, its state empty and its lock new.

    Copying a ``sentry_sdk.Client`` builds a new one from the same options
    (``Client.__setstate__`` runs ``_init_impl``), with its own transport, worker thread and
    connection pool. The inherited transport is dropped unused, so envelopes that the master
    had queued are sent by the master only.
    """
    if exporter is None:
        return
    from raptorflow_otel.exporters import sentry_exporter as sentry_module

    # NOTE: these are SentryExporter internals. A reset method on SentryExporter would keep them
    # in one file.
    exporter._lock = threading.Lock()
    exporter._pending = sentry_module.PendingTraces(exporter._pending._max_traces)
    client = copy.copy(exporter._client)
    watch_transport = getattr(sentry_module, "watch_transport", None)
    if watch_transport is not None and client.transport is not None:
        watch_transport(client.transport)
    exporter._client = client
    if exporter.request_sessions is not None:
        sessions = exporter.request_sessions
        sessions._lock = threading.Lock()
        sessions._minutes.clear()
        sessions.dropped = 0


def drop_inherited_connections(telemetry: "Telemetry") -> None:
    """Close this process's copies of the OTLP/HTTP exporters' pooled connections."""
    for exporter in (*telemetry.span_exporters, *telemetry.metric_exporters):
        session = _requests_session(exporter)
        if session is not None:
            # Closing a copied socket leaves the master's connection open; the session opens new
            # connections on its next request.
            session.close()


def _requests_session(exporter: Any) -> Any:
    """Return the ``requests.Session`` of an OTLP/HTTP exporter, or None (gRPC, console)."""
    # opentelemetry-exporter-otlp-proto-http 1.45 keeps it in its client's transport.
    transport = getattr(getattr(exporter, "_client", None), "_transport", None)
    session = getattr(transport, "_session", None) or getattr(exporter, "_session", None)
    return session if hasattr(session, "close") else None


def reset_session_state(telemetry: "Telemetry") -> None:
    """Forget the master's tracked sessions in the child and give the tracker a new lock."""
    tracker = telemetry.session_tracker
    if tracker is None:
        return
    # NOTE: these are SessionTracker internals. A reset method on SessionTracker would keep them in
    # one file.
    tracker._lock = threading.Lock()
    tracker._sessions.clear()
    tracker._types_seen.clear()


def point_system_metrics_at_this_process() -> None:
    """Make the system-metrics instrumentation read this process instead of the master."""
    module = sys.modules.get("opentelemetry.instrumentation.system_metrics")
    if module is None:
        return
    # BaseInstrumentor subclasses are singletons, so this returns the installed instrumentor.
    instrumentor = module.SystemMetricsInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry and hasattr(instrumentor, "_proc"):
        import psutil

        instrumentor._proc = psutil.Process(os.getpid())


def keep_sigterm_flush_in_uvicorn_worker(flush: Callable[[], object]) -> None:
    """Install the SIGTERM flush again right after gunicorn's UvicornWorker resets its signals.

    ``UvicornWorker.init_signals`` sets SIGTERM to its default action. uvicorn then restores that
    action after its graceful shutdown and raises SIGTERM again, so the worker would die before
    ``atexit`` runs. The class is patched in this child only, and only UvicornWorker classes that
    gunicorn already imported are patched.
    """
    for module_name in UVICORN_WORKER_MODULES:
        worker_class = getattr(sys.modules.get(module_name), "UvicornWorker", None)
        init_signals = getattr(worker_class, "init_signals", None)
        if init_signals is None or getattr(init_signals, "_raptorflow_flush", False):
            continue

        def init_signals_then_flush(self: Any, _original: Callable[[Any], None] = init_signals) -> None:
            _original(self)
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                guarded(install_sigterm_flush, flush, what="SIGTERM flush in a gunicorn worker")

        init_signals_then_flush._raptorflow_flush = True  # type: ignore[attr-defined]
        worker_class.init_signals = init_signals_then_flush
