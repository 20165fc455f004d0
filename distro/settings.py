"""The one typed table of every environment variable the product reads.

Each row names the variable, how its text is parsed, its default and what it does. `load_settings`
reads a plain mapping (``os.environ`` by default, a dict in tests) once at start-up. A value that
does not parse logs one WARNING naming the variable, the value (masked when secret), the expected
form and the fallback, and the fallback is used: a typo never stops the app.

``OTEL_*`` rows follow the OpenTelemetry specification ("Environment Variable Specification" and
"OTLP Exporter Configuration"). The distro reads them and passes the parsed values on. It never
writes them back into the environment, so a value the user set is never overridden.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

_logger = logging.getLogger(__name__)


class InvalidSetting(ValueError):
    """Raised by a parser; the message is the expected form, e.g. "a number from 0 to 1"."""


# Parsers. Each takes the stripped text and returns the typed value or raises InvalidSetting.

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidSetting("true or false")


def parse_ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidSetting("a number from 0 to 1") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidSetting("a number from 0 to 1")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidSetting("a positive whole number") from None
    if value <= 0:
        raise InvalidSetting("a positive whole number")
    return value


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


_EXPORTER_NAMES = ("otlp", "console", "none")


def parse_exporters(text: str) -> tuple[str, ...]:
    names = tuple(name.lower() for name in parse_list(text))
    unknown = [name for name in names if name not in _EXPORTER_NAMES]
    if unknown or not names:
        raise InvalidSetting("a comma-separated list of " + ", ".join(_EXPORTER_NAMES))
    return names


def parse_http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSetting("an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise InvalidSetting("an http:// or https:// URL with a numeric port") from None
    return text


def parse_dsn(text: str) -> str:
    """Check a Sentry DSN: ``scheme://public_key@host[:port]/[path/]project_id``."""
    from sentry_sdk.utils import BadDsn, Dsn

    try:
        Dsn(text)
    except BadDsn:
        raise InvalidSetting("a Sentry DSN such as https://<public key>@<host>/<project id>") from None
    return text


def parse_spotlight(text: str) -> str | None:
    """Return the Spotlight sidecar URL, or None when Spotlight is off.

    ``SENTRY_SPOTLIGHT`` is a boolean or a URL, as in every Sentry SDK. ``true`` means the
    sidecar's default address.
    """
    lowered = text.lower()
    if lowered in _FALSE:
        return None
    if lowered in _TRUE:
        return DEFAULT_SPOTLIGHT_URL
    try:
        return parse_http_url(text)
    except InvalidSetting:
        raise InvalidSetting("true, false or the sidecar's http:// URL") from None


def parse_scrub_rules(text: str) -> tuple[str, ...]:
    from raptorflow_otel.processors.scrubbing import RULE_NAMES

    names = tuple(name.lower() for name in parse_list(text))
    if not names or any(name not in RULE_NAMES for name in names):
        raise InvalidSetting("a comma-separated list of rule names: " + ", ".join(RULE_NAMES))
    return names


def parse_scrub_patterns(text: str) -> tuple[str, ...]:
    """Check user patterns now, so a bad one is reported at start-up and never at a request."""
    from raptorflow_otel.processors.scrub_patterns import PatternError, compile_patterns, split_patterns

    patterns = split_patterns(text)
    try:
        compile_patterns(patterns)
    except PatternError as error:
        raise InvalidSetting(str(error)) from None
    return patterns


def parse_error_categories(text: str) -> dict[str, str]:
    from raptorflow_otel.processors.error_categories import CATEGORIES, parse_category_overrides

    try:
        return parse_category_overrides(text)
    except ValueError:
        raise InvalidSetting(
            "comma-separated module.Class=category pairs, with a category among " + ", ".join(CATEGORIES)
        ) from None


def parse_hash_key(text: str) -> str:
    if len(text) < MIN_HASH_KEY_CHARS:
        raise InvalidSetting(f"a secret of at least {MIN_HASH_KEY_CHARS} characters")
    return text


MIN_HASH_KEY_CHARS = 16


# HTTP token characters (RFC 9110, section 5.6.2). Header names are tokens, and so are cookie
# names (RFC 6265, section 4.1.1) and the keys of OTLP exporter headers.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_CHARACTERS = "letters, digits and !#$%&'*+-.^_`|~"


