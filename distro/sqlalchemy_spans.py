"""Client spans for SQLAlchemy statements, from class-level events on ``sqlalchemy.engine.Engine``.

Why not the contrib ``opentelemetry-instrumentation-sqlalchemy``: it declares ``sqlalchemy<2.1``.
It wraps ``sqlalchemy.ext.asyncio.create_async_engine``, and importing that module raises
ImportError without greenlet, which SQLAlchemy 2.1 no longer installs. It also wraps
``create_engine``, so engines created before instrumentation are missed.
Listening on the ``Engine`` class instead covers every engine, including the sync engine inside
every ``AsyncEngine`` and engines that already exist, and needs nothing beyond ``sqlalchemy``.

One span per cursor execution (an ``executemany`` is one span), kind CLIENT, scope
``raptorflow_otel.sqlalchemy``. It starts in ``before_cursor_execute`` and ends in
``after_cursor_execute``, or in ``handle_error`` when the statement fails (SQLAlchemy does not
call ``after_cursor_execute`` then). Statement text goes out only through
`raptorflow_otel.processors.sql.sanitize_sql`; the URL's user name and password never do.

Telemetry must never break the app: each listener catches every exception raised by our code,
logs the first one as a warning (later ones at DEBUG) and lets SQLAlchemy go on.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import weakref
from typing import Any, Callable, Mapping

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from raptorflow_otel.processors.exception_text import exception_attributes, format_exception_text
from raptorflow_otel.processors.sql import sanitize_sql

try:
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
except ImportError:  # pragma: no cover - opentelemetry-instrumentation is a dependency
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value

    def is_instrumentation_enabled() -> bool:
        return not get_value(_SUPPRESS_INSTRUMENTATION_KEY)


__all__ = [
    "SCOPE_NAME",
    "instrument_sqlalchemy",
    "semconv_mode_from_env",
    "uninstrument_sqlalchemy",
]

_logger = logging.getLogger(__name__)

SCOPE_NAME = "raptorflow_otel.sqlalchemy"
SEMCONV_MODES = ("old", "new", "dup")

# Attribute of the ExecutionContext (or of the Connection, when there is none) with the spans
# under way. A list, because one context can run several cursor executions, e.g. insertmanyvalues.
_SPANS_ATTRIBUTE = "_raptorflow_spans"

# SQLAlchemy dialect name -> (old `db.system`, new `db.system.name`). Unknown dialects report
# "other_sql" rather than a name that no backend would recognize.
_SYSTEMS: Mapping[str, tuple[str, str]] = {
    "postgresql": ("postgresql", "postgresql"),
    "mysql": ("mysql", "mysql"),
    "mariadb": ("mariadb", "mariadb"),
    "sqlite": ("sqlite", "sqlite"),
    "mssql": ("mssql", "microsoft.sql_server"),
    "oracle": ("oracle", "oracle.db"),
    "cockroachdb": ("cockroachdb", "cockroachdb"),
    "redshift": ("redshift", "aws.redshift"),
    "spanner+spanner": ("spanner", "gcp.spanner"),
    "spanner": ("spanner", "gcp.spanner"),
    "ibm_db_sa": ("db2", "ibm.db2"),
    "db2": ("db2", "ibm.db2"),
    "hana": ("hanadb", "sap.hana"),
    "firebird": ("firebird", "firebirdsql"),
    "trino": ("trino", "trino"),
    "clickhouse": ("clickhouse", "clickhouse"),
    "teradatasql": ("teradata", "teradata"),
}
_OTHER_SQL = ("other_sql", "other_sql")

# First keyword of a statement, after leading comments and opening parentheses.
# One whitespace character per repetition: `\s+` inside `*` would backtrack exponentially.
_OPERATION = re.compile(r"(?:\s|--[^\n]*|/\*.*?\*/|\()*([A-Za-z]{2,30})\b", re.DOTALL)

# Parentheses (to know the nesting depth) and the keywords FROM, INTO, UPDATE and TABLE with the
# name after them. The leading class lets the regex engine skip in C to the few characters that
# can start a match. Lookbehinds then pick the keyword, at a word start, in any letter case.
_NAME = r'(?:[A-Za-z_][\w$]*|"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\])'
_TARGET = re.compile(
    r"[()FfIiUuTt](?:(?<=[()])|(?<![\w$].)"
    r"(?:(?<=[Ff])[Rr][Oo][Mm]|(?<=[Ii])[Nn][Tt][Oo]|(?<=[Uu])[Pp][Dd][Aa][Tt][Ee]"
    r"|(?<=[Tt])[Aa][Bb][Ll][Ee])"
    r"\s+(?:[Ii][Ff]\s+(?:[Nn][Oo][Tt]\s+)?[Ee][Xx][Ii][Ss][Tt][Ss]\s+)?(?:[Oo][Nn][Ll][Yy]\s+)?"
    r"(?P<name>" + _NAME + r"(?:\." + _NAME + r")*)?(?P<call>\()?)"
)

# Statements compiled by SQLAlchemy repeat, so their summary is cached. Long texts (bulk inserts,
# generated reports) are summarized each time rather than held in memory.
_SUMMARY_CACHE_SIZE = 512
_SUMMARY_CACHE_MAX_LENGTH = 4096

# The table of an ORM query with many columns comes after a long select list. A table further
# than this many characters in is not looked for, so the span is named after the operation only.
_TARGET_SCAN_LIMIT = 16384

_lock = threading.Lock()
_state: _Instrumentation | None = None
_internal_error_logged = False


def semconv_mode_from_env(value: str | None) -> str:
    """Map an ``OTEL_SEMCONV_STABILITY_OPT_IN`` value to ``"old"``, ``"new"`` or ``"dup"``.

    Only the ``database`` category counts: ``database/dup`` wins over ``database``, and any other
    token (``http``, ``http/dup``, unknown words) leaves the old conventions.
    """
    tokens = {token.strip().lower() for token in (value or "").split(",")}
    if "database/dup" in tokens:
        return "dup"
    if "database" in tokens:
        return "new"
    return "old"


def instrument_sqlalchemy(tracer_provider: Any = None, semconv_mode: str | None = "old") -> bool:
    """Install the span listeners on every SQLAlchemy engine, once.

    ``tracer_provider`` defaults to the global provider, looked up at the first statement so a
    provider set after this call is used. ``semconv_mode`` is ``"old"``, ``"new"`` or ``"dup"``
    (see `semconv_mode_from_env`); None reads ``OTEL_SEMCONV_STABILITY_OPT_IN``.

    Returns True when the listeners are installed (now or by an earlier call, whose settings are
    kept), False when SQLAlchemy cannot be imported or the listeners could not be added.
    Raises ValueError for an unknown ``semconv_mode``.
    """
    global _state
    if semconv_mode is None:
        semconv_mode = semconv_mode_from_env(os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN"))
    if semconv_mode not in SEMCONV_MODES:
        raise ValueError(f"semconv_mode must be one of {SEMCONV_MODES}, not {semconv_mode!r}")
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        _logger.debug("Importing SQLAlchemy failed, so SQL statements get no spans.", exc_info=True)
        return False

    with _lock:
        if _state is not None:
            _logger.debug("SQLAlchemy spans are already on, so this call's settings are ignored.")
            return True
        _state = _Instrumentation(tracer_provider, semconv_mode)
        added: list[tuple[str, Callable[..., Any]]] = []
        try:
            for name, listener in _LISTENERS:
                event.listen(Engine, name, listener)
                added.append((name, listener))
        except Exception:
            _logger.warning(
                "Adding the SQLAlchemy listeners failed, so SQL statements get no spans.",
                exc_info=True,
            )
            for name, listener in added:
                _remove_listener(event, Engine, name, listener)
            _state = None
            return False
    return True


def uninstrument_sqlalchemy() -> None:
    """Remove the listeners. Spans of statements under way at that moment are not ended."""
    global _state
    with _lock:
        if _state is None:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for name, listener in _LISTENERS:
            _remove_listener(event, Engine, name, listener)
        _state = None
        _summarize_cached.cache_clear()


def _remove_listener(event: Any, target: Any, name: str, listener: Callable[..., Any]) -> None:
    try:
        if event.contains(target, name, listener):
            event.remove(target, name, listener)
    except Exception:
        _logger.warning("Removing the SQLAlchemy %s listener failed.", name, exc_info=True)


class _Instrumentation:
    """Settings of one instrument call, plus what is computed once per tracer and engine."""

    def __init__(self, tracer_provider: Any, semconv_mode: str) -> None:
        self.tracer_provider = tracer_provider
        self.old = semconv_mode in ("old", "dup")
        self.new = semconv_mode in ("new", "dup")
        self._tracer: trace.Tracer | None = None
        # Engine -> (attributes shared by all its spans, database name). Weak, so disposing of
        # an engine frees its entry.
        self._engines: weakref.WeakKeyDictionary[Any, tuple[dict[str, Any], str | None]] = (
            weakref.WeakKeyDictionary()
        )

    def tracer(self) -> trace.Tracer:
        # Looked up at the first statement, not at instrument time: the distro sets the global
        # provider after instrumenting. A race here only builds the same tracer twice.
        if self._tracer is None:
            provider = self.tracer_provider or trace.get_tracer_provider()
            self._tracer = provider.get_tracer(SCOPE_NAME)
        return self._tracer

    def engine_attributes(self, connection: Any) -> tuple[dict[str, Any], str | None]:
        engine = connection.engine
        cached = self._engines.get(engine)
        if cached is None:
            cached = _engine_attributes(connection, self.old, self.new)
            self._engines[engine] = cached
        return cached


def _engine_attributes(connection: Any, old: bool, new: bool) -> tuple[dict[str, Any], str | None]:
    """Attributes from the dialect and URL: system, database, host and port, never the userinfo."""
    dialect = connection.dialect
    name = dialect.name
    if name == "mysql" and getattr(dialect, "is_mariadb", False):
        name = "mariadb"
    old_system, new_system = _SYSTEMS.get(name, _OTHER_SQL)
    url = connection.engine.url
    database = url.database or None
    host = url.host or None
    port = url.port if host else None
    attributes: dict[str, Any] = {}
    if old:
        attributes["db.system"] = old_system
        if database:
            attributes["db.name"] = database
        if host:
            attributes["net.peer.name"] = host
            if port:
                attributes["net.peer.port"] = port
    if new:
        attributes["db.system.name"] = new_system
        if database:
            attributes["db.namespace"] = database
        if host:
            attributes["server.address"] = host
            if port:
                attributes["server.port"] = port
    return attributes, database


def _describe_statement(sanitized: str) -> tuple[str | None, str | None]:
    """Return (operation, table) of a sanitized statement, each None when not cheaply found.

    The operation is the first keyword, upper-cased. The table is the name after the first
    FROM, INTO, UPDATE or TABLE outside parentheses, as written (quotes and schema included);
    None when that keyword is followed by a subquery or a function call rather than a name.
    Works on sanitized text so a keyword inside a string literal is never taken for one.
    """
    match = _OPERATION.match(sanitized)
    if match is None:
        return None, None
    operation = match.group(1).upper()
    depth = 0
    for token in _TARGET.finditer(sanitized, match.start(1), _TARGET_SCAN_LIMIT):
        text = token.group(0)
        if text == "(":
            depth += 1
        elif text == ")":
            depth = max(depth - 1, 0)
        elif depth == 0:
            name, call = token.group("name"), token.group("call")
            if name is None or (call and text[:4].upper() == "FROM"):
                return operation, None
            return operation, name
        elif token.group("call"):
            # The keyword inside parentheses ended with the opening parenthesis of what follows.
            depth += 1
    return operation, None


def _summarize(statement: str) -> tuple[str, str | None, str | None]:
    """Return the sanitized text, the operation and the table of a statement."""
    if len(statement) > _SUMMARY_CACHE_MAX_LENGTH:
        return _summarize_uncached(statement)
    return _summarize_cached(statement)


def _summarize_uncached(statement: str) -> tuple[str, str | None, str | None]:
    sanitized = sanitize_sql(statement)
    operation, table = _describe_statement(sanitized)
    return sanitized, operation, table


_summarize_cached = functools.lru_cache(maxsize=_SUMMARY_CACHE_SIZE)(_summarize_uncached)


def _qualified_name(error_type: type) -> str:
    module = error_type.__module__
    if module and module != "builtins":
        return f"{module}.{error_type.__qualname__}"
    return error_type.__qualname__


def _report_internal_error(where: str) -> None:
    """Log a failure of our own code from inside an except block: fully once, then at DEBUG."""
    global _internal_error_logged
    if not _internal_error_logged:
        _internal_error_logged = True
        error = sys.exc_info()[1]
        _logger.warning(
            "raptorflow-otel: SQLAlchemy %s failed (%s: %s), so the statement runs without a "
            "complete span. Later failures are logged at DEBUG.",
            where,
            type(error).__name__,
            error,
            exc_info=True,
        )
    else:
        _logger.debug("raptorflow-otel: SQLAlchemy %s failed.", where, exc_info=True)


def _start_span(state: _Instrumentation, connection: Any, statement: str, context: Any) -> None:
    holder = context if context is not None else connection
    spans = getattr(holder, _SPANS_ATTRIBUTE, None)
    if spans is None:
        spans = []
        setattr(holder, _SPANS_ATTRIBUTE, spans)

    shared, database = state.engine_attributes(connection)
    sanitized, operation, table = _summarize(statement if isinstance(statement, str) else "")
    if operation and table:
        span_name = f"{operation} {table}"
    else:
        span_name = operation or database or "sql"

    attributes = dict(shared)
    if state.old:
        attributes["db.statement"] = sanitized
        if operation:
            attributes["db.operation"] = operation
    if state.new:
        attributes["db.query.text"] = sanitized
        if operation:
            attributes["db.operation.name"] = operation
        if table:
            attributes["db.collection.name"] = table

    spans.append(
        state.tracer().start_span(span_name, kind=SpanKind.CLIENT, attributes=attributes)
    )


def _pop_span(holder: Any) -> Any:
    spans = getattr(holder, _SPANS_ATTRIBUTE, None) if holder is not None else None
    return spans.pop() if spans else None


def _record_error(span: Any, exception_context: Any) -> None:
    error = exception_context.sqlalchemy_exception or exception_context.original_exception
    error_type = _qualified_name(type(error))
    # The event Span.record_exception would add, with the cheaper traceback text.
    attributes = exception_attributes(error)
    original = exception_context.original_exception
    if error is not original and original is not None:
        # str() of SQLAlchemy's wrapper contains the SQL text and the bound parameters, and the
        # wrapper has no traceback yet because it is raised after this hook. So the event gets
        # the wrapped DBAPI error's message (as the wrapper's first line shows it) and traceback.
        attributes["exception.message"] = f"({_qualified_name(type(original))}) {original}"
        attributes["exception.stacktrace"] = format_exception_text(original)
    attributes["exception.escaped"] = "True"
    span.add_event("exception", attributes)
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


# The listeners. SQLAlchemy calls them inside its own execution path, so none may raise.


def _before_cursor_execute(
    connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    state = _state
    if state is None:
        return
    try:
        if not is_instrumentation_enabled():
            return
        _start_span(state, connection, statement, context)
    except Exception:
        _report_internal_error("span start")


def _after_cursor_execute(
    connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    try:
        span = _pop_span(context if context is not None else connection)
        if span is not None:
            span.end()
    except Exception:
        _report_internal_error("span end")


# NOTE: with the execution option skip_user_error_events, SQLAlchemy calls no handle_error
# listener, so the span of a failing statement is never ended and never exported.
def _handle_error(exception_context: Any) -> None:
    try:
        context = exception_context.execution_context
        # A failed connect has neither a context nor a connection, and no span.
        span = _pop_span(context if context is not None else exception_context.connection)
        if span is None:
            return
        try:
            _record_error(span, exception_context)
        finally:
            span.end()
    except Exception:
        _report_internal_error("error recording")


_LISTENERS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("before_cursor_execute", _before_cursor_execute),
    ("after_cursor_execute", _after_cursor_execute),
    ("handle_error", _handle_error),
)
