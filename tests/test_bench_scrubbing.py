"""Smoke test of the scrubbing benchmark: it runs, and our scrubber catches every leak and keeps
every must-keep value.

Timing is never asserted here; `bench/scrubbing.py` reports it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {
    "recall_ours",
    "recall_sentry",
    "recall_logfire",
    "false_positives_ours",
    "throughput_ratio_vs_logfire",
}


def _run_quick_bench() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "scrubbing.py"), "--quick"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _parse_summary(line: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in line.split())


def test_bench_scrubbing_quick_run() -> None:
    result = _run_quick_bench()
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"

    last_line = result.stdout.strip().splitlines()[-1]
    summary = _parse_summary(last_line)
    assert set(summary) == SUMMARY_KEYS, last_line
    for key in ("recall_sentry", "recall_logfire", "throughput_ratio_vs_logfire"):
        assert float(summary[key]) >= 0.0, last_line

    assert float(summary["recall_ours"]) == 1.0, result.stdout
    assert int(summary["false_positives_ours"]) == 0, result.stdout
