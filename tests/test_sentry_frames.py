"""Tests for `exporters/sentry_frames.py`.

Every traceback here comes from a real exception raised in this file and formatted with
`traceback.format_exception`, which is exactly what OpenTelemetry stores in the
`exception.stacktrace` span event attribute. Expected line numbers are recorded with
`sys._getframe().f_lineno` right before the line that calls or raises.
"""

from __future__ import annotations

import json
import linecache
import os
import sys
import time
import traceback
import uuid

import pytest

from raptorflow_otel.exporters import sentry_frames
from raptorflow_otel.exporters.sentry_frames import (
    FALLBACK_TYPE,
    MAX_VALUE_BYTES,
    TRUNCATED_VALUE,
    parse_exception_chain,
    parse_python_traceback,
)
from raptorflow_otel.processors import guard

THIS_FILE = os.path.abspath(__file__)
PROJECT_ROOT = os.path.dirname(os.path.dirname(THIS_FILE))
THIS_MODULE = "tests.test_sentry_frames"  # as derived from the path relative to PROJECT_ROOT

# Line numbers of calls and raises, filled in by the functions below as they run.
LINES: dict[str, int] = {}


def _next_line(name: str) -> None:
    """Record the line number following the caller's current line under `name`."""
    LINES[name] = sys._getframe(1).f_lineno + 1


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _capture(func, *args) -> BaseException:
    try:
        _next_line("capture")
        func(*args)
    except BaseException as exc:  # noqa: BLE001 - the tests want every kind
        return exc
    raise AssertionError("expected an exception")


def _source(lineno: int) -> str:
    return linecache.getline(THIS_FILE, lineno).strip()


def _level_two() -> None:
    _next_line("level_two")
    raise ValueError("boom in level two")


def _level_one() -> None:
    _next_line("level_one")
    _level_two()


def _subscript_missing() -> None:
    data: dict[str, dict[str, int]] = {"a": {}}
    _next_line("subscript")
    return data["a"]["missing"] + 1  # type: ignore[return-value]


def _raise_from() -> None:
    try:
        _next_line("cause")
        {}["cause-key"]
    except KeyError as err:
        _next_line("raise_from")
        raise RuntimeError("wrapped\nsecond line") from err


def _raise_while_handling() -> None:
    try:
        _next_line("zero")
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        _next_line("during")
        raise LookupError("while handling")


def _key_error_without_message() -> None:
    _next_line("bare_key_error")
    raise KeyError


def _recurse(depth: int) -> None:
    if depth == 0:
        _next_line("recurse_raise")
        raise RecursionError("deep enough")
    _next_line("recurse_call")
    _recurse(depth - 1)


def _sqlalchemy_missing_table() -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine("sqlite:///:memory:")
    try:
        with engine.connect() as connection:
            _next_line("sql")
            connection.execute(sqlalchemy.text("SELECT * FROM missing_table WHERE id = :id"), {"id": 7})
    finally:
        engine.dispose()


def _multiline_call() -> None:
    _next_line("multiline")
    _level_two_args(
        "first",
        "second",
    )


def _level_two_args(*args: str) -> None:
    _next_line("multiline_raise")
    raise ValueError(", ".join(args))


def _json_error() -> None:
    _next_line("json")
    json.loads("{not json")


def _eval_lambda() -> None:
    _next_line("eval")
    eval("(lambda: 1 / 0)()")  # noqa: S307 - produces `<string>` frames on purpose


def _syntax_error() -> None:
    _next_line("compile")
    compile("x = (", "<input>", "exec")


def _local_class() -> None:
    class LocalError(Exception):
        pass

    raise LocalError("defined inside a function")


def _frames(exc_dict: dict) -> list[dict]:
    return exc_dict.get("stacktrace", {}).get("frames", [])


def _assert_relay_accepts(values: list[dict]) -> None:
    sentry_relay = pytest.importorskip("sentry_relay")
    event = {
        "event_id": uuid.uuid4().hex,
        "platform": "python",
        "level": "error",
        "timestamp": time.time(),
        "exception": {"values": values},
    }
    normalized = sentry_relay.StoreNormalizer().normalize_event(event)
    assert "errors" not in normalized, normalized.get("errors")
    assert len(normalized["exception"]["values"]) == len(values)


# --- nested frames ---------------------------------------------------------------------------


