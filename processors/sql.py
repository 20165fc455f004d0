"""Replace inline literals in SQL text by ``?`` so statements can be exported without their data.

`sanitize_sql` is used for the ``db.statement`` / ``db.query.text`` span attributes and is meant
to be reused by the privacy scrubber. Contract:

- single-quoted strings (``''`` escapes, prefixes ``N'..'``, ``E'..'``, ``X'..'``, ``B'..'``,
  ``U&'..'``), PostgreSQL dollar-quoted strings and numeric literals (integers, decimals,
  exponents, ``0x..`` hex, ``0b..`` binary, with a unary minus) become ``?``; for MySQL and
  MariaDB, double-quoted strings too, and a backslash escapes the next character;
- bind-parameter markers (``?``, ``?1``, ``:name``, ``:1``, ``%s``, ``%(name)s``, ``$1``) are kept,
  so an already-parameterized statement comes back unchanged;
- digits inside identifiers (``table1``, ``col_2``, ``"col 3"``, `` `t4` ``) are kept; backticks
  and, outside MySQL, double quotes delimit identifiers, never values;
- comments are kept as they are (sqlcommenter puts trace ids there, not row data);
- when a literal was replaced, ``IN (?, ?, ?)`` collapses to ``IN (?)`` so statements differing
  only in list length group together. A statement without literals comes back unchanged, and
  lists of named or numbered markers are always left alone.

Where the text is ambiguous, the sanitizer replaces too much rather than leaking a value. An
unterminated string or dollar-quote runs to the end of the text. Outside MySQL, a text with a
backslash is read both ways and the result that hides more wins (see `sanitize_sql`).
"""

from __future__ import annotations

import re

__all__ = ["sanitize_sql"]

