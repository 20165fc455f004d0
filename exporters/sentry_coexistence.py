"""Living next to an app that calls ``sentry_sdk.init`` itself.

Many apps already initialize sentry-sdk, often with tracing on. Its FastAPI, Starlette and ASGI
integrations then report every request as a transaction and every unhandled request error as an
event, and so does this distro: the user would see each request twice. We add one event processor
to sentry-sdk's global scope. Every event captured through the app's own client passes it, because
sentry-sdk applies global-scope processors to all events (``Scope.apply_to_event`` in sentry-sdk 2.x).
It drops exactly the payloads that we send ourselves: server transactions (op ``http.server``)
and errors caught by those integrations. Everything else the app sends (logged errors, manual
captures, its own transactions of other kinds) passes unchanged.

Our exporter's client sends envelopes straight to its transport, never through a scope, so this
processor never receives our own events.

`install_scrubber` adds a second processor that runs the privacy scrubber over every event the
app's own client sends (frame variables, request data, headers, breadcrumbs), so the privacy
promise holds for those events too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raptorflow_otel.processors.scrubbing import Scrubber

# Mechanism types set by sentry-sdk's web integrations on the errors they catch.
DUPLICATED_MECHANISMS = frozenset({"asgi", "starlette", "fastapi"})
_installed = False
_scrubber: "Scrubber | None" = None


def drop_duplicates(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Event processor: return None for a payload this distro already reports, else the event."""
    if event.get("type") == "transaction":
        op = ((event.get("contexts") or {}).get("trace") or {}).get("op")
        return None if op == "http.server" else event
    for value in (event.get("exception") or {}).get("values") or ():
        mechanism = (value or {}).get("mechanism") or {}
        if mechanism.get("type") in DUPLICATED_MECHANISMS:
            return None
    return event


def install() -> None:
    """Register `drop_duplicates` on sentry-sdk's global scope, once per process."""
    global _installed
    if _installed:
        return
    import sentry_sdk

    sentry_sdk.get_global_scope().add_event_processor(drop_duplicates)
    _installed = True


def scrub(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Event processor: return the event scrubbed by the installed scrubber.

    A scrubber failure drops the event (fail closed); sentry-sdk treats None as "do not send".
    """
    scrubber = _scrubber
    if scrubber is None:
        return event
    from raptorflow_otel.processors.guard import guarded

    return guarded(scrubber.scrub_sentry_event, event, what="privacy scrubbing of a sentry-sdk event")


def install_scrubber(scrubber: "Scrubber") -> None:
    """Scrub every event of the app's own sentry-sdk client with ``scrubber`` (registered once)."""
    global _scrubber
    first = _scrubber is None
    _scrubber = scrubber
    if first:
        import sentry_sdk

        sentry_sdk.get_global_scope().add_event_processor(scrub)