def test_nested_frames_order_and_lines():
    exc = _capture(_level_one)
    result = parse_python_traceback(_format(exc), project_root=PROJECT_ROOT)

    assert result["type"] == "ValueError"
    assert result["value"] == "boom in level two"
    assert result["module"] is None  # builtins are printed without a module
    frames = _frames(result)
    assert [f["function"] for f in frames] == ["_capture", "_level_one", "_level_two"]
    assert [f["lineno"] for f in frames] == [LINES["capture"], LINES["level_one"], LINES["level_two"]]
    for frame in frames:
        assert frame["abs_path"] == THIS_FILE
        assert frame["filename"] == "tests/test_sentry_frames.py"
        assert frame["module"] == THIS_MODULE
        assert frame["in_app"] is True
        assert frame["context_line"] == _source(frame["lineno"])
    assert frames[-1]["context_line"] == 'raise ValueError("boom in level two")'
    _assert_relay_accepts([result])


def test_frames_without_project_root():
    frames = _frames(parse_python_traceback(_format(_capture(_level_one))))
    assert frames[-1]["filename"] == THIS_FILE
    assert "module" not in frames[-1]
    assert frames[-1]["in_app"] is True


def test_caret_lines_are_skipped():
    text = _format(_capture(_subscript_missing))
    frames = _frames(parse_python_traceback(text, project_root=PROJECT_ROOT))

    if sys.version_info >= (3, 11):
        assert any(set(line.strip()) <= {"^", "~"} for line in text.splitlines() if line.strip())
    assert len(frames) == text.count('\n  File "')
    assert frames[-1]["lineno"] == LINES["subscript"]
    assert frames[-1]["context_line"] == 'return data["a"]["missing"] + 1  # type: ignore[return-value]'
    for frame in frames:
        assert set(frame["context_line"]) - {"^", "~", " "}


def test_multiline_call_uses_first_line():
    # Python 3.13 prints every line of a multi-line call, while 3.11 and 3.12 print markers.
    text = _format(_capture(_multiline_call))
    frames = _frames(parse_python_traceback(text))

    assert [f["function"] for f in frames] == ["_capture", "_multiline_call", "_level_two_args"]
    assert frames[1]["lineno"] == LINES["multiline"]
    assert frames[1]["context_line"] == "_level_two_args("
    assert frames[2]["lineno"] == LINES["multiline_raise"]


def test_in_app_include_exclude_prefixes():
    text = _format(_capture(_level_one))
    excluded = _frames(parse_python_traceback(text, in_app_exclude=("tests",), project_root=PROJECT_ROOT))
    assert [f["in_app"] for f in excluded] == [False] * len(excluded)
    # Include wins over exclude. A bare string is one prefix, not a set of letters.
    both = _frames(
        parse_python_traceback(
            text, in_app_include=THIS_MODULE, in_app_exclude=["tests"], project_root=PROJECT_ROOT
        )
    )
    assert [f["in_app"] for f in both] == [True] * len(both)
    # A prefix must end at a dot: `tests.test_sentry` does not cover `tests.test_sentry_frames`.
    partial = _frames(
        parse_python_traceback(text, in_app_exclude=("tests.test_sentry",), project_root=PROJECT_ROOT)
    )
    assert [f["in_app"] for f in partial] == [True] * len(partial)


# --- chains ----------------------------------------------------------------------------------


def test_explicit_chain_cause_first():
    exc = _capture(_raise_from)
    text = _format(exc)
    assert "The above exception was the direct cause" in text
    chain = parse_exception_chain(text, project_root=PROJECT_ROOT)

    assert [e["type"] for e in chain] == ["KeyError", "RuntimeError"]
    cause, raised = chain
    assert cause["value"] == "'cause-key'"
    assert [f["lineno"] for f in _frames(cause)] == [LINES["cause"]]
    assert raised["value"] == "wrapped\nsecond line"
    assert [f["lineno"] for f in _frames(raised)] == [LINES["capture"], LINES["raise_from"]]
    assert parse_python_traceback(text, project_root=PROJECT_ROOT) == raised
    _assert_relay_accepts(chain)


def test_implicit_chain_during_handling():
    text = _format(_capture(_raise_while_handling))
    assert "During handling of the above exception" in text
    chain = parse_exception_chain(text)

    assert [(e["type"], e["value"]) for e in chain] == [
        ("ZeroDivisionError", "division by zero"),
        ("LookupError", "while handling"),
    ]
    assert _frames(chain[0])[-1]["lineno"] == LINES["zero"]
    assert _frames(chain[1])[-1]["lineno"] == LINES["during"]
    _assert_relay_accepts(chain)


def test_cause_without_traceback():
    def raise_unraised_cause() -> None:
        raise RuntimeError("outer") from ValueError("never raised")

    chain = parse_exception_chain(_format(_capture(raise_unraised_cause)))
    assert [(e["type"], e["value"]) for e in chain] == [
        ("ValueError", "never raised"),
        ("RuntimeError", "outer"),
    ]
    assert "stacktrace" not in chain[0]
    _assert_relay_accepts(chain)


# --- library code ----------------------------------------------------------------------------


