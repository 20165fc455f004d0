"""SQL client spans from the class-level SQLAlchemy listeners, against real SQLite databases."""

import asyncio
import importlib.util
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from raptorflow_otel.distro import sqlalchemy_spans
from raptorflow_otel.distro.sqlalchemy_spans import (
    SCOPE_NAME,
    instrument_sqlalchemy,
    semconv_mode_from_env,
    uninstrument_sqlalchemy,
)

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))
# Plain DDL rather than metadata.create_all, which first runs PRAGMA statements to look for
# the table: each would be a span of its own.
CREATE_ITEMS = text("create table items (id integer primary key, name varchar(50))")


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture(autouse=True)
def _uninstrument_after_test():
    uninstrument_sqlalchemy()
    yield
    uninstrument_sqlalchemy()


@pytest.fixture
def engines(tmp_path):
    """Factory of SQLite file engines, all disposed after the test."""
    created = []

    def make(name="app.db"):
        engine = create_engine(f"sqlite:///{tmp_path / name}")
        created.append(engine)
        return engine

    yield make
    for engine in created:
        engine.dispose()


def db_spans(exporter):
    return [span for span in exporter.get_finished_spans() if span.instrumentation_scope.name == SCOPE_NAME]


def test_sync_statement_spans(exporter, provider, engines):
    engine = engines()
    assert instrument_sqlalchemy(tracer_provider=provider) is True
    parent_tracer = provider.get_tracer("test")
    with parent_tracer.start_as_current_span("request") as parent, engine.begin() as conn:
        conn.execute(CREATE_ITEMS)
        conn.execute(insert(items).values(name="a"))
        rows = conn.execute(select(items.c.name)).all()
    assert rows == [("a",)]

    spans = db_spans(exporter)
    assert [span.name for span in spans] == ["CREATE items", "INSERT items", "SELECT items"]
    for span in spans:
        assert span.kind is SpanKind.CLIENT
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.status.status_code is StatusCode.UNSET
        assert span.end_time is not None


