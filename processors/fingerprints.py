"""Error fingerprints: one stable id per failing call site, for grouping in Sentry.

A fingerprint is a hash of the exception type and the failing call path. The path is the
``(file, function)`` pairs of the traceback's frames, without line numbers or source lines, so an
edit that shifts lines or a deploy to another directory keeps the fingerprint. Only the app's own frames count when there are
any, so a library upgrade keeps it too. Without frames, the message decides, with its variable
parts (numbers, ids, e-mail addresses, quoted values) replaced, so ``order 42 not found`` and
``order 43 not found`` group together.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["fingerprint", "message_template"]

_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)', re.MULTILINE)
_LIBRARY_PATH = re.compile(r"[/\\](?:site-packages|dist-packages|lib[/\\]python\d[\d.]*)[/\\]|^<frozen ")

_VARIABLE_PARTS = (
    (re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""), "<value>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]*\d[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
)


def message_template(message: str) -> str:
    """Return ``message`` with numbers, UUIDs, hex ids, e-mail addresses and quoted values replaced."""
    for pattern, placeholder in _VARIABLE_PARTS:
        message = pattern.sub(placeholder, message)
    return " ".join(message.split())


def _call_path(stacktrace: str) -> list[str]:
    frames = [(path, function) for path, function in _FRAME.findall(stacktrace)]
    own = [frame for frame in frames if _LIBRARY_PATH.search(frame[0]) is None]
    chosen = own or frames
    return [f"{_short_path(path)}:{function}" for path, function in chosen]


def _short_path(path: str) -> str:
    """Return the last two parts of a path: stable across deploy directories, distinct across packages."""
    parts = re.split(r"[/\\]", path)
    return "/".join(parts[-2:])


def fingerprint(exception_type: str, stacktrace: str | None, message: str | None) -> str:
    """Return 32 hex digits identifying the failing call site (see the module docstring)."""
    path = _call_path(stacktrace) if stacktrace else []
    basis = [exception_type, *path] if path else [exception_type, message_template(message or "")]
    return hashlib.sha256("\n".join(basis).encode("utf-8", "replace")).hexdigest()[:32]
