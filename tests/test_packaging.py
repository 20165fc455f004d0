"""The wheel as a user gets it: its contents, and a fresh venv that installs it and runs the shop."""

from __future__ import annotations

import configparser
import re
import zipfile
from pathlib import Path

import pytest

from app_process import run_shop
from receivers import SentryReceiver, wait_for
from venvs import fresh_venv, run, wheel  # noqa: F401 - `wheel` is a fixture

pytestmark = pytest.mark.packaging

SUBPACKAGES = ("distro", "processors", "exporters", "alerting")
MODULE_PATTERN = re.compile(rf"raptorflow_otel/({'|'.join(SUBPACKAGES)})/[^/]+(/[^/]+)*$")


def _wheel_files(wheel_path: Path) -> list[str]:
    with zipfile.ZipFile(wheel_path) as archive:
        return archive.namelist()


def _entry_points(wheel_path: Path) -> configparser.ConfigParser:
    with zipfile.ZipFile(wheel_path) as archive:
        (name,) = [name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt")]
        text = archive.read(name).decode()
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # entry point names are case-sensitive
    parser.read_string(text)
    return parser


def test_wheel_contains_only_subpackages(wheel):
    files = _wheel_files(wheel)
    dist_info = [name for name in files if name.split("/")[0].endswith(".dist-info")]
    modules = [name for name in files if name not in dist_info]
    assert dist_info
    assert modules
    assert not [name for name in modules if not MODULE_PATTERN.match(name)], files
    for subpackage in SUBPACKAGES:
        assert f"raptorflow_otel/{subpackage}/__init__.py" in modules, files
    top_level = {name.split("/")[0] for name in files}
    assert not top_level & {"distro", "processors", "exporters", "alerting", "tests", "examples"}, top_level
    # `raptorflow_otel` stays an implicit namespace package.
    assert "raptorflow_otel/__init__.py" not in modules


def test_wheel_entry_points(wheel):
    entry_points = _entry_points(wheel)
    files = set(_wheel_files(wheel))
    expected = {
        "opentelemetry_distro": "raptorflow",
        "opentelemetry_configurator": "raptorflow",
        "console_scripts": "raptorflow-otel",
    }
    for group, name in expected.items():
        assert entry_points.has_section(group), entry_points.sections()
        assert name in entry_points[group], dict(entry_points[group])
    # Every entry point names a module that the wheel contains.
    for group in entry_points.sections():
        for name, target in entry_points[group].items():
            module = target.split(":")[0].strip()
            assert f"{module.replace('.', '/')}.py" in files, (group, name, target)


@pytest.fixture(scope="module")
def fresh_bin(wheel, tmp_path_factory) -> Path:
    return fresh_venv(tmp_path_factory.mktemp("fresh") / "venv", wheel)


def test_cli_prints_settings_table(fresh_bin, tmp_path):
    output = run([fresh_bin / "raptorflow-otel", "settings", "--markdown"], cwd=tmp_path, timeout=60)
    assert output.returncode == 0
    rows = [line for line in output.stdout.splitlines() if line.startswith("|")]
    assert any("SENTRY_DSN" in row for row in rows), output.stdout


def test_fresh_venv_shop_sends_transaction(fresh_bin, tmp_path):
    with SentryReceiver() as sentry:
        env = {"SENTRY_DSN": sentry.dsn, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        with run_shop(env, tmp_path, bin_dir=fresh_bin) as app:
            assert app.get("/products/1").status_code == 200
            transactions = wait_for(
                lambda: [t for t in sentry.transactions() if t["transaction"] == "GET /products/{product_id}"],
                timeout=30,
            )
            app.stop()
            log = app.log()
    assert len(transactions) == 1, transactions
    assert "raptorflow-otel:" not in log, log
