"""Session correlation: ``session.id``, ``session.type``, ``user.id`` and the Sentry replay id on every span of a request.

Span processors never see the request, so the request's headers are read where the instrumentation
hands them over: at context extraction. `SessionPropagator` is an extract-only propagator that the
distro adds to the global propagators. It stores a `SessionInfo` in the request's context, and
`SessionSpanProcessor` copies it onto every span started in that context (the server span, its DB
and client spans).

Sources, first match wins:

* ``session.id``: the session header (``X-Session-ID`` by default), else a pseudonym of the session
  cookie (the raw cookie value is a credential and is never recorded), else W3C baggage
  ``session.id``;
* ``user.id``: the user header (``X-User-ID`` by default), else baggage ``user.id``;
* ``session.type``: header ``X-Session-Type`` when it names one of the five types, else ``mobile``
  for a mobile user agent, ``web`` when a cookie was sent, ``api`` otherwise;
* the Sentry replay id: baggage ``sentry-replay_id``, set by Sentry's browser SDK while it records a
  session replay.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import unquote

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Getter, Setter, TextMapPropagator, default_getter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from raptorflow_otel.processors.categorize import is_exception_class_name
from raptorflow_otel.processors.guard import guarded
from raptorflow_otel.processors.release_health import RequestSessions
from raptorflow_otel.processors.session_tracker import SessionTracker

__all__ = ["SessionInfo", "SessionPropagator", "SessionSpanProcessor", "SESSION_TYPES"]

SESSION_TYPES = ("web", "api", "mobile", "system", "background")
SESSION_ID = "session.id"
SESSION_TYPE = "session.type"
USER_ID = "user.id"
REPLAY_ID = "sentry.replay_id"

_CONTEXT_KEY = context_api.create_key("raptorflow-session")
_MOBILE_AGENT = re.compile(r"Android|iPhone|iPad|iOS|CFNetwork|okhttp|Dalvik", re.IGNORECASE)
_REPLAY_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_ID_CHARS = 128


@dataclass(frozen=True)
class SessionInfo:
    """The session, user and replay ids that one request carries."""

    session_id: str | None
    session_type: str
    user_id: str | None
    replay_id: str | None

    def attributes(self) -> dict[str, str]:
        values = {SESSION_ID: self.session_id, SESSION_TYPE: self.session_type, USER_ID: self.user_id, REPLAY_ID: self.replay_id}
        return {key: value for key, value in values.items() if value}


class SessionPropagator(TextMapPropagator):
    """Extracts `SessionInfo` from request headers and baggage; injects nothing."""

    def __init__(
        self,
        *,
        session_header: str = "X-Session-ID",
        session_cookie: str | None = None,
        user_header: str = "X-User-ID",
        cookie_key: bytes | None = None,
    ) -> None:
        self._session_header = session_header.lower()
        self._session_cookie = session_cookie
        self._user_header = user_header.lower()
        # Without a key the cookie pseudonym is a plain hash: not reversible for a random session
        # cookie, and the same in every process so sessions still add up across workers.
        self._cookie_key = cookie_key

    def extract(self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter) -> Context:
        """Return ``context`` with the request's session and user, or unchanged if reading them fails."""
        extracted = guarded(self._extract, carrier, context, getter, what="SessionPropagator.extract")
        if extracted is not None:
            return extracted
        if context is not None:
            return context
        return context_api.get_current()

    def _extract(self, carrier: CarrierT, context: Context | None, getter: Getter[CarrierT]) -> Context:
        baggage = _baggage(_first(getter, carrier, "baggage"))
        cookie_value = self._cookie(getter, carrier)
        session_id = _clean(_first(getter, carrier, self._session_header))
        if session_id is None and cookie_value:
            session_id = self._cookie_pseudonym(cookie_value)
        if session_id is None:
            session_id = _clean(baggage.get("session.id"))
        user_id = _clean(_first(getter, carrier, self._user_header)) or _clean(baggage.get("user.id"))
        replay_id = baggage.get("sentry-replay_id")
        info = SessionInfo(
            session_id=session_id,
            session_type=self._session_type(getter, carrier, has_cookie=bool(_first(getter, carrier, "cookie"))),
            user_id=user_id,
            replay_id=replay_id if replay_id and _REPLAY_ID.fullmatch(replay_id) else None,
        )
        return context_api.set_value(_CONTEXT_KEY, info, context)

    def inject(self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = None) -> None:  # type: ignore[assignment]
        return None

    @property
    def fields(self) -> set[str]:
        return set()

    def _cookie(self, getter: Getter[CarrierT], carrier: CarrierT) -> str | None:
        if not self._session_cookie:
            return None
        for header in getter.get(carrier, "cookie") or ():
            try:
                cookies = SimpleCookie(header)
            except CookieError:
                continue
            morsel = cookies.get(self._session_cookie)
            if morsel is not None and morsel.value:
                return morsel.value
        return None

    def _cookie_pseudonym(self, value: str) -> str:
        data = value.encode("utf-8", "replace")
        if self._cookie_key:
            digest = hmac.new(self._cookie_key, data, hashlib.sha256).hexdigest()
        else:
            digest = hashlib.sha256(b"raptorflow-session-cookie\0" + data).hexdigest()
        return "cookie-" + digest[:32]

    def _session_type(self, getter: Getter[CarrierT], carrier: CarrierT, *, has_cookie: bool) -> str:
        declared = (_first(getter, carrier, "x-session-type") or "").strip().lower()
        if declared in SESSION_TYPES:
            return declared
        if _MOBILE_AGENT.search(_first(getter, carrier, "user-agent") or ""):
            return "mobile"
        return "web" if has_cookie else "api"


