"""Sentry release health for a server: request sessions aggregated per minute.

Sentry's server SDKs count each request as a session ("request mode") and send per-minute
aggregates: how many requests ended normally (``exited``), with a handled error (``errored``) or
with an unhandled one (``crashed``). Sentry derives the crash-free rate of a release from them.
`RequestSessions` keeps those counts; the Sentry exporter sends the finished minutes as a
``sessions`` envelope item. Counting happens when a request's server span ends, sampled or not,
so the rate covers every request.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timezone
from typing import Any

__all__ = ["RequestSessions", "STATUSES"]

STATUSES = ("exited", "errored", "crashed")
_NANOSECONDS_PER_MINUTE = 60_000_000_000


class RequestSessions:
    """Per-minute counts of request outcomes; at most ``max_minutes`` minutes are kept."""

    def __init__(self, max_minutes: int = 60) -> None:
        self._lock = threading.Lock()
        self._minutes: dict[int, Counter[str]] = {}
        self._max_minutes = max_minutes
        self.dropped = 0

    def record(self, start_time_ns: int, status: str) -> None:
        """Count one request that started at ``start_time_ns`` (Unix epoch, nanoseconds)."""
        minute = start_time_ns // _NANOSECONDS_PER_MINUTE
        with self._lock:
            counts = self._minutes.get(minute)
            if counts is None:
                if len(self._minutes) >= self._max_minutes:
                    oldest = min(self._minutes)
                    self.dropped += sum(self._minutes.pop(oldest).values())
                counts = self._minutes[minute] = Counter()
            counts[status] += 1

    def take(self, now_ns: int | None = None) -> list[dict[str, Any]]:
        """Remove and return the aggregates of finished minutes (all minutes when ``now_ns`` is None)."""
        with self._lock:
            if now_ns is None:
                minutes = sorted(self._minutes)
            else:
                current = now_ns // _NANOSECONDS_PER_MINUTE
                minutes = sorted(minute for minute in self._minutes if minute < current)
            removed = [(minute, self._minutes.pop(minute)) for minute in minutes]
        return [_aggregate(minute, counts) for minute, counts in removed]


def _aggregate(minute: int, counts: Counter[str]) -> dict[str, Any]:
    started = datetime.fromtimestamp(minute * 60, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:00Z")
    return {"started": started, **{status: counts[status] for status in STATUSES if counts[status]}}