def test_sqlalchemy_error_chain():
    exc = _capture(_sqlalchemy_missing_table)
    text = _format(exc)
    chain = parse_exception_chain(text, project_root=PROJECT_ROOT)
    raised = chain[-1]

    assert raised["type"] == "OperationalError"
    assert raised["module"] == "sqlalchemy.exc"
    assert raised["value"] == str(exc)
    assert raised["value"].startswith("(sqlite3.OperationalError) no such table: missing_table\n[SQL: ")
    assert chain[0]["type"] == "OperationalError"
    assert chain[0]["module"] == "sqlite3"
    assert chain[0]["value"] == "no such table: missing_table"

    frames = _frames(raised)
    expected = traceback.extract_tb(exc.__traceback__)
    assert [(f["function"], f["lineno"]) for f in frames] == [(e.name, e.lineno) for e in expected]
    assert frames[0]["function"] == "_capture"
    app_frames = [f for f in frames if f["abs_path"] == THIS_FILE]
    assert [f["lineno"] for f in app_frames] == [LINES["capture"], LINES["sql"]]
    assert [f["in_app"] for f in app_frames] == [True, True]

    library = [f for f in frames if "site-packages" in f["abs_path"]]
    assert library, "SQLAlchemy should be installed under site-packages"
    for frame in library:
        assert frame["in_app"] is False
        assert frame["filename"].startswith("sqlalchemy/")
        assert frame["abs_path"].endswith("/site-packages/" + frame["filename"])
        expected_module = frame["filename"][: -len(".py")].replace("/", ".")
        assert frame["module"] == expected_module
    assert "sqlalchemy.engine.base" in {f["module"] for f in library}
    assert frames[-1] is library[-1]  # raised inside SQLAlchemy

    forced = _frames(parse_python_traceback(text, in_app_include=("sqlalchemy.engine",)))
    engine_frames = [f for f in forced if f.get("module", "").startswith("sqlalchemy.engine.")]
    assert engine_frames
    assert [f["in_app"] for f in engine_frames] == [True] * len(engine_frames)
    _assert_relay_accepts(chain)


def test_stdlib_frames_are_not_in_app():
    text = _format(_capture(_json_error))
    result = parse_python_traceback(text, project_root=PROJECT_ROOT)

    assert result["type"] == "JSONDecodeError"
    assert result["module"] == "json.decoder"
    frames = _frames(result)
    assert frames[1]["lineno"] == LINES["json"]
    assert frames[1]["in_app"] is True
    stdlib = frames[2:]
    assert stdlib
    for frame in stdlib:
        assert frame["in_app"] is False
        assert frame["module"].startswith("json")
        assert frame["filename"].startswith("json/")
    assert stdlib[0]["module"] == "json"  # json/__init__.py
    _assert_relay_accepts([result])


# --- special exceptions ----------------------------------------------------------------------


def test_key_error_without_message():
    text = _format(_capture(_key_error_without_message))
    assert text.rstrip().endswith("\nKeyError")
    result = parse_python_traceback(text)
    assert result["type"] == "KeyError"
    assert result["value"] == ""
    assert _frames(result)[-1]["lineno"] == LINES["bare_key_error"]
    _assert_relay_accepts([result])


def test_local_exception_class():
    exc = _capture(_local_class)
    result = parse_python_traceback(_format(exc))
    assert result["type"] == "LocalError"
    expected_module = None if type(exc).__module__ in ("__main__", "builtins") else type(exc).__module__
    assert result["module"] == expected_module
    assert result["value"] == "defined inside a function"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is built in from Python 3.11")
def test_exception_group_reports_group():
    def raise_group() -> None:
        _next_line("group")
        raise ExceptionGroup(  # noqa: F821 - builtin from 3.11
            "several failures",
            [ValueError("first"), TypeError("second"), ExceptionGroup("nested", [KeyError("k")])],  # noqa: F821
        )

    exc = _capture(raise_group)
    text = _format(exc)
    assert "+ Exception Group Traceback" in text
    chain = parse_exception_chain(text, project_root=PROJECT_ROOT)

    assert len(chain) == 1
    group = chain[0]
    assert group["type"] == "ExceptionGroup"
    assert group["value"] == str(exc) == "several failures (3 sub-exceptions)"
    frames = _frames(group)
    assert [f["lineno"] for f in frames] == [LINES["capture"], LINES["group"]]
    assert [f["function"] for f in frames] == ["_capture", "raise_group"]
    assert {f["module"] for f in frames} == {THIS_MODULE}
    _assert_relay_accepts(chain)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is built in from Python 3.11")