def _has_control_character(text: str) -> bool:
    return any(unicodedata.category(character) == "Cc" for character in text)


def parse_service_name(text: str) -> str:
    """Check a service name: any text without control characters such as newlines or tabs."""
    if _has_control_character(text):
        raise InvalidSetting("a service name without control characters such as newlines or tabs")
    return text


def parse_resource_attributes(text: str) -> str:
    """Check ``key=value`` pairs separated by commas, and return the text for the SDK to parse."""
    for pair in text.split(","):
        key, separator, _value = pair.partition("=")
        if not separator or not key.strip():
            raise InvalidSetting("comma-separated key=value pairs, such as team=shop,region=eu-west-1")
    return text


def _is_otlp_header_value(value: str) -> bool:
    # Values are URL-encoded: printable ASCII without '"', ',', ';' or '\'. The Python exporter
    # also accepts spaces, so they are allowed here too.
    return all(" " <= character <= "~" and character not in '",;\\' for character in value)


def parse_otlp_headers(text: str) -> str:
    """Check ``name=value`` pairs separated by commas, as the OTLP exporter parses them.

    The exporter reads the variable itself, skips empty items, and drops (with its own warning)
    a pair whose name is not an HTTP token or whose value is not URL-encoded.
    """
    for pair in text.split(","):
        if not pair.strip():
            continue
        name, separator, value = pair.partition("=")
        if not separator or not _TOKEN.fullmatch(name.strip()) or not _is_otlp_header_value(value.strip()):
            raise InvalidSetting(
                "comma-separated name=value pairs with URL-encoded values, such as api-key=abc123"
            )
    return text


def _installed_propagators() -> set[str]:
    from importlib.metadata import entry_points

    return {entry_point.name for entry_point in entry_points(group="opentelemetry_propagator")}


def parse_propagators(text: str) -> tuple[str, ...]:
    """Check propagator names against the installed ``opentelemetry_propagator`` entry points.

    The OpenTelemetry API loads ``OTEL_PROPAGATORS`` when it is first imported and raises
    ValueError on a name that no installed package provides. Names are case-sensitive, and an
    empty item counts as a name. ``none`` turns propagation off and must stand alone.
    """
    names = tuple(name.strip() for name in text.split(","))
    if len(names) == 1 and names[0].lower() == "none":
        return ("none",)
    installed = _installed_propagators()
    if any(name not in installed for name in names):
        raise InvalidSetting(
            "none, or a comma-separated list of installed propagators: " + ", ".join(sorted(installed))
        )
    return names


# Entry-point names as packaging recommends them (letters, digits, '_', '.', '-').
_ENTRY_POINT_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def parse_entry_point_name(text: str) -> str:
    """Check the name of an entry point, such as ``raptorflow`` for this distro."""
    if not _ENTRY_POINT_NAME.fullmatch(text):
        raise InvalidSetting("an entry-point name such as raptorflow: letters, digits, '_', '.' or '-'")
    return text


def parse_instrumentation_names(text: str) -> tuple[str, ...]:
    """Check instrumentation entry-point names separated by commas, or ``*`` for all of them."""
    names = parse_list(text)
    if not names or any(name != "*" and not _ENTRY_POINT_NAME.fullmatch(name) for name in names):
        raise InvalidSetting("comma-separated instrumentation names such as fastapi,httpx, or *")
    return names


# Values that OpenTelemetry's configuration model lists for the opt-in, plus
# gen_ai_latest_experimental. The Python instrumentations 0.66b2 act on the http, database and
# gen_ai values only.
_SEMCONV_OPT_INS = (
    "http",
    "http/dup",
    "database",
    "database/dup",
    "messaging",
    "messaging/dup",
    "rpc",
    "rpc/dup",
    "code",
    "code/dup",
    "gen_ai_latest_experimental",
)


def parse_semconv_opt_in(text: str) -> tuple[str, ...]:
    """Check semantic-convention opt-in values, which instrumentations compare case-sensitively."""
    values = parse_list(text)
    if not values or any(value not in _SEMCONV_OPT_INS for value in values):
        raise InvalidSetting("comma-separated values among " + ", ".join(_SEMCONV_OPT_INS))
    return values


