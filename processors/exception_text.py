"""Exception attributes for spans and log records, without the cost of `traceback.format_exception`.

On Python 3.11, ``traceback.format_exception`` computes the ``^^^^`` markers under every frame
by parsing the source line (``ast.parse``) and stats every source file. For an exception raised
through FastAPI's middleware stack (about 30 frames) that took about 0.9 ms on the development
machine, on the request thread. `format_exception_text` walks the traceback itself and reads
source lines from ``linecache``: about 30 us for the same exception.

The text has the layout of ``traceback.format_exception`` without the marker lines. It has the
``Traceback (most recent call last):`` header and two lines per frame. Chained exceptions
(``__cause__`` and an unsuppressed ``__context__``) come first, with the standard separator
sentences, and ``format_exception_only`` gives the last line. So
`raptorflow_otel.exporters.sentry_frames` and any reader of Python tracebacks parse it as usual. Repeated frames (recursion) collapse after three,
as in the standard library. Exception groups are formatted by the standard library.
"""

from __future__ import annotations

import linecache
import traceback
from types import TracebackType

CAUSE_LINE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT_LINE = "\nDuring handling of the above exception, another exception occurred:\n\n"
# The standard library prints three repeats of a frame, then "[Previous line repeated N more times]".
_REPEAT_LIMIT = 3


def exception_type_name(exception: BaseException) -> str:
    """Return ``module.QualName`` of the exception's class, bare for builtins (OpenTelemetry's convention)."""
    kind = type(exception)
    module = kind.__module__
    return kind.__qualname__ if not module or module == "builtins" else f"{module}.{kind.__qualname__}"


def exception_attributes(exception: BaseException) -> dict[str, str]:
    """Return the ``exception.type``, ``exception.message`` and ``exception.stacktrace`` attributes."""
    return {
        "exception.type": exception_type_name(exception),
        "exception.message": _safe_str(exception),
        "exception.stacktrace": format_exception_text(exception),
    }


def format_exception_text(exception: BaseException) -> str:
    """Format the traceback text of ``exception`` and its chain, oldest exception first."""
    if isinstance(exception, BaseExceptionGroup):
        return "".join(traceback.format_exception(exception))
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exception
    separator = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, separator))
        if current.__cause__ is not None:
            current, separator = current.__cause__, CAUSE_LINE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, separator = current.__context__, CONTEXT_LINE
        else:
            current = None
    parts: list[str] = []
    # Each entry's separator is the sentence that links it to the newer exception printed after it.
    for index in range(len(chain) - 1, -1, -1):
        item, separator = chain[index]
        parts.extend(_format_one(item))
        if index:
            parts.append(separator)
    return "".join(parts)


def _format_one(exception: BaseException) -> list[str]:
    lines = []
    if exception.__traceback__ is not None:
        lines.append("Traceback (most recent call last):\n")
        lines.extend(_frame_lines(exception.__traceback__))
    lines.extend(traceback.format_exception_only(type(exception), exception))
    return lines


def _frame_lines(tb: TracebackType | None) -> list[str]:
    lines: list[str] = []
    previous = None
    repeats = 0
    while tb is not None:
        code = tb.tb_frame.f_code
        lineno = tb.tb_lineno
        key = (code.co_filename, lineno, code.co_name)
        if key == previous:
            repeats += 1
        else:
            _flush_repeats(lines, repeats)
            previous, repeats = key, 1
        if repeats <= _REPEAT_LIMIT:
            lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
            source = linecache.getline(code.co_filename, lineno).strip()
            if source:
                lines.append(f"    {source}\n")
        tb = tb.tb_next
    _flush_repeats(lines, repeats)
    return lines


def _flush_repeats(lines: list[str], repeats: int) -> None:
    hidden = repeats - _REPEAT_LIMIT
    if hidden > 0:
        lines.append(f"  [Previous line repeated {hidden} more time{'s' if hidden > 1 else ''}]\n")


def _safe_str(exception: BaseException) -> str:
    try:
        return str(exception)
    except Exception:  # noqa: BLE001 - a broken __str__ must not stop the report
        return f"<exception str() failed: {type(exception).__name__}>"
