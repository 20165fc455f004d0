"""The distro's default for FastAPI's ``operation_spans`` option (native FastAPI telemetry)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raptorflow_otel.distro.fastapi_defaults import set_operation_spans_default


@pytest.fixture
def restore_fastapi(monkeypatch: pytest.MonkeyPatch) -> None:
    # monkeypatch puts the original __init__ back after the test.
    monkeypatch.setattr(FastAPI, "__init__", FastAPI.__init__)


def span_names(app: FastAPI, exporter: InMemorySpanExporter) -> set[str]:
    @app.get("/ping")
    def ping() -> dict:
        return {"ok": True}

    with TestClient(app) as client:
        assert client.get("/ping").status_code == 200
    return {span.name.split(" ")[0] for span in exporter.get_finished_spans()}


def traced_app(**options) -> tuple[FastAPI, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return FastAPI(telemetry={"tracer_provider": provider, **options}), exporter


def test_operation_spans_are_off_by_default(restore_fastapi: None) -> None:
    set_operation_spans_default(False)

    names = span_names(*traced_app())

    assert names == {"GET"}


def test_operation_spans_app_choice_wins(restore_fastapi: None) -> None:
    set_operation_spans_default(False)

    names = span_names(*traced_app(operation_spans=True))

    assert {"fastapi.endpoint", "fastapi.serialization"} <= names


def test_enabled_setting_keeps_fastapis_default(restore_fastapi: None) -> None:
    set_operation_spans_default(True)

    names = span_names(*traced_app())

    assert "fastapi.endpoint" in names


def test_wrapping_twice_wraps_once(restore_fastapi: None) -> None:
    set_operation_spans_default(False)
    wrapped = FastAPI.__init__

    set_operation_spans_default(False)

    assert FastAPI.__init__ is wrapped