_MAX_SENTRY_ENVIRONMENT_BYTES = 64
_MAX_SENTRY_RELEASE_BYTES = 200


def _has_sentry_bad_character(text: str) -> bool:
    # Relay (sentry-relay 0.10.1) rejects ASCII control characters, '/' and '\' in releases and
    # environments. C1 control characters (U+0080 to U+009F) are rejected here too.
    return _has_control_character(text) or "/" in text or "\\" in text


def parse_sentry_environment(text: str) -> str:
    """Check an environment name as Sentry accepts it.

    Sentry's documentation: no newlines, spaces or forward slashes, not ``None``, at most 64
    characters. Relay also rejects '\\', ``.`` and ``..``, ignores case for ``none`` and counts
    the 64 in UTF-8 bytes. An event with a rejected environment arrives without one.
    """
    if (
        _has_sentry_bad_character(text)
        or any(character.isspace() for character in text)
        or text.lower() in (".", "..", "none")
        or len(text.encode()) > _MAX_SENTRY_ENVIRONMENT_BYTES
    ):
        raise InvalidSetting(
            "an environment name such as staging: at most 64 bytes, without spaces, '/' or '\\', "
            "and not None"
        )
    return text


def parse_sentry_release(text: str) -> str:
    """Check a release name as Relay (sentry-relay 0.10.1) accepts it.

    Relay rejects control characters, '/' and '\\', the names ``.``, ``..`` and ``latest`` in
    any case, and names longer than 200 bytes in UTF-8. Such a release is dropped from events.
    """
    if (
        _has_sentry_bad_character(text)
        or text.lower() in (".", "..", "latest")
        or len(text.encode()) > _MAX_SENTRY_RELEASE_BYTES
    ):
        raise InvalidSetting(
            "a release name such as shop@1.2.3: at most 200 bytes, without '/', '\\' or control "
            "characters, and not latest"
        )
    return text


def parse_module_prefixes(text: str) -> tuple[str, ...]:
    """Check dotted Python module names separated by commas."""
    names = parse_list(text)
    if not names or any(not all(part.isidentifier() for part in name.split(".")) for name in names):
        raise InvalidSetting("comma-separated module names such as myapp,mycompany.billing")
    return names


def parse_header_name(text: str) -> str:
    """Check an HTTP header name: one token, such as ``X-Session-ID``."""
    if not _TOKEN.fullmatch(text):
        raise InvalidSetting(f"an HTTP header name such as X-Request-ID: {_TOKEN_CHARACTERS}")
    return text


def parse_cookie_name(text: str) -> str:
    """Check a cookie name: one HTTP token, such as ``sessionid``."""
    if not _TOKEN.fullmatch(text):
        raise InvalidSetting(f"a cookie name such as sessionid: {_TOKEN_CHARACTERS}")
    return text


def parse_key_words(text: str) -> tuple[str, ...]:
    """Check secret key names or words. Each needs a letter or digit, and ``*`` is not a wildcard."""
    keys = parse_list(text)
    if not keys or any(
        not any(character.isalnum() for character in key) or "*" in key or _has_control_character(key)
        for key in keys
    ):
        raise InvalidSetting("comma-separated key names or words such as dob,maiden_name, without *")
    return keys


_ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def parse_safe_keys(text: str) -> tuple[str, ...]:
    """Check attribute keys that are never scrubbed, where a trailing ``*`` makes a key a prefix.

    ``*`` alone would turn scrubbing off for every key, so it is rejected.
    """
    keys = parse_list(text)
    stems = [key[:-1] if key.endswith("*") else key for key in keys]
    if not keys or any(not _ATTRIBUTE_KEY.fullmatch(stem) for stem in stems):
        raise InvalidSetting(
            "comma-separated attribute keys such as http.route,app.*: letters, digits, '_', '.' "
            "or '-', with an optional trailing * (not * alone)"
        )
    return keys


# An optional upper-case method, one space, then a route template starting with "/".
_CONVERSION_ROUTE = re.compile(r"(?:[A-Z]+ )?/\S*")


