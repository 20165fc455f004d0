"""Session lifecycle in one process, and the session metrics for alert rules.

A session is ``created`` by its first request, ``active`` while requests keep coming, ``idle``
after ``idle_seconds`` without one, ``expired`` once ``ttl_seconds`` passed without a request,
and ``terminated`` when it is evicted to stay within ``max_sessions`` or the process stops. Expired
and terminated sessions are forgotten and counted in ``raptorflow.sessions.ended`` with their
reason, and their duration (first to last request) goes to ``raptorflow.session.duration``.

Each process counts only its own requests: with several workers, each counts the sessions that
reached it, and the metrics add up in the backend.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

__all__ = ["SessionTracker", "SessionState"]

CREATED, ACTIVE, IDLE = "created", "active", "idle"
EXPIRED, TERMINATED = "expired", "terminated"


@dataclass
class SessionState:
    """One session this process has seen."""

    session_type: str
    started: float
    last_seen: float
    state: str = CREATED
    errored: bool = False
    converted: bool = False


class SessionTracker:
    """Follows sessions by id (bounded, least recently seen evicted) and records their metrics."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 1800.0,
        idle_seconds: float = 300.0,
        max_sessions: int = 10000,
        conversion_routes: Iterable[str] = (),
        meter_provider: Any = None,  # noqa: ANN401 - an OpenTelemetry MeterProvider
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._idle = idle_seconds
        self._max = max_sessions
        self._conversions = frozenset(route.strip() for route in conversion_routes if route.strip())
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self._types_seen: set[str] = set()  # so the active gauge goes back to 0, not silent
        self._metrics = _SessionMetrics(meter_provider, self) if meter_provider is not None else None

    def observe(self, session_id: str, session_type: str, *, method: str = "", route: str = "", errored: bool = False) -> None:
        """Record one finished request of ``session_id``."""
        now = self._clock()
        ended: list[tuple[SessionState, str]] = []
        started = newly_errored = newly_converted = False
        with self._lock:
            state = self._sessions.get(session_id)
            if state is None:
                state = self._sessions[session_id] = SessionState(session_type, now, now)
                self._types_seen.add(session_type)
                started = True
                while len(self._sessions) > self._max:
                    _, evicted = self._sessions.popitem(last=False)
                    ended.append((evicted, TERMINATED))
            else:
                state.last_seen = now
                state.state = ACTIVE
                self._sessions.move_to_end(session_id)
            if errored and not state.errored:
                state.errored = newly_errored = True
            if not state.converted and (route in self._conversions or f"{method} {route}" in self._conversions):
                state.converted = newly_converted = True
        if self._metrics is not None:
            self._metrics.record(state.session_type, started, newly_errored, newly_converted, ended)

    def state_of(self, session_id: str) -> str | None:
        """Return the lifecycle state of a session still tracked, or None."""
        self.sweep()
        with self._lock:
            state = self._sessions.get(session_id)
            return state.state if state is not None else None

    def sweep(self) -> None:
        """Move sessions to idle or expired by the clock.

        The active-sessions gauge calls it at every metric collection, on the metric reader's
        thread, so requests never pay for a pass over the table.
        """
        with self._lock:
            ended = self._sweep_locked(self._clock())
        if self._metrics is not None and ended:
            self._metrics.record("", False, False, False, ended)

    def active_counts(self) -> dict[str, int]:
        """Return the number of created or active sessions by session type (0 for types seen before)."""
        self.sweep()
        with self._lock:
            counts = dict.fromkeys(self._types_seen, 0)
            for state in self._sessions.values():
                if state.state in (CREATED, ACTIVE):
                    counts[state.session_type] = counts.get(state.session_type, 0) + 1
        return counts

    def shutdown(self) -> None:
        """Terminate every tracked session (the process stops)."""
        with self._lock:
            ended = [(state, TERMINATED) for state in self._sessions.values()]
            self._sessions.clear()
        if self._metrics is not None and ended:
            self._metrics.record("", False, False, False, ended)

    def _sweep_locked(self, now: float) -> list[tuple[SessionState, str]]:
        ended = []
        for session_id in list(self._sessions):
            state = self._sessions[session_id]
            quiet = now - state.last_seen
            if quiet >= self._ttl:
                del self._sessions[session_id]
                state.state = EXPIRED
                ended.append((state, EXPIRED))
            elif quiet >= self._idle:
                state.state = IDLE
        return ended


class _SessionMetrics:
    def __init__(self, meter_provider: Any, tracker: SessionTracker) -> None:  # noqa: ANN401
        from opentelemetry.metrics import CallbackOptions, Observation

        meter = meter_provider.get_meter("raptorflow_otel.sessions")
        self._started = meter.create_counter("raptorflow.sessions.started", unit="{session}", description="Sessions seen for the first time.")
        self._ended = meter.create_counter("raptorflow.sessions.ended", unit="{session}", description="Sessions that expired or were terminated.")
        self._errored = meter.create_counter("raptorflow.sessions.errored", unit="{session}", description="Sessions with at least one failed request.")
        self._converted = meter.create_counter("raptorflow.sessions.converted", unit="{session}", description="Sessions that reached a conversion route.")
        self._duration = meter.create_histogram("raptorflow.session.duration", unit="s", description="Time from a session's first to its last request.")

        def active(options: CallbackOptions) -> list[Observation]:
            return [Observation(count, {"session.type": kind}) for kind, count in tracker.active_counts().items()]

        meter.create_observable_gauge("raptorflow.sessions.active", callbacks=[active], unit="{session}", description="Sessions created or active now.")

    def record(
        self, session_type: str, started: bool, errored: bool, converted: bool, ended: list[tuple[SessionState, str]]
    ) -> None:
        labels = {"session.type": session_type}
        if started:
            self._started.add(1, labels)
        if errored:
            self._errored.add(1, labels)
        if converted:
            self._converted.add(1, labels)
        for state, reason in ended:
            self._ended.add(1, {"session.type": state.session_type, "reason": reason})
            self._duration.record(state.last_seen - state.started, {"session.type": state.session_type})
