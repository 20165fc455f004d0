"""Read span attributes under both the stable and the older semantic-convention names.

Instrumentations emit old names (``http.method``, ``db.statement``) unless the user opts in with
``OTEL_SEMCONV_STABILITY_OPT_IN``, and FastAPI's native telemetry emits only the stable ones, so
every reader here tries the stable name first and falls back to the old one.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

Attributes = Mapping[str, Any]


def first(attributes: Attributes, *names: str) -> Any:
    for name in names:
        value = attributes.get(name)
        if value is not None and value != "":
            return value
    return None


def http_method(attributes: Attributes) -> str | None:
    method = first(attributes, "http.request.method", "http.method")
    if method == "_OTHER":
        method = first(attributes, "http.request.method_original") or method
    return method


def http_status_code(attributes: Attributes) -> int | None:
    value = first(attributes, "http.response.status_code", "http.status_code")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def http_route(attributes: Attributes) -> str | None:
    return first(attributes, "http.route")


def db_system(attributes: Attributes) -> str | None:
    return first(attributes, "db.system.name", "db.system")


def db_statement(attributes: Attributes) -> str | None:
    return first(attributes, "db.query.text", "db.statement")


def strip_query(url: str) -> str:
    """Drop the query string, fragment and any userinfo from a URL (they may carry secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def client_url(attributes: Attributes) -> str | None:
    """URL of an outgoing request, without query or userinfo."""
    url = first(attributes, "url.full", "http.url")
    return strip_query(str(url)) if url else None


def server_url(attributes: Attributes) -> str | None:
    """URL of an incoming request rebuilt from its parts, without the query string."""
    full = first(attributes, "url.full", "http.url")
    if full:
        return strip_query(str(full))
    scheme = first(attributes, "url.scheme", "http.scheme") or "http"
    host = first(attributes, "server.address", "http.host", "net.host.name")
    port = first(attributes, "server.port", "net.host.port")
    path = first(attributes, "url.path", "http.target")
    if not host or not path:
        return None
    path = str(path).split("?", 1)[0]
    netloc = str(host)
    default_port = {"http": 80, "https": 443}.get(str(scheme))
    if port is not None and ":" not in netloc and int(port) != default_port:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{path}"