def _async_unavailable_reason():
    for module in ("greenlet", "aiosqlite"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed, so sqlite+aiosqlite engines cannot run"
    try:
        import sqlalchemy.ext.asyncio  # noqa: F401
    except ImportError as error:
        return f"sqlalchemy.ext.asyncio cannot be imported: {error}"
    return None


def test_async_engine_is_traced(exporter, provider, tmp_path):
    reason = _async_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from sqlalchemy.ext.asyncio import create_async_engine

    instrument_sqlalchemy(tracer_provider=provider)
    parent_tracer = provider.get_tracer("test")

    async def run():
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
        try:
            async with engine.begin() as conn:
                await conn.execute(CREATE_ITEMS)
            with parent_tracer.start_as_current_span("request") as parent:
                async with engine.connect() as conn:
                    result = await conn.execute(select(items.c.id).where(items.c.name == "x"))
                    assert result.all() == []
                    with pytest.raises(OperationalError):
                        await conn.execute(text("select * from missing"))
            return parent
        finally:
            await engine.dispose()

    parent = asyncio.run(run())
    spans = db_spans(exporter)
    assert [span.name for span in spans] == ["CREATE items", "SELECT items", "SELECT missing"]
    assert spans[2].attributes["error.type"] == "sqlalchemy.exc.OperationalError"
    assert spans[2].status.status_code is StatusCode.ERROR
    # SQLAlchemy runs the sync engine in a greenlet that carries the caller's contextvars,
    # so the statement is a child of the span current in the coroutine.
    assert spans[1].parent.span_id == parent.get_span_context().span_id
    assert spans[1].attributes["db.system"] == "sqlite"


def test_preexisting_engine_traced(exporter, provider, engines):
    engine = engines()
    with engine.connect() as open_before:
        open_before.execute(text("select 1"))
        instrument_sqlalchemy(tracer_provider=provider)
        open_before.execute(text("select 2"))
    with engine.connect() as opened_after:
        opened_after.execute(text("select 3"))
    statements = [span.attributes["db.statement"] for span in db_spans(exporter)]
    assert statements == ["select ?", "select ?"]


def test_failing_statement_records_error(exporter, provider, engines):
    engine = engines()
    instrument_sqlalchemy(tracer_provider=provider)
    with engine.connect() as conn, pytest.raises(OperationalError):
        conn.execute(text("select * from missing where name = :name"), {"name": "secret-value"})

    (span,) = db_spans(exporter)
    assert span.name == "SELECT missing"
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "sqlalchemy.exc.OperationalError"
    assert span.attributes["error.type"] == "sqlalchemy.exc.OperationalError"
    (event,) = [event for event in span.events if event.name == "exception"]
    assert event.attributes["exception.type"] == "sqlalchemy.exc.OperationalError"
    assert event.attributes["exception.escaped"] == "True"
    assert "no such table: missing" in event.attributes["exception.message"]
    # SQLAlchemy's error text contains the SQL and the bound parameters, and neither is exported.
    for value in [*span.attributes.values(), *event.attributes.values()]:
        assert "secret-value" not in str(value)
        assert "[SQL:" not in str(value)


def test_connection_usable_after_error(exporter, provider, engines):
    engine = engines()
    instrument_sqlalchemy(tracer_provider=provider)
    with engine.connect() as conn:
        with pytest.raises(OperationalError):
            conn.execute(text("select * from missing"))
        conn.rollback()
        assert conn.execute(text("select 5")).scalar() == 5
    assert [span.status.status_code for span in db_spans(exporter)] == [StatusCode.ERROR, StatusCode.UNSET]


OLD_KEYS = {"db.system", "db.name", "db.statement", "db.operation", "net.peer.name", "net.peer.port"}
NEW_KEYS = {
    "db.system.name",
    "db.namespace",
    "db.query.text",
    "db.operation.name",
    "db.collection.name",
    "server.address",
    "server.port",
}


@pytest.mark.parametrize(
    ("mode", "expected_keys"),
    [("old", OLD_KEYS), ("new", NEW_KEYS), ("dup", OLD_KEYS | NEW_KEYS)],
)
def test_attributes_per_semconv_mode(exporter, provider, engines, mode, expected_keys):
    engine = engines("shop.db")
    database = engine.url.database
    # The pool was built from the file URL, and the listeners report the URL set on the engine,
    # so this URL can describe a networked database with credentials.
    engine.url = make_url(f"sqlite://dbuser:hunter2@db.internal:6543/{database}")
    instrument_sqlalchemy(tracer_provider=provider, semconv_mode=mode)
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(select(items.c.id).where(items.c.id == 3))

    span = db_spans(exporter)[-1]
    assert set(span.attributes) == expected_keys
    expected = {
        "db.system": "sqlite",
        "db.name": database,
        "db.statement": "SELECT items.id \nFROM items \nWHERE items.id = ?",
        "db.operation": "SELECT",
        "net.peer.name": "db.internal",
        "net.peer.port": 6543,
        "db.system.name": "sqlite",
        "db.namespace": database,
        "db.query.text": "SELECT items.id \nFROM items \nWHERE items.id = ?",
        "db.operation.name": "SELECT",
        "db.collection.name": "items",
        "server.address": "db.internal",
        "server.port": 6543,
    }
    assert dict(span.attributes) == {key: expected[key] for key in expected_keys}
    for value in span.attributes.values():
        assert "dbuser" not in str(value)
        assert "hunter2" not in str(value)


def test_hostless_url_omits_peer_attributes(exporter, provider, engines):
    engine = engines()
    instrument_sqlalchemy(tracer_provider=provider, semconv_mode="dup")
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    (span,) = db_spans(exporter)
    assert not {"net.peer.name", "net.peer.port", "server.address", "server.port"} & set(span.attributes)
    assert span.attributes["db.name"] == engine.url.database


def test_literal_sql_is_sanitized(exporter, provider, engines):
    engine = engines()
    with engine.begin() as conn:
        conn.execute(text("create table t (id integer, name text)"))
    instrument_sqlalchemy(tracer_provider=provider, semconv_mode="dup")
    with engine.connect() as conn:
        conn.execute(text("select * from t where name = 'bob' and id = 42")).all()

    (span,) = db_spans(exporter)
    assert span.name == "SELECT t"
    assert span.attributes["db.statement"] == "select * from t where name = ? and id = ?"
    assert span.attributes["db.query.text"] == "select * from t where name = ? and id = ?"
    # The database path comes from pytest's temporary directory and may contain "42".
    for key, value in span.attributes.items():
        if key not in ("db.name", "db.namespace"):
            assert "bob" not in str(value)
            assert "42" not in str(value)
    assert "42" not in span.name


@pytest.mark.parametrize(
    ("statement", "span_name"),
    [
        ("select * from items", "SELECT items"),
        ("SELECT count(*) FROM (select id from items) AS sub", "SELECT"),
        ("with c as (select id from items) select * from c", "WITH c"),
        ("update items set name = 'x' where id = 1", "UPDATE items"),
        ("delete from main.items where name = 'from other'", "DELETE main.items"),
        ('insert into "items" (name) values (\'z\')', 'INSERT "items"'),
        ("select 'from secret_table'", "SELECT"),
        ("select * from json_each('[1]')", "SELECT"),
        ("  /* it's 1 */ -- x\n select 1", "SELECT"),
    ],
)
def test_span_name_operation_and_table(exporter, provider, engines, statement, span_name):
    engine = engines()
    with engine.begin() as conn:
        conn.execute(CREATE_ITEMS)
    instrument_sqlalchemy(tracer_provider=provider)
    with engine.begin() as conn:
        conn.execute(text(statement))
    (span,) = db_spans(exporter)
    assert span.name == span_name


def test_executemany_is_one_span(exporter, provider, engines):
    engine = engines()
    with engine.begin() as conn:
        conn.execute(CREATE_ITEMS)
    instrument_sqlalchemy(tracer_provider=provider)
    with engine.begin() as conn:
        conn.execute(insert(items), [{"name": "a"}, {"name": "b"}, {"name": "c"}])
        conn.exec_driver_sql("insert into items (name) values (?)", [("d",), ("e",)])
        assert conn.execute(select(items.c.id)).all() == [(1,), (2,), (3,), (4,), (5,)]
    assert [span.name for span in db_spans(exporter)] == ["INSERT items", "INSERT items", "SELECT items"]


def test_instrumenting_twice_installs_once(exporter, provider, engines):
    engine = engines()
    assert instrument_sqlalchemy(tracer_provider=provider) is True
    assert instrument_sqlalchemy(tracer_provider=provider, semconv_mode="new") is True
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    (span,) = db_spans(exporter)
    # The first call's settings are kept.
    assert "db.statement" in span.attributes
    assert "db.query.text" not in span.attributes


def test_uninstrument_stops_spans(exporter, provider, engines):
    engine = engines()
    instrument_sqlalchemy(tracer_provider=provider)
    with engine.connect() as conn:
        conn.execute(text("select 1"))
        uninstrument_sqlalchemy()
        conn.execute(text("select 2"))
    assert len(db_spans(exporter)) == 1

    instrument_sqlalchemy(tracer_provider=provider)
    with engine.connect() as conn:
        conn.execute(text("select 3"))
    assert len(db_spans(exporter)) == 2


def test_suppressed_instrumentation_no_span(exporter, provider, engines):
    engine = engines()
    instrument_sqlalchemy(tracer_provider=provider)
    with engine.connect() as conn:
        with suppress_instrumentation():
            conn.execute(text("select 1"))
        conn.execute(text("select 2"))
    assert len(db_spans(exporter)) == 1


def test_tracer_provider_resolved_lazily(exporter, provider, engines, monkeypatch):
    engine = engines()
    instrument_sqlalchemy()
    # Like the distro, which sets the global provider after instrumenting.
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    assert len(db_spans(exporter)) == 1


def test_contextless_execution_traced(exporter, provider, engines):
    engine = engines()
    instrument_sqlalchemy(tracer_provider=provider)
    with engine.connect() as conn:
        cursor = conn.connection.cursor()
        if not hasattr(conn, "_cursor_execute"):
            pytest.skip("this SQLAlchemy has no Connection._cursor_execute")
        # _cursor_execute accepts a missing execution context. SQLAlchemy's own dialects pass
        # one, but other callers may not, and then the span is kept on the Connection.
        conn._cursor_execute(cursor, "select 7", ())
        cursor.close()
    (span,) = db_spans(exporter)
    assert span.name == "SELECT"
    assert span.end_time is not None


def test_listener_error_keeps_query_working(exporter, provider, engines, monkeypatch, caplog):
    engine = engines()
    instrument_sqlalchemy(tracer_provider=provider)
    monkeypatch.setattr(sqlalchemy_spans, "_internal_error_logged", False)

    def broken(statement):
        raise RuntimeError("bug in telemetry")

    monkeypatch.setattr(sqlalchemy_spans, "_describe_statement", broken)
    with caplog.at_level(logging.DEBUG, logger=sqlalchemy_spans.__name__):
        with engine.connect() as conn:
            assert conn.execute(text("select 41 + 1")).scalar() == 42
            assert conn.execute(text("select 1")).scalar() == 1
    assert db_spans(exporter) == []
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].exc_info[0] is RuntimeError