# Every token starts with one of the characters of the leading class, so the regex engine skips
# to candidates in C. The lookbehinds then identify the token that the candidate starts, and only
# real tokens come back as matches. A digit glued to a name or a marker (`table1`, `col_2`,
# `:1`, `?1`, `$1`, `t.c3`, `t.5`) is rejected by the first branch's lookbehinds. The dot is not a
# candidate (it is in every `table.column`): a number such as `.5` is found at its first digit
# and `sanitize_sql` widens the match over the dot.
_DIGITS_REST = r"(?:(?<=0)[xX][0-9A-Fa-f]+|(?<=0)[bB][01]+|\d*(?:\.\d*)?(?:[eE][+-]?\d+)?)"
_NUMBER = r"(?:0[xX][0-9A-Fa-f]+|0[bB][01]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_TOKEN_TEMPLATE = r"""
    [-/"`'$0-9]
    (?:
        (?<=[0-9])(?<![\w$@#:?][0-9])(?<![\w$@#:?.]\.[0-9])""" + _DIGITS_REST + r"""(?![\w$])     # number
      | (?<=-)(?:-[^\n]*|\s*""" + _NUMBER + r"""(?![\w$]))                    # -- comment, -number
      | (?<=/)\*.*?\*/                                                          # /* comment */
      | (?<=")DOUBLE_QUOTED                                                     # "identifier"
      | (?<=`)(?:[^`]|``)*`                                                     # `identifier`
      | (?<=')SINGLE_QUOTED                                                     # 'string'
      | (?<=\$)(?<![\w$]\$)(?P<tag>[A-Za-z_]\w*|)\$.*?(?:\$(?P=tag)\$|\Z)          # $tag$ string $tag$
    )
    """


def _token_pattern(backslash_escapes: bool) -> re.Pattern[str]:
    if backslash_escapes:
        single, double = r"(?:[^'\\]|\\.|'')*(?:'|\Z)", r'(?:[^"\\]|\\.|"")*(?:"|\Z)'
    else:
        single, double = r"(?:[^']|'')*(?:'|\Z)", r'(?:[^"]|"")*(?:"|\Z)'
    source = _TOKEN_TEMPLATE.replace("SINGLE_QUOTED", single).replace("DOUBLE_QUOTED", double)
    return re.compile(source, re.VERBOSE | re.DOTALL)


# Standard SQL (PostgreSQL, SQLite, SQL Server, Oracle): a backslash is an ordinary character.
_STANDARD_TOKEN = _token_pattern(backslash_escapes=False)
# MySQL and MariaDB: a backslash escapes the next character, and "..." is a string.
_MYSQL_TOKEN = _token_pattern(backslash_escapes=True)
MYSQL_SYSTEMS = frozenset({"mysql", "mariadb"})

# After literals are gone: a parenthesized list of two or more `?` markers. It starts with its
# parenthesis so the regex engine skips ahead in C; `_collapse_in_list` checks the IN before it.
_MARKER_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")

_STRING_PREFIXES = frozenset("NnEeXxBb")

# A minus right after one of these ends a value, so it is a binary operator (`a - 1`), not a sign.
_VALUE_END = frozenset("_)]?'\"`$")


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char in "_$@#"


def _follows_value(text: str, position: int) -> bool:
    """Tell whether the text before ``position`` (ignoring spaces) ends a value or a name.

    NOTE: a keyword counts as a name, so ``SELECT -1`` becomes ``SELECT -?``. The value is still
    hidden, only the sign stays.
    """
    index = position - 1
    while index >= 0 and text[index].isspace():
        index -= 1
    if index < 0:
        return False
    char = text[index]
    return char.isalnum() or char in _VALUE_END


def _collapse_in_list(match: re.Match[str]) -> str:
    before = match.string[max(0, match.start() - 64) : match.start()].rstrip()
    if before[-2:].upper() == "IN" and not (len(before) > 2 and _is_word_char(before[-3])):
        return "(?)"
    return match.group(0)  # VALUES (?, ?), a function's arguments: not an IN list


def _string_prefix_length(text: str, quote: int, floor: int) -> int:
    """Length of a prefix such as N, E, X, B or U& glued to the string starting at ``quote``."""
    if quote - 1 >= floor and text[quote - 1] in _STRING_PREFIXES:
        length = 1
    elif quote - 2 >= floor and text[quote - 2 : quote] in ("U&", "u&"):
        length = 2
    else:
        return 0
    before = quote - length - 1
    return 0 if before >= 0 and _is_word_char(text[before]) else length


def sanitize_sql(statement: str, db_system: str | None = None) -> str:
    """Return ``statement`` with inline literals replaced by ``?`` (see the module docstring).

    ``db_system`` (the span's ``db.system``) picks the quoting rules: MySQL's, or the standard
    ones where double quotes delimit identifiers. Outside MySQL, a text with a backslash is read
    both with and without backslash escapes (PostgreSQL's ``E'...'`` strings use them) and the
    result that hides more text wins, since reading a string with the wrong rule can end it early
    and show the next value.
    """
    if not statement:
        return statement
    if db_system is not None and db_system.lower() in MYSQL_SYSTEMS:
        return _sanitize(statement, _MYSQL_TOKEN, mysql=True)
    standard = _sanitize(statement, _STANDARD_TOKEN, mysql=False)
    if "\\" not in statement:
        return standard
    # PostgreSQL's E'...' strings and an unknown system's strings may use backslash escapes.
    escaped = _sanitize(statement, _MYSQL_TOKEN, mysql=False)
    return standard if len(standard) <= len(escaped) else escaped


def _sanitize(statement: str, token: re.Pattern[str], *, mysql: bool) -> str:
    parts: list[str] = []
    copied = 0  # length of the statement prefix already in parts
    for match in token.finditer(statement):
        text = match.group(0)
        start = match.start()
        first = text[0]
        if (first == "`" or (first == '"' and not mysql)) or text[:2] in ("--", "/*"):
            continue  # quoted identifiers and comments stay as written
        if first in "'\"":
            start -= _string_prefix_length(statement, start, copied)
            replacement = "?"
        elif first.isdigit():
            if start > copied and statement[start - 1] == ".":
                start -= 1  # `.5`
            replacement = "?"
        elif first == "-":
            number = text[1:].lstrip()
            minus = text[: len(text) - len(number)]
            replacement = minus + "?" if _follows_value(statement, start) else "?"
        else:
            replacement = "?"
        parts.append(statement[copied:start])
        parts.append(replacement)
        copied = match.end()
    if not copied:
        return statement  # nothing replaced: a parameterized statement comes back as it is
    parts.append(statement[copied:])
    return _MARKER_LIST.sub(_collapse_in_list, "".join(parts))
