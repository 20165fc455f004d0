"""Error categories and severities: which of the eight kinds of failure an exception is, and how bad.

`ErrorRules.classify` decides from the exception's class hierarchy first. The class is looked up by
its ``module.QualName`` (the form of ``exception.type``) among the modules already imported, since
the exception was raised in this process, and its MRO is walked from the most specific class. When
no class in the hierarchy is known, the span decides: an HTTP status of 401/403 means
``authentication``, 408/504 ``performance``, a database span ``database``, an HTTP client span
``external_api``, another 4xx ``validation``, and a 5xx without any exception ``system``. Anything
else is ``business_logic``: an exception the app defines for its own rules.

Severity, with the meanings of the product handbook: ``critical`` is an outage, data loss or a
security problem, ``high`` a request that failed for the user, ``medium`` a failure the app
handled, ``low`` a caller's mistake (bad input, missing login).
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

__all__ = ["CATEGORIES", "SEVERITIES", "LEVEL_BY_SEVERITY", "ErrorRules", "DEFAULT_CATEGORY", "parse_category_overrides"]

CATEGORIES = (
    "authentication", "validation", "database", "external_api", "network", "business_logic", "system", "performance",
)
SEVERITIES = ("low", "medium", "high", "critical")
LEVEL_BY_SEVERITY = {"low": "info", "medium": "warning", "high": "error", "critical": "fatal"}
DEFAULT_CATEGORY = "business_logic"

# Exception classes by ``module.QualName``, checked along the MRO (the most specific class wins).
# Aliases (``socket.timeout``, ``asyncio.TimeoutError``) are the builtin classes since Python 3.10.
_CLASS_CATEGORIES: dict[str, str] = {
    # timeouts first: httpx and SQLAlchemy time-outs derive from their transport and DB errors
    "TimeoutError": "performance",
    "httpx.TimeoutException": "performance",
    "requests.exceptions.Timeout": "performance",
    "sqlalchemy.exc.TimeoutError": "performance",
    "aiohttp.client_exceptions.ServerTimeoutError": "performance",
    # databases and their drivers
    "sqlalchemy.exc.SQLAlchemyError": "database",
    "sqlite3.Error": "database",
    "psycopg.Error": "database",
    "psycopg2.Error": "database",
    "asyncpg.exceptions._base.PostgresError": "database",
    "asyncpg.exceptions._base.InterfaceError": "database",
    "pymysql.err.MySQLError": "database",
    "MySQLdb._exceptions.MySQLError": "database",
    "redis.exceptions.RedisError": "database",
    "pymongo.errors.PyMongoError": "database",
    # calls to other services that returned an error
    "httpx.HTTPStatusError": "external_api",
    "requests.exceptions.HTTPError": "external_api",
    "aiohttp.client_exceptions.ClientResponseError": "external_api",
    "botocore.exceptions.ClientError": "external_api",
    "stripe._error.StripeError": "external_api",
    "stripe.error.StripeError": "external_api",
    # calls that did not reach the other side
    "ConnectionError": "network",
    "httpx.TransportError": "network",
    "requests.exceptions.ConnectionError": "network",
    "aiohttp.client_exceptions.ClientConnectionError": "network",
    "socket.gaierror": "network",
    "socket.herror": "network",
    "ssl.SSLError": "network",
    "urllib3.exceptions.HTTPError": "network",
    # the caller's input
    "pydantic_core._pydantic_core.ValidationError": "validation",
    "pydantic.ValidationError": "validation",
    "pydantic.v1.error_wrappers.ValidationError": "validation",
    "fastapi.exceptions.RequestValidationError": "validation",
    "marshmallow.exceptions.ValidationError": "validation",
    "jsonschema.exceptions.ValidationError": "validation",
    "ValueError": "validation",
    # who the caller is
    "jwt.exceptions.PyJWTError": "authentication",
    "django.core.exceptions.PermissionDenied": "authentication",
    "authlib.oauth2.base.OAuth2Error": "authentication",
    # the process itself
    "MemoryError": "system",
    "RecursionError": "system",
    "SystemError": "system",
    "OSError": "system",
    "ImportError": "system",
    "NameError": "system",
    "AttributeError": "system",
    "TypeError": "system",
    "LookupError": "system",
    "ArithmeticError": "system",
    "AssertionError": "system",
    "NotImplementedError": "system",
    "fastapi.exceptions.ResponseValidationError": "system",
}
# Failures that mean an outage or a security problem, whatever their category.
_CRITICAL_CLASSES = frozenset(
    {
        "MemoryError",
        "sqlalchemy.exc.OperationalError",
        "sqlalchemy.exc.InterfaceError",
        "sqlite3.OperationalError",
        "psycopg.OperationalError",
        "psycopg2.OperationalError",
        "redis.exceptions.ConnectionError",
        "jwt.exceptions.InvalidSignatureError",
    }
)
_LOW_CATEGORIES = frozenset({"validation", "authentication"})
_HTTP_SERVER_ERROR = 500


def parse_category_overrides(text: str) -> dict[str, str]:
    """Parse ``module.Class=category`` pairs, comma-separated; raises ValueError on a bad pair."""
    overrides: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, separator, category = (piece.strip() for piece in item.partition("="))
        if not separator or not name or category not in CATEGORIES:
            raise ValueError(item)
        overrides[name] = category
    return overrides


class ErrorRules:
    """Classifies exceptions; user overrides (``RAPTORFLOW_ERROR_CATEGORIES``) win over the table."""

    def __init__(self, overrides: Mapping[str, str] | None = None, max_cache: int = 2048) -> None:
        self._table = {**_CLASS_CATEGORIES, **(overrides or {})}
        self._cache: dict[str, tuple[str | None, bool]] = {}
        self._max_cache = max_cache

    def classify(
        self,
        exception_type: str | None,
        *,
        span_kind: str = "internal",
        attributes: Mapping[str, Any] | None = None,
        failed_request: bool = False,
    ) -> tuple[str, str]:
        """Return ``(category, severity)`` for an exception type (None: an error status only).

        ``span_kind`` is the span's kind name in lower case. ``failed_request`` is true when
        the request failed for its caller (an exception escaped a server span, or it returned 5xx).
        """
        attributes = attributes or {}
        category, critical = self._from_hierarchy(exception_type) if exception_type else (None, False)
        status = _status_code(attributes)
        if category is None:
            category = self._from_context(span_kind, attributes, status, has_exception=bool(exception_type))
        return category, _severity(category, critical, failed_request, status)

    def _from_hierarchy(self, exception_type: str) -> tuple[str | None, bool]:
        cached = self._cache.get(exception_type)
        if cached is not None:
            return cached
        names = _class_names(exception_type)
        category = next((self._table[name] for name in names if name in self._table), None)
        result = (category, any(name in _CRITICAL_CLASSES for name in names))
        if len(self._cache) >= self._max_cache:
            self._cache.clear()
        self._cache[exception_type] = result
        return result

    @staticmethod
    def _from_context(span_kind: str, attributes: Mapping[str, Any], status: int | None, *, has_exception: bool) -> str:
        if status in (401, 403, 407):
            return "authentication"
        if status in (408, 504):
            return "performance"
        if "db.system" in attributes or "db.system.name" in attributes:
            return "database"
        if span_kind == "client" and ("http.request.method" in attributes or "http.method" in attributes):
            return "external_api"
        if status is not None and 400 <= status < 500:
            return "validation"
        if status is not None and status >= _HTTP_SERVER_ERROR and not has_exception:
            return "system"  # a 5xx without an exception: the server failed in a way we cannot see
        return DEFAULT_CATEGORY


def _class_names(exception_type: str) -> list[str]:
    """Names of the class and its bases, most specific first; just the name when not importable.

    Only modules already imported are searched: the exception was raised in this process, so its
    module is loaded, and looking it up never runs import-time code.
    """
    module_name, _, qualname = exception_type.rpartition(".")
    candidates = [(module_name, qualname)] if module_name else [("builtins", qualname)]
    # A nested class (``module.Outer.Inner``): try splitting the dotted path at each dot.
    parts = exception_type.split(".")
    candidates += [(".".join(parts[:index]), ".".join(parts[index:])) for index in range(len(parts) - 2, 0, -1)]
    for module, name in candidates:
        found = sys.modules.get(module)
        for attribute in name.split(".") if found is not None else ():
            found = getattr(found, attribute, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return [_qualified_name(cls) for cls in found.__mro__ if issubclass(cls, BaseException)]
    return [exception_type]


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _status_code(attributes: Mapping[str, Any]) -> int | None:
    for key in ("http.response.status_code", "http.status_code"):
        value = attributes.get(key)
        if isinstance(value, int):
            return value
    return None


def _severity(category: str, critical: bool, failed_request: bool, status: int | None) -> str:
    if critical:
        return "critical"
    if category in _LOW_CATEGORIES and not (status is not None and status >= _HTTP_SERVER_ERROR):
        return "low"
    if failed_request or (status is not None and status >= _HTTP_SERVER_ERROR):
        return "high"
    return "medium"
