"""Turn a formatted Python traceback back into Sentry's exception interface.

OpenTelemetry records exceptions on spans as text only: the `exception.stacktrace` event
attribute contains `"".join(traceback.format_exception(exc))`. Sentry expects structured data
(`exception.values[]` with `type`, `value`, `module` and `stacktrace.frames[]`), so this module
parses that text.

Contract of every exception dict returned here:

* `type` (str) and `value` (str) are always present. `value` is `str(exc)` as the traceback
  printed it, cut to 8 KB of UTF-8 and without trailing empty lines. It includes exception notes,
  because `traceback` prints them right after the message.
* `module` is the dotted module of the exception class, or None when the traceback did not print
  one (`traceback` omits `builtins` and `__main__`).
* `stacktrace` is present only when there is at least one frame, because Sentry's normalizer
  (sentry-relay 0.10) reports an empty frame list as invalid data.
* Frames are ordered oldest call first, so the last frame is where the exception was raised.
  This is the order Sentry expects and the order `traceback` prints.

Each frame has `filename`, `abs_path`, `function` and `in_app`, plus `module`, `lineno` and
`context_line` when known. Rules:

* `filename` is the path after the last `site-packages/` or `dist-packages/`, else relative to
  the standard library directory, else relative to `project_root`, else the path as printed.
* `module` is derived from that relative path: `sqlalchemy/engine/base.py` gives
  `sqlalchemy.engine.base`, `pkg/__init__.py` gives `pkg`, and `<frozen importlib._bootstrap>`
  gives `importlib._bootstrap`. It is omitted for paths outside those roots and for names that are
  not importable (`<string>`, directories with dashes).
* `in_app` is True unless the frame is library code: under site-packages/dist-packages, under the
  standard library of this interpreter (`sys.prefix` and `sys.base_prefix`), or `<frozen ...>`.
  Module prefixes in `in_app_include` force True and win over `in_app_exclude`, which forces
  False. A prefix matches the module itself and its submodules.

Input that does not look like a traceback yields one frame-less exception of type "Error" whose
value is the raw text, truncated to 8 KB. Unexpected exceptions go through the project's
internal-error guard, which logs them and returns the same fallback instead of raising.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import sysconfig
from collections.abc import Iterable

from raptorflow_otel.processors.guard import guarded

__all__ = ["parse_exception_chain", "parse_python_traceback"]

_logger = logging.getLogger(__name__)

MAX_VALUE_BYTES = 8192
FALLBACK_TYPE = "Error"
TRUNCATED_VALUE = "(the traceback text ends before the exception line, so it was probably truncated)"

_HEADER = "Traceback (most recent call last):"
# `traceback` puts one of these sentences between two blank lines to separate the exceptions of
# a chain. The cause (or context) is printed first.
_CHAIN_SEPARATORS = frozenset(
    {
        "The above exception was the direct cause of the following exception:",
        "During handling of the above exception, another exception occurred:",
    }
)
# Frame lines are indented by exactly two spaces and source lines by four, so source text that
# starts with `File "` is never taken for a frame. The greedy path also accepts `", line ` in paths.
_FRAME_RE = re.compile(r'  File "(?P<path>.*)", line (?P<lineno>\d+|None|\?), in (?P<function>.*)')
# An exception group prints its own lines with `| ` after an indent. When the group has a
# traceback, its first line is `+ Exception Group Traceback (most recent call last):` at that indent.
_GROUP_HEADER_RE = re.compile(
    r"(?P<indent> *)\+ Exception Group Traceback \(most recent call last\):\s*"
)
_GROUP_LINE_RE = re.compile(r"(?P<indent> *)\|(?: |$)")
# Python 3.11+ marks the failing expression under the source line with `^` and `~`.
_MARKER_RE = re.compile(r"\s*[\^~]+\s*")
# `[Previous line repeated 994 more times]` follows recursive frames. The repeats are not expanded.
_REPEATED_RE = re.compile(r"\s*\[Previous line repeated \d+ more times?\]\s*")
# The exception line: a dotted class path (qualnames of local classes contain `<locals>`),
# optionally followed by `: ` and the first line of the message.
_TYPE_RE = re.compile(
    r"(?P<path>[^\W\d]\w*(?:\.(?:[^\W\d]\w*|<locals>))*)(?::(?: (?P<value>.*)|\s*))?"
)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SOURCE_SUFFIXES = (".py", ".pyw", ".pyc", ".pyo", ".pyx")
_LIBRARY_DIR_MARKERS = ("/site-packages/", "/dist-packages/")

_logged_kinds: set[str] = set()


def _log_once(kind: str, message: str) -> None:
    """Log `message` at debug level for the first problem of `kind` only.

    Parsing runs for every exported exception, so repeats would flood the log.
    """
    if kind in _logged_kinds:
        return
    _logged_kinds.add(kind)
    _logger.debug(message)


def _normalise_dir(path: str) -> str:
    return path.replace("\\", "/").rstrip("/")


def _stdlib_dirs() -> tuple[str, ...]:
    """Return the standard library directories of this interpreter (venv or not), `/`-separated."""
    candidates: set[str] = set()
    try:
        paths = sysconfig.get_paths()
        candidates.update(paths[key] for key in ("stdlib", "platstdlib") if paths.get(key))
    except Exception:  # noqa: BLE001 - the prefix-based candidates below cover the usual layouts
        pass
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        if prefix:
            candidates.add(os.path.join(prefix, "lib", version))
            candidates.add(os.path.join(prefix, "lib64", version))
            candidates.add(os.path.join(prefix, "Lib"))
    resolved = set()
    for candidate in candidates:
        resolved.add(_normalise_dir(candidate))
        resolved.add(_normalise_dir(os.path.realpath(candidate)))
    # A root of `/` (or empty) would classify every file as stdlib.
    return tuple(sorted((d for d in resolved if len(d) > 1), key=len, reverse=True))


_STDLIB_DIRS = _stdlib_dirs()


def _relative_to(path: str, root: str) -> str | None:
    if path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return None


def _module_from_relative(relative: str) -> str | None:
    """Convert `sqlalchemy/engine/base.py` to `sqlalchemy.engine.base`, or None if not importable."""
    parts = relative.split("/")
    name = parts.pop()
    for suffix in _SOURCE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        return None
    if name != "__init__":
        parts.append(name)
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)


# The same few hundred source files appear in every traceback, so each path is classified once.
@functools.lru_cache(maxsize=4096)
def _classify_path(path: str, project_root: str | None) -> tuple[str, str | None, bool]:
    """Return (filename, module, is_library_code) for a path printed in a traceback."""
    if path.startswith("<") and path.endswith(">"):
        if path.startswith("<frozen ") and len(path) > len("<frozen >"):
            # Frozen modules are part of the interpreter, and their name is the module name.
            name = path[len("<frozen ") : -1].strip()
            dotted_ok = all(part.isidentifier() for part in name.split("."))
            return path, name if dotted_ok else None, True
        return path, None, False
    normalised = path.replace("\\", "/")
    for marker in _LIBRARY_DIR_MARKERS:
        index = normalised.rfind(marker)
        if index != -1:
            relative = normalised[index + len(marker) :]
            return relative, _module_from_relative(relative), True
    for root in _STDLIB_DIRS:
        relative = _relative_to(normalised, root)
        if relative is not None:
            return relative, _module_from_relative(relative), True
    if project_root:
        # NOTE: the module is the path relative to project_root, so a src layout gives `src.pkg.mod`.
        relative = _relative_to(normalised, _normalise_dir(project_root))
        if relative is not None:
            return relative, _module_from_relative(relative), False
    return path, None, False


def _matches_prefix(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


class _Options:
    """The caller's settings, normalised once per parse."""

    __slots__ = ("include", "exclude", "project_root")

    def __init__(self, include: object, exclude: object, project_root: object) -> None:
        self.include = self._prefixes(include)
        self.exclude = self._prefixes(exclude)
        self.project_root = project_root if isinstance(project_root, str) and project_root else None

    @staticmethod
    def _prefixes(value: object) -> tuple[str, ...]:
        # A bare string is one prefix, not an iterable of one-letter prefixes.
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, Iterable):
            return ()
        return tuple(p.strip(".") for p in value if isinstance(p, str) and p.strip("."))


