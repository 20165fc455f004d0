"""Flush telemetry when the process is stopped with SIGTERM.

The SDK flushes its providers from an ``atexit`` hook, but a process killed by a signal never runs
``atexit``. uvicorn (0.55) handles SIGTERM gracefully, then restores the handler that was there
before it started and raises the signal again, so the process dies by the signal and the last
batch of spans and metrics would be lost. The handler installed here is the one uvicorn restores:
it flushes, then restores the default action and raises the signal again, so the exit status
stays what it would have been.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

from raptorflow_otel.processors.guard import guarded

_logger = logging.getLogger(__name__)


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
