"""Smoke test of the overhead benchmark: every setup runs, exports, and completes every request.

`bench/overhead.py --quick` builds (or reuses) the four venvs, runs one short round and prints
the ratio line. The harness itself stops with an error when a setup sends nothing to its
receivers or its app returns an unexpected status, so a zero exit code means every setup
was really instrumented. Timing is never asserted here; the benchmark reports it.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The first run builds four venvs, which takes minutes on a cold cache.
pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "overhead.py"), "--quick", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-6000:]}"
    return result


def summary(stdout: str) -> dict[str, float]:
    last = stdout.strip().splitlines()[-1]
    return {key: float(value) for key, value in (pair.split("=", 1) for pair in last.split())}


def test_compare_prints_table_and_ratios() -> None:
    result = run_bench()

    for setup in ("bare", "otel", "sentry", "raptorflow"):
        assert re.search(rf"^{setup}\s+\d+", result.stdout, re.MULTILINE), result.stdout
    # The per-thread split read the threads' CPU clocks.
    assert re.search(r"raptorflow CPU us/req by thread: .*MainThread \d+", result.stdout), result.stdout
    ratios = summary(result.stdout)
    assert set(ratios) == {"overhead_vs_otel", "overhead_vs_sentry"}
    assert all(math.isfinite(value) for value in ratios.values())


def test_sentry_down_loses_no_request() -> None:
    result = run_bench("--scenario", "sentry-down", "--duration", "15")

    values = summary(result.stdout)
    assert set(values) == {"rss_growth_mb", "failed_requests"}
    assert values["failed_requests"] == 0