def _make_frame(match: re.Match[str], options: _Options) -> dict:
    path = match["path"]
    filename, module, is_library = _classify_path(path, options.project_root)
    frame: dict = {"filename": filename, "abs_path": path, "function": match["function"]}
    if module:
        frame["module"] = module
    if match["lineno"].isdigit():
        frame["lineno"] = int(match["lineno"])
    if module and _matches_prefix(module, options.include):
        frame["in_app"] = True
    elif module and _matches_prefix(module, options.exclude):
        frame["in_app"] = False
    else:
        frame["in_app"] = not is_library
    return frame


def _truncate(text: str, limit: int = MAX_VALUE_BYTES) -> str:
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def _split_exception_path(path: str) -> tuple[str, str | None]:
    """Split `sqlalchemy.exc.OperationalError` into (`OperationalError`, `sqlalchemy.exc`).

    For classes defined inside a function (`pkg.mod.func.<locals>.Error`) the module is what
    precedes the function name. Nested classes (`mod.Outer.Inner`) look the same as
    modules in the text and yield `mod.Outer`.
    """
    parts = path.split(".")
    if "<locals>" in parts:
        module_parts = parts[: max(parts.index("<locals>") - 1, 0)]
    else:
        module_parts = parts[:-1]
    return parts[-1], ".".join(module_parts) or None


def _unwrap_group(lines: list[str]) -> list[str]:
    """Return the exception group's own lines without the `| ` prefix, or `lines` unchanged.

    The sub-exceptions (after the first `+-+---- 1 ----` separator) are dropped: Sentry links
    them through `mechanism`, which is not produced here, so only the group itself is reported.
    """
    first = lines[0]
    header = _GROUP_HEADER_RE.fullmatch(first)
    if header is not None:
        indent, body, unwrapped = len(header["indent"]), lines[1:], [_HEADER]
    else:
        bar_line = _GROUP_LINE_RE.match(first)
        if bar_line is None:
            return lines
        indent, body, unwrapped = len(bar_line["indent"]), lines, []
    bar = " " * indent + "|"
    for line in body:
        if not line.startswith(bar):
            break
        unwrapped.append(line[len(bar) + 1 :])
    return unwrapped