def parse_conversion_routes(text: str) -> tuple[str, ...]:
    """Check routes separated by commas, each ``[METHOD ]/path`` as in span names."""
    routes = parse_list(text)
    if not routes or any(not _CONVERSION_ROUTE.fullmatch(route) for route in routes):
        raise InvalidSetting(
            "comma-separated route templates with an optional upper-case method, such as "
            "POST /checkout/{product_id},/orders/{order_id}/paid"
        )
    return routes


def one_of(*choices: str) -> Callable[[str], str]:
    allowed = {choice.lower(): choice for choice in choices}

    def parse_choice(text: str) -> str:
        try:
            return allowed[text.lower()]
        except KeyError:
            raise InvalidSetting("one of " + ", ".join(choices)) from None

    parse_choice.__doc__ = "one of " + ", ".join(choices)
    return parse_choice


DEFAULT_SPOTLIGHT_URL = "http://localhost:8969/stream"

_OTLP_PROTOCOLS = ("http/protobuf", "grpc")
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, parser, default (already typed) and documentation."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str
    secret: bool = False
    # Shown in the generated table; the parsers' names are not meant for users.
    kind: str = "text"
    # What other software that reads the same variable does with a value this table rejects. It
    # is appended to the warning, because the fallback applies only to this distro.
    read_elsewhere: str = ""


