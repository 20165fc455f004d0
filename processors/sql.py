"""Replace inline literals in SQL text by ``?`` so statements can be exported without their data.

`sanitize_sql` is used for the ``db.statement`` / ``db.query.text`` span attributes and is meant
to be reused by the privacy scrubber. Contract:

- single-quoted strings (``''`` and backslash escapes, prefixes ``N'..'``, ``E'..'``, ``X'..'``,
  ``B'..'``, ``U&'..'``), PostgreSQL dollar-quoted strings and numeric literals (integers,
  decimals, exponents, ``0x..`` hex, ``0b..`` binary, with a unary minus) become ``?``;
- bind-parameter markers (``?``, ``?1``, ``:name``, ``:1``, ``%s``, ``%(name)s``, ``$1``) are kept,
  so an already-parameterized statement comes back unchanged;
- digits inside identifiers (``table1``, ``col_2``, ``"col 3"``, `` `t4` ``) are kept; double
  quotes and backticks delimit identifiers, never values;
- comments are kept as they are (sqlcommenter puts trace ids there, not row data);
- ``IN (?, ?, ?)`` collapses to ``IN (?)`` so statements differing only in list length group
  together. Lists of named or numbered markers are left alone (the statement is kept as written).

When the text cannot be tokenized cleanly (an unterminated string, or a backslash that standard
SQL would not treat as an escape) the sanitizer errs toward replacing too much rather than
leaking a value: an unterminated string or dollar-quote runs to the end of the text.
"""

from __future__ import annotations

import re

__all__ = ["sanitize_sql"]

# One alternation scanned left to right in C. Only tokens that need a decision match, so plain
# words and markers cost no Python call; identifiers with digits are protected by the lookbehind
# on the number branch instead of being matched themselves.
_TOKEN = re.compile(
    r"""
      (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*.*?\*/)
    | (?P<identifier>"(?:[^"]|"")*"|`(?:[^`]|``)*`)
    | (?P<string>(?:(?<![\w$@#])(?:[NnEeXxBb]|[Uu]&))?'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<dollar>(?<![\w$])\$(?P<tag>[A-Za-z_]\w*|)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<number>
          (?P<minus>-\s*)?
          (?<![\w$@#:?.])
          (?:0[xX][0-9A-Fa-f]+|0[bB][01]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
          (?![\w$])
      )
    """,
    re.VERBOSE | re.DOTALL,
)

# After literals are gone: an IN list made only of `?` markers.
_IN_LIST = re.compile(r"\b(IN)\s*\(\s*\?(?:\s*,\s*\?)+\s*\)", re.IGNORECASE)

# A minus right after one of these ends a value, so it is a binary operator (`a - 1`), not a sign.
_VALUE_END = frozenset("_)]?'\"`$")


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind in ("string", "dollar"):
        return "?"
    if kind == "number":
        minus = match.group("minus")
        if minus and _follows_value(match.string, match.start()):
            return minus + "?"
        return "?"
    # Comments and quoted identifiers are kept verbatim; they only match so their insides are
    # not mistaken for literals.
    return match.group(0)


def _follows_value(text: str, position: int) -> bool:
    """Tell whether the text before ``position`` (ignoring spaces) ends a value or a name."""
    index = position - 1
    while index >= 0 and text[index].isspace():
        index -= 1
    if index < 0:
        return False
    char = text[index]
    return char.isalnum() or char in _VALUE_END


def sanitize_sql(statement: str) -> str:
    """Return ``statement`` with inline literals replaced by ``?`` (see the module docstring)."""
    if not statement:
        return statement
    sanitized = _TOKEN.sub(_replace, statement)
    if "?" in sanitized:
        sanitized = _IN_LIST.sub(r"\1 (?)", sanitized)
    return sanitized