def _parse_section(lines: list[str], options: _Options) -> dict | None:
    """Parse one exception of a chain, or return None when the lines are not a traceback."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if not lines:
        return None
    lines = _unwrap_group(lines)
    if not lines:
        return None

    index = 0
    if lines[0].strip() == _HEADER:
        index = 1
    elif not (_FRAME_RE.fullmatch(lines[0]) or _TYPE_RE.fullmatch(lines[0])):
        return None

    frames: list[dict] = []
    current: dict | None = None
    while index < len(lines):
        line = lines[index]
        match = _FRAME_RE.fullmatch(line)
        if match is not None:
            current = _make_frame(match, options)
            frames.append(current)
        elif not line.strip():
            pass
        elif line[0] in " \t":
            if not line.startswith("    "):
                # Two-space lines that are not frames (`[Previous line repeated ...]`, the
                # `File "x", line N` location of a SyntaxError) end the current frame, so the
                # source they introduce is not attached to it.
                current = None
            elif (
                current is not None
                and "context_line" not in current
                and not _MARKER_RE.fullmatch(line)
                and not _REPEATED_RE.fullmatch(line)
            ):
                # The first source line is the one at `lineno`. Python 3.13 also prints the other
                # lines of a multi-line expression, and those are skipped like the markers.
                current["context_line"] = line.strip()
        else:
            break
        index += 1

    remainder = lines[index:]
    type_match = _TYPE_RE.fullmatch(remainder[0]) if remainder else None
    if type_match is None:
        if not frames:
            return None
        exc_type, module = FALLBACK_TYPE, None
        value = "\n".join(remainder) if remainder else TRUNCATED_VALUE
    else:
        exc_type, module = _split_exception_path(type_match["path"])
        value_lines = remainder[1:]
        if type_match["value"] is not None:
            value_lines = [type_match["value"], *value_lines]
        value = "\n".join(value_lines)

    result: dict = {"type": exc_type, "value": _truncate(value), "module": module}
    if frames:
        result["stacktrace"] = {"frames": frames}
    return result


def _split_chain(lines: list[str]) -> list[list[str]]:
    """Split the lines at the chain separators, each of which is between two blank lines.

    NOTE: an exception message that contains a separator between blank lines is split there too.
    """
    sections: list[list[str]] = []
    start = 0
    index = 1
    while index < len(lines):
        if (
            lines[index].rstrip() in _CHAIN_SEPARATORS
            and not lines[index - 1].strip()
            and (index + 1 == len(lines) or not lines[index + 1].strip())
        ):
            sections.append(lines[start : index - 1])
            start = index + 2
            index += 2
            continue
        index += 1
    sections.append(lines[start:])
    return sections


def _fallback(text: str) -> dict:
    return {"type": FALLBACK_TYPE, "value": _truncate(text), "module": None}


def _as_text(text: object) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", "replace")
    return "" if text is None else str(text)


def _parse_chain(raw: str, include: object, exclude: object, project_root: object) -> list[dict]:
    options = _Options(include, exclude, project_root)
    lines = _ANSI_RE.sub("", raw).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    parsed = [_parse_section(section, options) for section in _split_chain(lines)]
    if not parsed or parsed[-1] is None:
        if raw.strip():
            _log_once("unparsed", "exception text is not a Python traceback, so it is sent raw")
        return [_fallback(raw)]
    if any(item is None for item in parsed):
        _log_once("partial", "skipped the parts of a traceback chain that are not Python tracebacks")
    return [item for item in parsed if item is not None]


def parse_exception_chain(
    text: str,
    in_app_include: Iterable[str] = (),
    in_app_exclude: Iterable[str] = (),
    project_root: str | None = None,
) -> list[dict]:
    """Parse `traceback.format_exception` output into Sentry `exception.values`, oldest first.

    For `raise B from A` (or B raised while handling A) the result is `[A, B]`. This is both the
    printed order and the order Sentry expects. Exceptions of the chain that cannot be parsed are
    left out, and if the last one cannot be parsed the whole text becomes one fallback exception.
    The result is never empty. Internal errors are logged by the guard and also give the fallback.
    """
    raw = guarded(_as_text, text, what="traceback text conversion")
    if raw is None:
        return [_fallback("")]
    values = guarded(
        _parse_chain, raw, in_app_include, in_app_exclude, project_root, what="traceback parsing"
    )
    return values if values else [_fallback(raw)]


def parse_python_traceback(
    text: str,
    in_app_include: Iterable[str] = (),
    in_app_exclude: Iterable[str] = (),
    project_root: str | None = None,
) -> dict:
    """Parse a formatted traceback and return the exception actually raised (the last one).

    See the module docstring for the shape of the result and `parse_exception_chain` for errors.
    """
    return parse_exception_chain(text, in_app_include, in_app_exclude, project_root)[-1]
