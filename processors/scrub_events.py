"""Scrubbing of Sentry event dicts made by sentry-sdk in an app that calls ``sentry_sdk.init`` itself.

The distro's own Sentry events are built from already scrubbed spans. Events of the app's own
sentry-sdk client are not: they can carry frame variables (sentry-sdk records local variables by
default), request bodies, headers, cookies, ``extra`` and breadcrumbs. `scrub_event` walks such an
event and applies the same key and value rules as for spans. Fields that hold ids, timestamps,
code locations or SDK metadata are left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raptorflow_otel.processors.scrub_keys import COOKIE
from raptorflow_otel.processors.scrub_values import marker

if TYPE_CHECKING:
    from raptorflow_otel.processors.scrubbing import Scrubber

__all__ = ["scrub_event", "scrub_mapping"]

# Fields whose values are ids, times, code locations or SDK data, never user data.
_KEPT_FIELDS = frozenset(
    {
        "event_id", "trace_id", "span_id", "parent_span_id", "timestamp", "start_timestamp", "type",
        "level", "platform", "logger", "release", "environment", "dist", "sdk", "modules",
        "debug_meta", "fingerprint", "transaction_info", "op", "origin", "status", "in_app",
        "lineno", "colno", "filename", "abs_path", "module", "function", "package", "thread_id",
        "handled", "exclusive_time", "mechanism", "server_name", "runtime", "os", "device",
        "sampled", "sample_rand", "trace", "measurements",
    }
)
# Fields that hold the app's own data: inside them no field name is trusted.
_USER_DATA_FIELDS = frozenset({"vars", "data", "extra", "request", "tags", "user", "logentry", "params"})
# Breadcrumb categories of database queries (sentry-sdk's SQLAlchemy and Django integrations).
_QUERY_CATEGORIES = frozenset({"query", "db", "sql"})
_PARAMETER_KEYS = frozenset({"db.params", "params", "parameters"})
# Pair lists (``[["Authorization", "Bearer ..."], ...]``) under these fields are keyed values.
_PAIR_FIELDS = frozenset({"headers", "cookies", "query_string", "data", "env"})


def scrub_event(scrubber: "Scrubber", event: dict[str, Any]) -> dict[str, Any]:
    """Return a scrubbed copy of ``event``; the input dict is not changed."""
    fired: list[str] = []
    user = event.get("user")
    address = None
    if isinstance(user, dict) and "ip_address" in user:
        address = user.get("ip_address")
        event = {**event, "user": {key: value for key, value in user.items() if key != "ip_address"}}
    result = _walk_mapping(scrubber, event, fired, top=True)
    if address and isinstance(result.get("user"), dict):
        _replace_user_address(scrubber, result["user"], str(address))
    return result


def _walk_mapping(
    scrubber: "Scrubber", mapping: dict[str, Any], fired: list[str], *, structural: bool = True, top: bool = False
) -> dict[str, Any]:
    """Scrub a dict. ``structural`` is true in the event's own fields, where `_KEPT_FIELDS` apply.

    Inside user data (frame variables, request data, ``extra``) a key named ``filename`` or
    ``status`` is the app's own and is scrubbed like any other.
    """
    result: dict[str, Any] = {}
    for key, value in mapping.items():
        if structural and key in _KEPT_FIELDS:
            result[key] = value
            continue
        if key == "cookies" and value and structural:
            fired.append(COOKIE)
            result[key] = marker(COOKIE)
            continue
        inner_structural = structural and key not in _USER_DATA_FIELDS
        if structural and key == "breadcrumbs":
            result[key] = _walk_breadcrumbs(scrubber, value, fired)
        elif top and key == "spans" and isinstance(value, list):
            result[key] = [_walk_span(scrubber, span, fired) for span in value]
        else:
            result[key] = _walk_keyed(scrubber, str(key), value, fired, structural=inner_structural)
    return result


def _walk_keyed(scrubber: "Scrubber", key: str, value: Any, fired: list[str], *, structural: bool) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "replace")
        scrubbed = scrubber.scrub_value(key, text, fired)
        return value if scrubbed == text else scrubbed
    if isinstance(value, (str, int, float)):
        return scrubber.scrub_value(key, value, fired)
    rule = scrubber.key_rule(key)
    if rule is not None:
        fired.append(rule)
        return marker(rule)
    if isinstance(value, dict):
        return _walk_mapping(scrubber, value, fired, structural=structural)
    if isinstance(value, (list, tuple)):
        if key in _PAIR_FIELDS and all(_is_pair(item) for item in value):
            return [[name, _walk_keyed(scrubber, name, item, fired, structural=False)] for name, item in value]
        if value and all(isinstance(item, str) for item in value):
            return list(scrubber.scrub_sequence(key, value, fired))  # an argv list keeps its flags' values apart
        return [_walk_keyed(scrubber, key, item, fired, structural=structural) for item in value]
    return value


def scrub_mapping(scrubber: "Scrubber", mapping: Any, fired: list[str]) -> dict[str, Any]:
    """Scrub a mapping of app data (an attribute value that is a dict) by key and value rules."""
    return _walk_mapping(scrubber, dict(mapping), fired, structural=False)


def _walk_breadcrumbs(scrubber: "Scrubber", breadcrumbs: Any, fired: list[str]) -> Any:
    """Scrub breadcrumbs; a database breadcrumb's message is SQL and its parameters are row values."""
    values = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else breadcrumbs
    if not isinstance(values, list):
        return _walk_keyed(scrubber, "breadcrumbs", breadcrumbs, fired, structural=False)
    scrubbed = []
    for crumb in values:
        if isinstance(crumb, dict) and crumb.get("category") in _QUERY_CATEGORIES:
            crumb = dict(crumb)
            if isinstance(crumb.get("message"), str):
                crumb["message"] = scrubber.scrub_value("db.statement", crumb["message"], fired)
            if isinstance(crumb.get("data"), dict):
                crumb["data"] = {
                    key: _filtered_parameters(fired) if key in _PARAMETER_KEYS else item
                    for key, item in crumb["data"].items()
                }
        scrubbed.append(_walk_keyed(scrubber, "breadcrumb", crumb, fired, structural=True))
    return {**breadcrumbs, "values": scrubbed} if isinstance(breadcrumbs, dict) else scrubbed


def _walk_span(scrubber: "Scrubber", span: Any, fired: list[str]) -> Any:
    """Scrub a transaction's span; a database span's description is its SQL statement."""
    if not isinstance(span, dict):
        return span
    description = span.get("description")
    if isinstance(description, str) and str(span.get("op", "")).startswith("db"):
        span = {**span, "description": scrubber.scrub_value("db.statement", description, fired)}
    return _walk_mapping(scrubber, span, fired)


def _filtered_parameters(fired: list[str]) -> str:
    fired.append("sql-parameters")
    return marker("sql-parameters")


def _is_pair(item: Any) -> bool:
    return isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)


def _replace_user_address(scrubber: "Scrubber", user: dict[str, Any], address: str) -> None:
    """Stand in for the dropped ``user.ip_address``: with a hash key, its pseudonym becomes the id.

    Sentry accepts only a real address in that field, so a marker there would be rejected, and
    ``{{auto}}`` would make Sentry fill in the client's address on its servers.
    """
    if address == "{{auto}}" or not scrubber.hashing:
        return
    pseudonym = scrubber.client_address_pseudonym(address)
    if pseudonym is not None and not user.get("id"):
        user["id"] = pseudonym
