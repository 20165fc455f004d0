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

__all__ = ["scrub_event"]

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


def _walk_mapping(scrubber: "Scrubber", mapping: dict[str, Any], fired: list[str], *, top: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in mapping.items():
        if key in _KEPT_FIELDS and not (top and key == "user"):
            result[key] = value
            continue
        if key == "cookies" and value:
            fired.append(COOKIE)
            result[key] = marker(COOKIE)
            continue
        if key == "user" and isinstance(value, dict):
            result[key] = _walk_mapping(scrubber, value, fired)
            continue
        result[key] = _walk_keyed(scrubber, str(key), value, fired)
    return result


def _walk_keyed(scrubber: "Scrubber", key: str, value: Any, fired: list[str]) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    if isinstance(value, (str, int, float)):
        return scrubber.scrub_value(key, value, fired)
    rule = scrubber.key_rule(key)
    if rule is not None:
        fired.append(rule)
        return marker(rule)
    if isinstance(value, dict):
        return _walk_mapping(scrubber, value, fired)
    if isinstance(value, (list, tuple)):
        if key in _PAIR_FIELDS and all(_is_pair(item) for item in value):
            return [[name, _walk_keyed(scrubber, name, item, fired)] for name, item in value]
        return [_walk_keyed(scrubber, key, item, fired) for item in value]
    return value


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