def test_exception_group_as_cause():
    def raise_from_group() -> None:
        try:
            raise ExceptionGroup("inner group", [ValueError("v")])  # noqa: F821
        except Exception as err:
            _next_line("after_group")
            raise RuntimeError("after the group") from err

    chain = parse_exception_chain(_format(_capture(raise_from_group)))
    assert [(e["type"], e["value"]) for e in chain] == [
        ("ExceptionGroup", "inner group (1 sub-exception)"),
        ("RuntimeError", "after the group"),
    ]
    assert _frames(chain[1])[-1]["lineno"] == LINES["after_group"]
    _assert_relay_accepts(chain)


def test_string_and_lambda_frames():
    result = parse_python_traceback(_format(_capture(_eval_lambda)), project_root=PROJECT_ROOT)
    assert result["type"] == "ZeroDivisionError"
    frames = _frames(result)
    assert [f["function"] for f in frames] == ["_capture", "_eval_lambda", "<module>", "<lambda>"]
    assert frames[1]["lineno"] == LINES["eval"]
    for frame in frames[2:]:
        assert frame["filename"] == frame["abs_path"] == "<string>"
        assert frame["lineno"] == 1
        assert frame["in_app"] is True
        assert "module" not in frame
        assert "context_line" not in frame
    _assert_relay_accepts([result])


def test_recursion_repeat_marker_skipped():
    text = _format(_capture(_recurse, 30))
    assert "[Previous line repeated" in text
    frames = _frames(parse_python_traceback(text))
    assert len(frames) == text.count('\n  File "')
    assert frames[-1]["lineno"] == LINES["recurse_raise"]
    assert {f["lineno"] for f in frames[1:-1]} == {LINES["recurse_call"]}
    for frame in frames:
        assert frame["context_line"] == _source(frame["lineno"])


def test_syntax_error_location_skipped():
    text = _format(_capture(_syntax_error))
    result = parse_python_traceback(text)
    assert result["type"] == "SyntaxError"
    frames = _frames(result)
    assert "<input>" not in {f["abs_path"] for f in frames}
    assert frames[-1]["lineno"] == LINES["compile"]
    assert frames[-1]["context_line"] == 'compile("x = (", "<input>", "exec")'


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "   \n", "hello world", "not a traceback\nat all: really", "    indented garbage\n\tmore"],
)
def test_garbage_gives_fallback_error(text):
    result = parse_python_traceback(text)
    assert result == {"type": FALLBACK_TYPE, "value": text, "module": None}
    assert parse_exception_chain(text) == [result]
    _assert_relay_accepts([result])


@pytest.mark.parametrize("value", [None, b"bytes: not text\n\x00", 12345, object()])
def test_non_string_input(value):
    result = parse_python_traceback(value)  # type: ignore[arg-type]
    assert isinstance(result["type"], str)
    assert isinstance(result["value"], str)


def test_huge_garbage_truncated():
    text = "é garbage line without structure " * 2000
    result = parse_python_traceback(text)
    assert result["type"] == FALLBACK_TYPE
    assert len(result["value"].encode("utf-8")) <= MAX_VALUE_BYTES
    assert text.startswith(result["value"])


def test_truncated_traceback_keeps_frames():
    # OTel attribute length limits can cut `exception.stacktrace` before the exception line.
    text = _format(_capture(_level_one))
    cut = text[: text.index("  File", text.index("_level_one")) + 5]
    result = parse_python_traceback(cut)
    assert result["type"] == FALLBACK_TYPE
    assert result["value"] == TRUNCATED_VALUE
    assert [f["function"] for f in _frames(result)] == ["_capture", "_level_one"]
    _assert_relay_accepts([result])


def test_crlf_and_ansi_colours():
    text = _format(_capture(_level_one))
    coloured = text.replace("ValueError", "\x1b[1;35mValueError\x1b[0m").replace("\n", "\r\n")
    assert parse_python_traceback(coloured) == parse_python_traceback(text)


def test_parser_bug_gives_fallback(monkeypatch):
    # The conftest makes the guard raise, and this test checks the production behaviour instead.
    monkeypatch.setattr(guard, "RAISE_INTERNAL_ERRORS", False)

    def broken_section_parser(lines, options):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(sentry_frames, "_parse_section", broken_section_parser)
    text = _format(_capture(_level_one))
    before = guard.failure_counts().get("traceback parsing", 0)
    assert parse_exception_chain(text) == [{"type": FALLBACK_TYPE, "value": text, "module": None}]
    assert guard.failure_counts()["traceback parsing"] == before + 1


def test_unparseable_chain_part_dropped():
    text = _format(_capture(_raise_from))
    first_separator = text.index("\nThe above exception")
    mangled = "garbage that is not a traceback\n" + text[first_separator:]
    chain = parse_exception_chain(mangled)
    assert [e["type"] for e in chain] == ["RuntimeError"]
