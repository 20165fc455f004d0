"""The privacy scrubber: one step of the span transform, and a pass over sentry-sdk events.

`Scrubber.scrub_span` returns a copy of a finished span in which secrets and personal data are
replaced by markers, in the span name, attributes, events, links and resource. It runs on the one
transformed copy that every exporter receives, so nothing unscrubbed reaches Sentry or OTLP. The
rules are documented for users in ``docs/privacy.md``: key rules live in `scrub_keys`, value rules
in `scrub_values`, user patterns in `scrub_patterns`.

Fail closed: when scrubbing one value raises, that value becomes ``[Filtered:scrub-error]`` and the
error is logged (rate-limited by the internal-error guard). The raw value never passes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.status import Status

from raptorflow_otel.processors import guard
from raptorflow_otel.processors.scrub_keys import COOKIE, SECRET_KEY, KeyRules
from raptorflow_otel.processors.scrub_patterns import compile_patterns
from raptorflow_otel.processors.scrub_values import BUILTIN_VALUE_RULES, ValueRules, marker
from raptorflow_otel.processors.span_copy import attribute_items, copy_span, raw_attributes
from raptorflow_otel.processors.sql import sanitize_sql

__all__ = ["Scrubber", "ScrubOptions", "RULE_NAMES", "SUMMARY_COUNT", "SUMMARY_RULES"]

SUMMARY_COUNT = "raptorflow.scrub.count"
SUMMARY_RULES = "raptorflow.scrub.rules"
SCRUB_ERROR = "scrub-error"

# Every rule a user can turn off with RAPTORFLOW_SCRUB_DISABLED_RULES.
RULE_NAMES = (SECRET_KEY, COOKIE, "sql-literal", "db-command-args", *BUILTIN_VALUE_RULES)

# Never scrubbed: ids the product needs, and our own summary.
_ALWAYS_SAFE_KEYS = frozenset(
    {
        "session.id", "session.type", "http.route", "http.request.method", "http.method",
        "http.response.status_code", "http.status_code", "db.system", "db.system.name",
        "exception.type", "exception.escaped", "otel.status_code", "otel.scope.name",
        "telemetry.sdk.name", "telemetry.sdk.language", "telemetry.sdk.version",
        "service.name", "service.version", "service.instance.id", "deployment.environment",
        "deployment.environment.name", SUMMARY_COUNT, SUMMARY_RULES,
        "error.category", "error.severity", "error.fingerprint",
    }
)
# Infrastructure addresses: the ip-address rule does not fire on these keys.
_INFRASTRUCTURE_KEYS = frozenset(
    {
        "server.address", "server.socket.address", "network.local.address", "host.ip", "host.name",
        "net.host.ip", "net.host.name", "net.sock.host.addr", "db.connection_string.host",
        "http.host", "http.server_name", "http.request.header.host",
    }
)
# Keys whose value is the client's address on a server span.
_CLIENT_ADDRESS_KEYS = frozenset(
    {"client.address", "http.client_ip", "client.socket.address", "net.peer.ip", "net.sock.peer.addr"}
)
_SERVER_PEER_KEYS = frozenset({"network.peer.address"})
_USER_ID_KEYS = frozenset({"user.id", "enduser.id"})
_HASHED_KEYS = _USER_ID_KEYS | _CLIENT_ADDRESS_KEYS | _SERVER_PEER_KEYS
_SQL_KEYS = frozenset({"db.statement", "db.query.text"})
_DB_SYSTEM_KEYS = ("db.system.name", "db.system")
_COMMAND_STORES = frozenset({"redis", "valkey", "memcached"})
# Redis commands whose subcommand is kept with the command (``CONFIG SET ?``).
_REDIS_CONTAINER_COMMANDS = frozenset({"CONFIG", "ACL", "CLIENT", "CLUSTER", "OBJECT", "MEMORY", "SCRIPT"})
# Redis commands that carry a password, recognized without ``db.system`` since no SQL statement
# starts like them.
_REDIS_SECRET_COMMAND = re.compile(
    r"\s*(?:AUTH\s|HELLO\s|MIGRATE\s.*\sAUTH2?\s|CONFIG\s+SET\s+(?:requirepass|masterauth)\s|ACL\s+SETUSER\s)",
    re.IGNORECASE | re.DOTALL,
)
_FLAG = re.compile(r"--?[A-Za-z][\w-]*")
_TRUNCATED = "...[truncated]"
_MAX_CACHED_KEYS = 4096
_MAX_CLEAN_TEXTS = 8192
_MAX_CLEAN_TEXT_CHARS = 512
# A key made of short dotted words cannot contain an address, token or card number, so its text
# skips the value rules (segments up to 14 letters, or 12 characters with digits).
_PLAIN_KEY = re.compile(r"(?:[A-Za-z_][A-Za-z_\-]{0,13}|[A-Za-z_][A-Za-z0-9_\-]{0,11})(?:\.(?:[A-Za-z_][A-Za-z_\-]{0,13}|[A-Za-z_][A-Za-z0-9_\-]{0,11}))*")
# Key profiles, see `Scrubber._profile`.
_SAFE = object()
_PLAIN = object()
_SPECIAL = object()


@dataclass(frozen=True)
class ScrubOptions:
    """Scrubber configuration; `from_settings` fills it from the ``RAPTORFLOW_SCRUB_*`` table rows."""

    disabled_rules: frozenset[str] = frozenset()
    extra_keys: tuple[str, ...] = ()
    extra_patterns: tuple[str, ...] = ()
    safe_keys: tuple[str, ...] = ()
    ip_addresses: bool = True
    hash_key: str | None = None
    max_value_chars: int = 32768

    @classmethod
    def from_settings(cls, settings: Any) -> "ScrubOptions":
        return cls(
            disabled_rules=frozenset(settings["RAPTORFLOW_SCRUB_DISABLED_RULES"]),
            extra_keys=tuple(settings["RAPTORFLOW_SCRUB_EXTRA_KEYS"]),
            extra_patterns=tuple(settings["RAPTORFLOW_SCRUB_EXTRA_PATTERNS"]),
            safe_keys=tuple(settings["RAPTORFLOW_SCRUB_SAFE_KEYS"]),
            ip_addresses=settings["RAPTORFLOW_SCRUB_IP_ADDRESSES"],
            hash_key=settings["RAPTORFLOW_SCRUB_HASH_KEY"],
            max_value_chars=settings["RAPTORFLOW_SCRUB_MAX_VALUE_CHARS"],
        )


class Scrubber:
    """Replaces secrets and personal data in spans and Sentry events (see the module docstring)."""

    def __init__(self, options: ScrubOptions | None = None) -> None:
        options = options or ScrubOptions()
        self.options = options
        disabled = set(options.disabled_rules)
        if not options.ip_addresses:
            disabled.add("ip-address")
        self._keys = KeyRules(options.extra_keys)
        self._key_rules = frozenset({SECRET_KEY, COOKIE} - disabled)
        self._sql = "sql-literal" not in disabled
        self._commands = "db-command-args" not in disabled
        self._values = ValueRules(
            self._keys,
            disabled=disabled,
            hash_key=options.hash_key.encode() if options.hash_key else None,
            custom_patterns=compile_patterns(options.extra_patterns) if options.extra_patterns else (),
        )
        self._safe_exact = _ALWAYS_SAFE_KEYS | {key for key in options.safe_keys if not key.endswith("*")}
        self._safe_prefixes = tuple(key[:-1] for key in options.safe_keys if key.endswith("*"))
        self._resource_cache: tuple[Resource, Resource, tuple[str, ...]] | None = None
        self._key_cache: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._key_profiles: dict[str, object] = {}
        # Strings that no rule fired on. Values repeat a lot (routes, methods, statements, user
        # agents), so a set lookup replaces the rules for them. Only short strings are kept.
        self._clean_texts: set[str] = set()
        self._clean_texts_without_ip: set[str] = set()
        self._clean_statements: set[str] = set()  # parameterized SQL: nothing to replace

    # -- spans ---------------------------------------------------------------------------------

    def scrub_span(self, span: ReadableSpan) -> ReadableSpan:
        """Return ``span`` itself when nothing fired, else a scrubbed copy with the summary attributes."""
        fired: list[str] = []
        name = self._text(span.name, fired)
        server = span.kind is SpanKind.SERVER
        stored = raw_attributes(span)
        attributes = self._attributes(stored, fired, server=server)
        events = self._events(span.events, fired, server=server)
        links = self._links(span.links, fired)
        status = self._status(span.status, fired)
        resource, resource_rules = self._resource(span.resource)
        fired.extend(resource_rules)
        if not fired:
            return span
        summary = attributes if attributes is not None else dict(attribute_items(stored))
        summary[SUMMARY_COUNT] = len(fired)
        summary[SUMMARY_RULES] = tuple(sorted(set(fired)))
        changes: dict[str, Any] = {"name": name, "attributes": summary, "resource": resource, "status": status}
        if events is not None:
            changes["events"] = events
        if links is not None:
            changes["links"] = links
        return copy_span(span, **changes)

    __call__ = scrub_span  # a SpanTransform step

    def scrub_attributes(
        self, attributes: Mapping[str, Any] | None, fired: list[str], *, server: bool = False
    ) -> dict[str, Any] | None:
        """Return scrubbed attributes, or None when nothing changed."""
        return self._attributes(attributes, fired, server=server)

    def _attributes(
        self, attributes: Mapping[str, Any] | None, fired: list[str], *, server: bool
    ) -> dict[str, Any] | None:
        if not attributes:
            return None
        before = len(fired)
        profiles = self._key_profiles
        clean = self._clean_texts
        result: dict[str, Any] = {}
        for key, value in attribute_items(attributes):
            profile = profiles.get(key)
            if profile is None:
                profile = self._profile(key)
            if profile is _SAFE:
                result[key] = value
                continue
            kind = type(value)
            try:
                if profile is _PLAIN:
                    # Fast path: an ordinary key, with a number, a string seen clean before, or a
                    # string that only the value rules look at. Sequences, bytes and mappings
                    # take the full path below.
                    if kind is str:
                        result[key] = value if value in clean else self._clean_or_scrubbed(self._bounded(value), fired)
                        continue
                    if kind is int or kind is float or kind is bool:
                        result[key] = value
                        continue
                result[self._key(key, fired)] = self.scrub_value(key, value, fired, attributes=attributes, server=server)
            except Exception as error:  # noqa: BLE001 - fail closed: the raw value must never pass
                if guard.RAISE_INTERNAL_ERRORS:
                    raise
                guard.report_internal_error("privacy scrubbing", error)
                fired.append(SCRUB_ERROR)
                result[marker(SCRUB_ERROR)] = marker(SCRUB_ERROR)
        return result if len(fired) > before else None

    def _profile(self, key: str) -> object:
        """Classify a key once: never scrubbed, ordinary, or needing the full path."""
        if key in self._safe_exact or (self._safe_prefixes and key.startswith(self._safe_prefixes)):
            profile = _SAFE
        elif (
            (_PLAIN_KEY.fullmatch(key) is None and self._key(key, []) != key)
            or self.key_rule(key) is not None
            or key in _SQL_KEYS
            or key in _INFRASTRUCTURE_KEYS
            or (self._values.hashing and key in _HASHED_KEYS)
        ):
            profile = _SPECIAL
        else:
            profile = _PLAIN
        if len(self._key_profiles) >= _MAX_CACHED_KEYS:
            self._key_profiles.clear()
        self._key_profiles[key] = profile
        return profile

    def _events(self, events: Sequence[Event], fired: list[str], *, server: bool) -> list[Event] | None:
        if not events:
            return None
        before = len(fired)
        result = []
        for event in events:
            name = self._text(event.name, fired)
            attributes = self._attributes(event.attributes, fired, server=server)
            if attributes is None and name == event.name:
                result.append(event)
            else:
                result.append(Event(name, attributes if attributes is not None else event.attributes, event.timestamp))
        return result if len(fired) > before else None

    def _links(self, links: Sequence[Link], fired: list[str]) -> list[Link] | None:
        if not links:
            return None
        before = len(fired)
        result = []
        for link in links:
            attributes = self._attributes(link.attributes, fired, server=False)
            result.append(link if attributes is None else Link(link.context, attributes))
        return result if len(fired) > before else None

    def _status(self, status: Status, fired: list[str]) -> Status:
        # The SDK sets "Type: message" as the description when an exception ends a span, and
        # OTLP exports it, so it is scrubbed like an exception message.
        if not status.description:
            return status
        description = self._text(status.description, fired)
        return status if description == status.description else Status(status.status_code, description)

    def scrub_resource(self, resource: Resource) -> Resource:
        """Return ``resource`` with scrubbed attributes (the same object when nothing fired)."""
        return self._resource(resource)[0]

    def _resource(self, resource: Resource | None) -> tuple[Resource | None, tuple[str, ...]]:
        """Return the scrubbed resource and the rules that fired on it (cached for the last resource)."""
        if resource is None:
            return None, ()
        cached = self._resource_cache
        if cached is not None and cached[0] is resource:
            return cached[1], cached[2]
        fired: list[str] = []
        scrubbed = self._attributes(resource.attributes, fired, server=False)
        result = resource if scrubbed is None else Resource(scrubbed, resource.schema_url)
        self._resource_cache = (resource, result, tuple(fired))  # one resource per provider
        return result, tuple(fired)

    # -- one value -------------------------------------------------------------------------------

    def _key(self, key: str, fired: list[str]) -> str:
        """Scrub an attribute key by the value rules (a key holding an address or a token)."""
        cached = self._key_cache.get(key)
        if cached is None:
            rules: list[str] = []
            cached = (self._text(key, rules), tuple(rules))
            if len(self._key_cache) >= _MAX_CACHED_KEYS:
                self._key_cache.clear()  # keys have low cardinality; a full cache means not here
            self._key_cache[key] = cached
        fired.extend(cached[1])
        return cached[0]

    def scrub_value(
        self,
        key: str,
        value: Any,
        fired: list[str],
        *,
        attributes: Mapping[str, Any] | None = None,
        server: bool = False,
    ) -> Any:
        """Return the scrubbed form of one attribute value; append the rules that fired to ``fired``."""
        if key in self._safe_exact or (self._safe_prefixes and key.startswith(self._safe_prefixes)):
            return value
        if self._values.hashing and key in _USER_ID_KEYS and value not in (None, ""):
            fired.append("user-id")
            return self._values.pseudonym("user-id", str(value))
        rule = self._keys.rule_for(key)
        if rule is not None and rule in self._key_rules:
            fired.append(rule)
            if isinstance(value, (tuple, list)):
                return tuple(marker(rule) for _ in value) or (marker(rule),)
            return marker(rule)
        if isinstance(value, str):
            return self._string(key, value, fired, attributes, server)
        if isinstance(value, (tuple, list)) and any(isinstance(item, (str, bytes, bytearray)) for item in value):
            return self.scrub_sequence(key, value, fired, attributes=attributes, server=server)
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value).decode("utf-8", "replace")
            scrubbed = self._string(key, text, fired, attributes, server)
            return value if scrubbed == text else scrubbed
        if isinstance(value, Mapping):
            from raptorflow_otel.processors.scrub_events import scrub_mapping

            return scrub_mapping(self, value, fired)
        return value  # numbers and booleans under an ordinary key are kept

    def scrub_sequence(
        self,
        key: str,
        items: Sequence[Any],
        fired: list[str],
        *,
        attributes: Mapping[str, Any] | None = None,
        server: bool = False,
    ) -> tuple[Any, ...]:
        """Scrub each item; in an argument list, the item after a secret flag (``--password``) too."""
        result = []
        secret_next = False
        for item in items:
            if isinstance(item, (bytes, bytearray)):
                item = self.scrub_value(key, item, fired, attributes=attributes, server=server)
            if not isinstance(item, str):
                result.append(item)
                secret_next = False
                continue
            if secret_next and "secret-assignment" in self._values.enabled:
                fired.append("secret-assignment")
                result.append(marker("secret-assignment"))
                secret_next = False
                continue
            result.append(self._string(key, item, fired, attributes, server))
            secret_next = _FLAG.fullmatch(item) is not None and self._keys.rule_for(item.lstrip("-")) is not None
        return tuple(result)

    def _string(
        self, key: str, value: str, fired: list[str], attributes: Mapping[str, Any] | None, server: bool
    ) -> str:
        value = self._bounded(value)
        if key in _SQL_KEYS:
            return self._sql_text(value, fired, attributes)
        if (
            self._values.hashing
            and "ip-address" in self._values.enabled
            and (key in _CLIENT_ADDRESS_KEYS or (server and key in _SERVER_PEER_KEYS))
        ):
            pseudonym = self._client_address(value)
            if pseudonym is not None:
                fired.append("ip-address")
                return pseudonym
        return self._clean_or_scrubbed(value, fired, allow_ip=key not in _INFRASTRUCTURE_KEYS)

    def _sql_text(self, statement: str, fired: list[str], attributes: Mapping[str, Any] | None) -> str:
        """Sanitize a statement, then run the value rules that apply to SQL over what is left."""
        if statement in self._clean_statements:
            return statement
        before = len(fired)
        result = self._values.scrub_text(self._statement(statement, fired, attributes), fired)
        if len(fired) == before and len(statement) <= _MAX_CLEAN_TEXT_CHARS * 4:
            if len(self._clean_statements) >= _MAX_CLEAN_TEXTS:
                self._clean_statements.clear()
            self._clean_statements.add(statement)
        return result

    def _clean_or_scrubbed(self, text: str, fired: list[str], *, allow_ip: bool = True) -> str:
        # A text clean with the ip-address rule is clean without it too, not the other way round.
        clean = self._clean_texts if allow_ip else self._clean_texts_without_ip
        if text in clean or text in self._clean_texts:
            return text
        before = len(fired)
        result = self._values.scrub_text(text, fired, allow_ip=allow_ip)
        if len(fired) == before and len(text) <= _MAX_CLEAN_TEXT_CHARS:
            if len(clean) >= _MAX_CLEAN_TEXTS:
                clean.clear()
            clean.add(text)
        return result

    def _text(self, text: str, fired: list[str]) -> str:
        """Scrub a name or free text by the value rules only."""
        if not text:
            return text
        try:
            return self._clean_or_scrubbed(self._bounded(text), fired)
        except Exception as error:  # noqa: BLE001 - fail closed, as in _attributes
            if guard.RAISE_INTERNAL_ERRORS:
                raise
            guard.report_internal_error("privacy scrubbing", error)
            fired.append(SCRUB_ERROR)
            return marker(SCRUB_ERROR)

    def _bounded(self, value: str) -> str:
        limit = self.options.max_value_chars
        return value if len(value) <= limit else value[:limit] + _TRUNCATED

    def _statement(self, statement: str, fired: list[str], attributes: Mapping[str, Any] | None) -> str:
        system = ""
        for system_key in _DB_SYSTEM_KEYS:
            if attributes and attributes.get(system_key):
                system = str(attributes[system_key]).lower()
                break
        if system in _COMMAND_STORES or _REDIS_SECRET_COMMAND.match(statement) is not None:
            if not self._commands:
                return statement
            sanitized = _command_without_arguments(statement)
            if sanitized != statement:
                fired.append("db-command-args")
            return sanitized
        if not self._sql:
            return statement
        sanitized = sanitize_sql(statement, system or None)
        if sanitized != statement:
            fired.append("sql-literal")
        return sanitized

    @property
    def hashing(self) -> bool:
        """True when ``RAPTORFLOW_SCRUB_HASH_KEY`` is set and pseudonyms replace filtering."""
        return self._values.hashing

    def key_rule(self, key: str) -> str | None:
        """Return the enabled key rule that makes ``key``'s value secret, or None."""
        rule = self._keys.rule_for(key)
        return rule if rule in self._key_rules else None

    def client_address_pseudonym(self, value: str) -> str | None:
        """Return the keyed pseudonym of an IP address, or None when ``value`` is not one."""
        return self._client_address(value)

    def _client_address(self, value: str) -> str | None:
        try:
            address = ipaddress.ip_address(value.strip("[]").split("%", 1)[0])
        except ValueError:
            return None
        return self._values.pseudonym("ip-address", str(address))

    # -- Sentry events -------------------------------------------------------------------------

    def scrub_sentry_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Scrub a Sentry event dict built by sentry-sdk (frame variables, request, extra, ...)."""
        from raptorflow_otel.processors.scrub_events import scrub_event

        return scrub_event(self, event)


def _command_without_arguments(statement: str) -> str:
    """Keep a key-value store command (and a container command's subcommand); arguments become ``?``."""
    lines = []
    for line in statement.splitlines() or [statement]:
        words = line.split()
        if not words:
            continue
        keep = 2 if words[0].upper() in _REDIS_CONTAINER_COMMANDS and len(words) > 1 else 1
        lines.append(" ".join(words[:keep] + ["?"] * (len(words) - keep)))
    return "\n".join(lines)
