"""`format_exception_text` gives the standard library's traceback text without the ``^^^`` lines."""

from __future__ import annotations

import re
import sys
import traceback

import pytest

from raptorflow_otel.exporters.sentry_frames import parse_exception_chain
from raptorflow_otel.processors.exception_text import exception_attributes, format_exception_text

MARKER_LINE = re.compile(r"^\s*[\^~]+\s*$")


def without_markers(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not MARKER_LINE.match(line))


def raised(function) -> BaseException:
    try:
        function()
    except BaseException as error:  # noqa: BLE001 - the test wants any exception
        return error
    raise AssertionError("no exception")


def divide(a: int, b: int) -> float:
    return a / b + (a * 2) / (b * 3)


def lookup(mapping: dict, key: str) -> str:
    return mapping["outer"][key]


def with_cause() -> None:
    try:
        lookup({"outer": {}}, "missing")
    except KeyError as error:
        raise ValueError("bad configuration") from error


def with_context() -> None:
    try:
        divide(1, 0)
    except ZeroDivisionError:
        lookup({"outer": {}}, "second")


def with_suppressed_context() -> None:
    try:
        divide(1, 0)
    except ZeroDivisionError:
        raise RuntimeError("replaced") from None


def recurse(depth: int) -> None:
    if depth == 0:
        raise RecursionError("bottom reached")
    recurse(depth - 1)


def with_note() -> None:
    error = TypeError("wrong type")
    error.add_note("while reading the order")
    raise error


def syntax_error() -> None:
    compile("def broken(:\n    pass\n", "<order-rules>", "exec")


CASES = {
    "simple": lambda: divide(1, 0),
    "cause": with_cause,
    "context": with_context,
    "suppressed context": with_suppressed_context,
    "recursion": lambda: recurse(12),
    "note": with_note,
    "syntax error": syntax_error,
}


@pytest.mark.parametrize("name", CASES)
def test_same_text_as_the_standard_library_without_markers(name: str) -> None:
    error = raised(CASES[name])

    # A SyntaxError's own last lines have a marker too, from format_exception_only in both.
    assert without_markers(format_exception_text(error)) == without_markers("".join(traceback.format_exception(error)))


def test_exception_without_traceback() -> None:
    error = ValueError("never raised")

    assert format_exception_text(error) == "ValueError: never raised\n"


def test_exception_group_is_formatted_by_the_standard_library() -> None:
    error = raised(lambda: (_ for _ in ()).throw(ExceptionGroup("two failures", [ValueError("a"), KeyError("b")])))

    assert format_exception_text(error) == "".join(traceback.format_exception(error))


def test_cycle_in_the_chain_ends() -> None:
    first, second = ValueError("first"), KeyError("second")
    first.__context__, second.__context__ = second, first

    text = format_exception_text(first)

    assert text.count("ValueError: first") == 1
    assert text.count("KeyError: 'second'") == 1


def test_attributes_match_what_span_record_exception_reports() -> None:
    error = raised(with_cause)

    attributes = exception_attributes(error)

    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "bad configuration"
    assert parse_exception_chain(attributes["exception.stacktrace"])[-1]["type"] == "ValueError"
    assert [value["type"] for value in parse_exception_chain(attributes["exception.stacktrace"])] == ["KeyError", "ValueError"]


def test_exception_attributes_broken_str() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    attributes = exception_attributes(Unprintable())

    assert "Unprintable" in attributes["exception.message"]
    assert sys.exc_info() == (None, None, None)


def test_exception_logger_provider_reports_the_cheap_attributes() -> None:
    from opentelemetry.sdk._logs import LogRecordProcessor

    from raptorflow_otel.processors.logged_exceptions import ExceptionLoggerProvider

    class Keep(LogRecordProcessor):
        def __init__(self) -> None:
            self.records = []

        def on_emit(self, log_record) -> None:  # noqa: ANN001 - SDK type
            self.records.append(getattr(log_record, "log_record", log_record))

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    keep = Keep()
    provider = ExceptionLoggerProvider()
    provider.add_log_record_processor(keep)
    error = raised(with_cause)

    provider.get_logger("fastapi").emit(
        exception=error, event_name="http.server.request.exception", attributes={"http.route": "/x", "exception.message": "own"}
    )

    attributes = dict(keep.records[0].attributes)
    assert attributes["exception.stacktrace"] == format_exception_text(error)
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "own"  # the caller's attributes win, as in the SDK
    assert attributes["http.route"] == "/x"
    assert keep.records[0].event_name == "http.server.request.exception"