def test_error_listener_failure_keeps_exception(exporter, provider, engines, monkeypatch):
    engine = engines()
    instrument_sqlalchemy(tracer_provider=provider)
    monkeypatch.setattr(sqlalchemy_spans, "_internal_error_logged", False)

    def broken(span, exception_context):
        raise RuntimeError("bug in telemetry")

    monkeypatch.setattr(sqlalchemy_spans, "_record_error", broken)
    with engine.connect() as conn, pytest.raises(OperationalError):
        conn.execute(text("select * from missing"))
    (span,) = db_spans(exporter)
    assert span.end_time is not None


def test_missing_sqlalchemy_returns_false(monkeypatch):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    assert instrument_sqlalchemy() is False
    assert sqlalchemy_spans._state is None


def test_unknown_semconv_mode_is_rejected():
    with pytest.raises(ValueError):
        instrument_sqlalchemy(semconv_mode="both")


def test_semconv_mode_none_reads_env(exporter, provider, engines, monkeypatch):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    engine = engines()
    instrument_sqlalchemy(tracer_provider=provider, semconv_mode=None)
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    (span,) = db_spans(exporter)
    assert "db.query.text" in span.attributes
    assert "db.statement" not in span.attributes


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, "old"),
        ("", "old"),
        ("http", "old"),
        ("http/dup", "old"),
        ("database", "new"),
        ("http, database", "new"),
        ("database/dup", "dup"),
        ("database,database/dup", "dup"),
        (" Database/Dup ,http", "dup"),
        ("databases", "old"),
    ],
)
def test_semconv_mode_from_env(value, mode):
    assert semconv_mode_from_env(value) == mode


def test_sync_use_skips_asyncio_import(tmp_path):
    # SQLAlchemy 2.1 raises ImportError from sqlalchemy.ext.asyncio without greenlet. A fresh
    # interpreter shows that instrumenting and running sync statements do not import it.
    script = textwrap.dedent(
        f"""
        import sys
        from opentelemetry.sdk.trace import TracerProvider
        from sqlalchemy import create_engine, text
        from raptorflow_otel.distro.sqlalchemy_spans import instrument_sqlalchemy

        assert instrument_sqlalchemy(tracer_provider=TracerProvider(shutdown_on_exit=False))
        engine = create_engine({f"sqlite:///{tmp_path / 'sync.db'}"!r})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        loaded = sorted(name for name in sys.modules if name.startswith("sqlalchemy.ext.asyncio"))
        assert not loaded, loaded
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