class SessionSpanProcessor(SpanProcessor):
    """Puts the request's `SessionInfo` on every span started in its context.

    With `RequestSessions`, it also counts each request's outcome for Sentry release health when
    the request's server span ends.
    """

    def __init__(self, request_sessions: RequestSessions | None = None, tracker: SessionTracker | None = None) -> None:
        self._request_sessions = request_sessions
        self._tracker = tracker

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        info = context_api.get_value(_CONTEXT_KEY, parent_context)
        if isinstance(info, SessionInfo):
            span.set_attributes(info.attributes())

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind is not SpanKind.SERVER or (self._request_sessions is None and self._tracker is None):
            return
        if span.parent is not None and not span.parent.is_remote:
            return  # not the request's outermost span in this process
        outcome = request_outcome(span)
        if self._request_sessions is not None:
            self._request_sessions.record(span.start_time or 0, outcome)
        attributes = span.attributes or {}
        session_id = attributes.get(SESSION_ID)
        if self._tracker is not None and session_id:
            self._tracker.observe(
                str(session_id),
                str(attributes.get(SESSION_TYPE, "api")),
                method=str(attributes.get("http.request.method", attributes.get("http.method", ""))),
                route=str(attributes.get("http.route", "")),
                errored=outcome != "exited",
            )

    def shutdown(self) -> None:
        if self._tracker is not None:
            self._tracker.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def request_outcome(span: ReadableSpan) -> str:
    """Return ``crashed`` (an exception escaped with a 5xx), ``errored`` or ``exited``."""
    attributes = span.attributes or {}
    status = attributes.get("http.response.status_code", attributes.get("http.status_code"))
    failed = span.status.status_code is StatusCode.ERROR or (isinstance(status, int) and status >= 500)
    # Contrib instrumentation records the exception as an event; FastAPI's native telemetry sets
    # ``error.type`` to the exception's class (and reports the exception in a log record).
    error_type = str(attributes.get("error.type", ""))
    raised = any(event.name == "exception" for event in span.events) or is_exception_class_name(error_type)
    if failed and raised:
        return "crashed"
    if failed or raised:
        return "errored"
    return "exited"


def _first(getter: Getter[CarrierT], carrier: CarrierT, name: str) -> str | None:
    values = getter.get(carrier, name)
    if not values:
        return None
    return values[0] if isinstance(values, (list, tuple)) else str(values)


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[:_MAX_ID_CHARS] or None


def _baggage(header: str | None) -> dict[str, str]:
    """Parse a W3C ``baggage`` header into a dict (entry properties dropped)."""
    entries: dict[str, str] = {}
    for item in (header or "").split(","):
        name, separator, value = item.split(";", 1)[0].partition("=")
        if separator and name.strip():
            entries[name.strip()] = unquote(value.strip())
    return entries
