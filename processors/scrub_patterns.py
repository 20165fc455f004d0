"""User value patterns (``RAPTORFLOW_SCRUB_EXTRA_PATTERNS``), compiled with Google's RE2.

RE2 matches in time linear in the input and has no backtracking, so a user's pattern such as
``(a+)+$`` cannot stall a request on a long value. Python's own ``re`` would take exponential time
there, so user patterns never fall back to it: without ``google-re2`` they are rejected.
"""

from __future__ import annotations

from typing import Callable, Iterator

__all__ = ["PatternError", "compile_patterns", "split_patterns"]

# One user pattern: its rule name and a function yielding (start, end) of each match in a text.
CompiledPattern = tuple[str, Callable[[str], Iterator[tuple[int, int]]]]


class PatternError(ValueError):
    """A user pattern that RE2 cannot compile; the message names the pattern and the reason."""


def split_patterns(text: str) -> tuple[str, ...]:
    """Split the setting's text into patterns: they are separated by whitespace."""
    return tuple(text.split())


def compile_patterns(patterns: tuple[str, ...]) -> tuple[CompiledPattern, ...]:
    """Compile each pattern with RE2; raises PatternError for the first one that does not compile."""
    try:
        import re2
    except ImportError:  # pragma: no cover - google-re2 is a dependency; a platform may lack a wheel
        raise PatternError("the google-re2 package, which is not installed") from None

    options = re2.Options()
    options.log_errors = False  # RE2 would print its own copy of the error to stderr
    compiled: list[CompiledPattern] = []
    for number, pattern in enumerate(patterns, start=1):
        try:
            regex = re2.compile(pattern, options=options)
        except re2.error as error:
            reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
            raise PatternError(f"RE2 patterns; {pattern!r} is not valid ({reason})") from None
        compiled.append((f"custom-{number}", _finder(regex)))
    return tuple(compiled)


def _finder(regex) -> Callable[[str], Iterator[tuple[int, int]]]:  # noqa: ANN001 - re2._Regexp
    def find(text: str) -> Iterator[tuple[int, int]]:
        for match in regex.finditer(text):
            if match.end() > match.start():  # an empty match hides nothing
                yield match.start(), match.end()

    return find