def _rows() -> list[Setting]:
    otlp_signals = ("TRACES", "METRICS", "LOGS")
    rows = [
        # OpenTelemetry SDK
        Setting("OTEL_SDK_DISABLED", parse_bool, False, "Turn all telemetry off; the app runs uninstrumented.", kind="bool"),
        Setting("OTEL_SERVICE_NAME", parse_service_name, None, "`service.name` resource attribute. Unset: the SDK's `unknown_service`, or the value in `OTEL_RESOURCE_ATTRIBUTES`; also used as Sentry's `server_name` fallback.", read_elsewhere="The OpenTelemetry SDK reads it too and still uses it as `service.name`."),
        Setting("OTEL_RESOURCE_ATTRIBUTES", parse_resource_attributes, None, "Extra resource attributes, `key=value` pairs separated by commas (read by the OpenTelemetry SDK).", kind="pairs", read_elsewhere="The OpenTelemetry SDK reads it too: it logs and skips each item without `=` and keeps the others."),
        Setting("OTEL_TRACES_SAMPLER", one_of(*_SAMPLERS), None, "Sampler for traces. Unset: a parent-based ratio sampler at `SENTRY_TRACES_SAMPLE_RATE`.", kind="choice"),
        Setting("OTEL_TRACES_SAMPLER_ARG", parse_ratio, None, "Ratio for the `traceidratio` and `parentbased_traceidratio` samplers. Unset: 1.0.", kind="ratio"),
        Setting("OTEL_TRACES_EXPORTER", parse_exporters, None, "Span exporters, comma-separated: `otlp`, `console`, `none`. Unset: `otlp` when an OTLP endpoint is set, else none.", kind="list"),
        Setting("OTEL_METRICS_EXPORTER", parse_exporters, None, "Metric exporters: `otlp`, `console`, `none`. Unset: `otlp` when an OTLP endpoint is set, else none.", kind="list"),
        Setting("OTEL_LOGS_EXPORTER", parse_exporters, None, "Log exporters: `otlp`, `console`, `none`. Unset: none (log records are used only to report FastAPI's exceptions to Sentry).", kind="list"),
        Setting("OTEL_EXPORTER_OTLP_ENDPOINT", parse_http_url, None, "Base URL of the OTLP receiver (a Collector). For http/protobuf the signal paths `/v1/traces`, `/v1/metrics`, `/v1/logs` are appended.", kind="url"),
        Setting("OTEL_EXPORTER_OTLP_PROTOCOL", one_of(*_OTLP_PROTOCOLS), "http/protobuf", "OTLP transport: `http/protobuf` or `grpc` (gRPC needs `pip install raptorflow-otel[grpc]`).", kind="choice"),
        Setting("OTEL_EXPORTER_OTLP_HEADERS", parse_otlp_headers, None, "Headers sent with every OTLP request, `key=value` pairs separated by commas (read by the OTLP exporter).", secret=True, kind="pairs", read_elsewhere="The OTLP exporter reads it too: it logs and skips each malformed header and sends the others."),
        Setting("OTEL_EXPORTER_OTLP_TIMEOUT", positive_int, 10000, "Timeout of one OTLP export, in milliseconds.", kind="int"),
        Setting("OTEL_EXPORTER_OTLP_COMPRESSION", one_of("gzip", "none"), None, "Compression of OTLP requests: `gzip` or `none` (read by the OTLP exporter).", kind="choice"),
    ]
    for signal in otlp_signals:
        lower = signal.lower()
        rows.append(Setting(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", parse_http_url, None, f"Full URL for {lower} (used as is, no path appended). Overrides `OTEL_EXPORTER_OTLP_ENDPOINT` for {lower}.", kind="url"))
        rows.append(Setting(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", one_of(*_OTLP_PROTOCOLS), None, f"OTLP transport for {lower}. Unset: `OTEL_EXPORTER_OTLP_PROTOCOL`.", kind="choice"))
    rows += [
        Setting("OTEL_PROPAGATORS", parse_propagators, None, "Context propagators, by entry-point name (`tracecontext`, `baggage`, `sentry` or one from another installed package), or `none`. Unset: `tracecontext,baggage,sentry` (W3C trace context and baggage, plus Sentry's `sentry-trace`).", kind="list", read_elsewhere="Under opentelemetry-instrument, a name that no installed package provides stops the app at start-up, before this distro runs."),
        Setting("OTEL_BSP_SCHEDULE_DELAY", positive_int, 5000, "Delay between two span exports, in milliseconds.", kind="int"),
        Setting("OTEL_BSP_EXPORT_TIMEOUT", positive_int, 30000, "Max time of one span export, in milliseconds.", kind="int"),
        Setting("OTEL_BSP_MAX_QUEUE_SIZE", positive_int, 2048, "Max spans waiting for export; more are dropped.", kind="int"),
        Setting("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", positive_int, 512, "Max spans in one export.", kind="int"),
        Setting("OTEL_METRIC_EXPORT_INTERVAL", positive_int, 60000, "Interval between two metric exports, in milliseconds.", kind="int"),
        Setting("OTEL_METRIC_EXPORT_TIMEOUT", positive_int, 30000, "Max time of one metric export, in milliseconds.", kind="int"),
        Setting("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", parse_instrumentation_names, (), "Instrumentations to skip, by entry-point name (`fastapi`, `sqlalchemy`, `httpx`, `system_metrics`, ...), or `*` for all.", kind="list", read_elsewhere="opentelemetry-instrument reads it too and still skips each instrumentation whose exact name is an item of the list."),
        Setting("OTEL_SEMCONV_STABILITY_OPT_IN", parse_semconv_opt_in, (), "Semantic-convention opt-in: `http`, `http/dup`, `database`, `database/dup` (and the `messaging`, `rpc`, `code` and `gen_ai_latest_experimental` values that other instrumentations read).", kind="list", read_elsewhere="The contrib instrumentations read it too and still apply the values they know."),
        Setting("OTEL_PYTHON_DISTRO", parse_entry_point_name, None, "Distro used by `opentelemetry-instrument`; set `raptorflow` when another distro is installed too.", kind="name", read_elsewhere="opentelemetry-instrument reads it too, finds no distro of that name and runs its default distro instead of this one."),
        Setting("OTEL_PYTHON_CONFIGURATOR", parse_entry_point_name, None, "Configurator used by `opentelemetry-instrument`; set `raptorflow` when another distro is installed too.", kind="name", read_elsewhere="opentelemetry-instrument reads it too and loads no configurator, so no telemetry is exported."),
        # Sentry, with the names every Sentry SDK uses
        Setting("SENTRY_DSN", parse_dsn, None, "Sentry project DSN. Unset: nothing is sent to Sentry.", secret=True, kind="DSN"),
        Setting("SENTRY_ENVIRONMENT", parse_sentry_environment, "production", "`environment` of every Sentry event: at most 64 bytes, without spaces, `/` or `\\`, and not `None`.", kind="name"),
        Setting("SENTRY_RELEASE", parse_sentry_release, None, "`release` of every Sentry event, e.g. a version or commit: at most 200 bytes, without `/`, `\\` or control characters, and not `latest`.", kind="name"),
        Setting("SENTRY_SAMPLE_RATE", parse_ratio, 1.0, "Share of errors reported to Sentry, whether or not their trace was sampled.", kind="ratio"),
        Setting("SENTRY_TRACES_SAMPLE_RATE", parse_ratio, 1.0, "Share of traces recorded (a parent-based ratio sampler) when `OTEL_TRACES_SAMPLER` is unset.", kind="ratio"),
        Setting("SENTRY_DEBUG", parse_bool, False, "Log what the Sentry transport does, at DEBUG level.", kind="bool"),
        Setting("SENTRY_SPOTLIGHT", parse_spotlight, None, "Also send every envelope to a Sentry Spotlight sidecar: `true` (http://localhost:8969/stream) or its URL.", kind="bool or URL"),
        # Our own
        Setting("RAPTORFLOW_LOG_LEVEL", one_of("DEBUG", "INFO", "WARNING", "ERROR"), "WARNING", "Level of the distro's own log lines (logger `raptorflow_otel`).", kind="choice"),
        Setting("RAPTORFLOW_FASTAPI_MODE", one_of("auto", "native", "contrib"), "auto", "FastAPI tracing: `native` uses FastAPI's built-in telemetry (FastAPI 0.16x and newer), `contrib` uses opentelemetry-instrumentation-fastapi, `auto` picks native when available.", kind="choice"),
        Setting("RAPTORFLOW_FASTAPI_OPERATION_SPANS", parse_bool, False, "Native FastAPI telemetry only: keep FastAPI's internal `fastapi.dependencies`, `fastapi.endpoint` and `fastapi.serialization` spans. Off by default, because they triple the spans of a request and the server span already times it; an app's own `FastAPI(telemetry={\"operation_spans\": ...})` wins.", kind="bool"),
        Setting("RAPTORFLOW_IN_APP_INCLUDE", parse_module_prefixes, (), "Module prefixes whose frames are marked `in_app` in Sentry even when installed as packages.", kind="list"),
        Setting("RAPTORFLOW_SCRUB_ENABLED", parse_bool, True, "Scrub secrets and personal data from every span before export (see docs/privacy.md). `false` sends raw data and logs a warning at start-up.", kind="bool"),
        Setting("RAPTORFLOW_SCRUB_DISABLED_RULES", parse_scrub_rules, (), "Scrubbing rules to turn off, comma-separated, e.g. `ip-address,us-ssn`; the rule names are listed in docs/privacy.md.", kind="list"),
        Setting("RAPTORFLOW_SCRUB_EXTRA_KEYS", parse_key_words, (), "More secret key names or words, comma-separated, e.g. `dob,maiden_name`: values under matching attribute keys, headers, query parameters and fields are filtered.", kind="list"),
        Setting("RAPTORFLOW_SCRUB_EXTRA_PATTERNS", parse_scrub_patterns, (), "More value patterns in RE2 syntax, separated by spaces (write a space inside a pattern as `\\x20`); the matched text is filtered. RE2 has no backtracking, so no pattern can stall a request.", kind="patterns"),
        Setting("RAPTORFLOW_SCRUB_SAFE_KEYS", parse_safe_keys, (), "Attribute keys that are never scrubbed, comma-separated; a trailing `*` matches a prefix (`*` alone is rejected).", kind="list"),
        Setting("RAPTORFLOW_SCRUB_IP_ADDRESSES", parse_bool, True, "Filter IPv4 and IPv6 addresses (`server.address` and other infrastructure keys excepted).", kind="bool"),
        Setting("RAPTORFLOW_SCRUB_HASH_KEY", parse_hash_key, None, "Secret key (16 characters or more) for keyed pseudonyms: e-mail addresses, user ids and client addresses become stable HMAC-SHA256 pseudonyms instead of being filtered.", secret=True),
        Setting("RAPTORFLOW_SCRUB_MAX_VALUE_CHARS", positive_int, 32768, "Strings longer than this are cut before scrubbing, so the time spent per value is bounded.", kind="int"),
        Setting("RAPTORFLOW_SESSION_HEADER", parse_header_name, "X-Session-ID", "Request header that carries the session id; its value becomes `session.id` on every span of the request.", kind="header name"),
        Setting("RAPTORFLOW_SESSION_COOKIE", parse_cookie_name, None, "Session cookie to derive `session.id` from when the session header is absent. The cookie value is never recorded: a hash of it is (keyed with `RAPTORFLOW_SCRUB_HASH_KEY` when set).", kind="cookie name"),
        Setting("RAPTORFLOW_USER_HEADER", parse_header_name, "X-User-ID", "Request header that carries the user id (`user.id`); W3C baggage `user.id` is used when it is absent.", kind="header name"),
        Setting("RAPTORFLOW_SESSION_TTL_SECONDS", positive_int, 1800, "A session with no request for this long expires (it ends and its duration is recorded), in seconds.", kind="int"),
        Setting("RAPTORFLOW_SESSION_IDLE_SECONDS", positive_int, 300, "A session with no request for this long counts as idle, no longer active, in seconds.", kind="int"),
        Setting("RAPTORFLOW_SESSION_MAX", positive_int, 10000, "Max sessions one process follows; beyond it the least recently seen one is terminated.", kind="int"),
        Setting("RAPTORFLOW_SESSION_CONVERSION_ROUTES", parse_conversion_routes, (), "Routes that mark a session as converted, comma-separated, as route templates with or without the method: `POST /checkout/{product_id},/orders/{order_id}/paid`.", kind="list"),
        Setting("RAPTORFLOW_ERROR_CATEGORIES", parse_error_categories, None, "Error categories for your own exception classes, or to override the built-in ones: `myapp.errors.PaymentDeclined=business_logic,myapp.errors.UpstreamDown=external_api`. A class matches its subclasses too.", kind="pairs"),
        Setting("RAPTORFLOW_SENTRY_PENDING_TRACES", positive_int, 1000, "Max traces whose child spans wait for their root span before a Sentry transaction is built; the oldest is dropped beyond it.", kind="int"),
    ]
    return rows


SETTINGS: tuple[Setting, ...] = tuple(_rows())
_BY_NAME = {setting.name: setting for setting in SETTINGS}


def mask(value: str) -> str:
    """Hide a secret in a log line: keep its length class, never its characters."""
    return "<hidden, %d characters>" % len(value)


@dataclass
class Settings:
    """Parsed values by variable name, plus the names the user set to a valid value."""

    values: dict[str, Any]
    explicit: frozenset[str] = field(default_factory=frozenset)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def is_set(self, name: str) -> bool:
        return name in self.explicit


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every row of the table from ``environ`` (``os.environ`` by default).

    Empty values count as unset, as the OpenTelemetry specification requires.
    """
    source = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    explicit = set()
    for setting in SETTINGS:
        raw = source.get(setting.name)
        if raw is None or not raw.strip():
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw.strip())
            explicit.add(setting.name)
        except InvalidSetting as error:
            values[setting.name] = setting.default
            _warn_invalid(setting, raw, str(error))
    return Settings(values, frozenset(explicit))


def _warn_invalid(setting: Setting, raw: str, expected: str) -> None:
    shown = mask(raw) if setting.secret else repr(raw)
    if setting.default in (None, ()):
        fallback = "Ignoring it, as if it were unset."
    else:
        fallback = f"Using {setting.default!r} instead."
    if setting.read_elsewhere:
        fallback += " " + setting.read_elsewhere
    if setting.name == "SENTRY_DSN":
        _logger.error(
            "Invalid SENTRY_DSN %s: expected %s. Sentry export is disabled until it is fixed.",
            shown,
            expected,
        )
        return
    _logger.warning(
        "Invalid %s=%s: expected %s. %s", setting.name, shown, expected, fallback
    )


def setting(name: str) -> Setting:
    """Return the table row for ``name``; raises KeyError for a variable the product does not read."""
    return _BY_NAME[name]


def markdown_table(rows: Iterable[Setting] = SETTINGS) -> str:
    """Render the table as Markdown, for `raptorflow-otel settings --markdown` and the docs."""
    lines = ["| Variable | Type | Default | What it does |", "|---|---|---|---|"]
    for row in rows:
        default = "" if row.default in (None, ()) else f"`{_format_default(row.default)}`"
        lines.append(f"| `{row.name}` | {row.kind} | {default} | {row.doc} |")
    return "\n".join(lines) + "\n"


def _format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)
