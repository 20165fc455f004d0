"""Shared test set-up: helper modules on sys.path, and internal errors raised instead of logged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))


@pytest.fixture(autouse=True)
def raise_internal_errors(monkeypatch):
    """A bug in our code fails the test instead of being logged and swallowed by the guard."""
    from raptorflow_otel.processors import guard

    monkeypatch.setattr(guard, "RAISE_INTERNAL_ERRORS", True)
