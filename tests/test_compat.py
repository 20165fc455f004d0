"""The end-to-end scenario against other FastAPI and SQLAlchemy versions, each in its own cached venv.

The matrix crosses two FastAPI versions with SQLAlchemy 2.0 and 2.1. FastAPI 0.115.14 has no native
telemetry, so the distro loads opentelemetry-instrumentation-fastapi there. The newest FastAPI has
native telemetry. A fifth venv has the newest FastAPI and SQLAlchemy 2.1 without greenlet: there the
shop's async route returns 503 and everything else must work as usual.

The venvs live in ``<repo>/.cache/compat`` (see `venvs.py`). "Newest FastAPI" is whatever was
newest when a venv was built; deleting ``.cache/compat`` builds the venvs again from current releases.
The project is installed from the session's wheel, never editable, so each run tests the code of
the working tree as a user would install it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

# pytest rewrites asserts only in test modules and registered ones. Without this, a failed check
# in checks.py would not show the values it compared.
pytest.register_assert_rewrite("checks")

from checks import CORE_CHECKS  # noqa: E402
from scenario import ScenarioResult, run_scenario  # noqa: E402
from venvs import VenvSpec, cached_venv, run, wheel  # noqa: E402, F401 - `wheel` is a fixture

pytestmark = pytest.mark.compat

OLD_FASTAPI = "fastapi==0.115.14"
NEW_FASTAPI = "fastapi"
SQLALCHEMY_2_0 = "sqlalchemy>=2.0,<2.1"
SQLALCHEMY_2_1 = "sqlalchemy>=2.1,<2.2"

MATRIX = [
    VenvSpec("fastapi0.115-sa2.0", (OLD_FASTAPI, SQLALCHEMY_2_0), expect={"fastapi": "contrib", "sqlalchemy": "2.0"}),
    VenvSpec("fastapi0.115-sa2.1", (OLD_FASTAPI, SQLALCHEMY_2_1), expect={"fastapi": "contrib", "sqlalchemy": "2.1"}),
    VenvSpec("fastapi-newest-sa2.0", (NEW_FASTAPI, SQLALCHEMY_2_0), expect={"fastapi": "native", "sqlalchemy": "2.0"}),
    VenvSpec("fastapi-newest-sa2.1", (NEW_FASTAPI, SQLALCHEMY_2_1), expect={"fastapi": "native", "sqlalchemy": "2.1"}),
    VenvSpec(
        "fastapi-newest-sa2.1-no-greenlet",
        (NEW_FASTAPI, SQLALCHEMY_2_1),
        uninstall=("greenlet",),
        expect={"fastapi": "native", "sqlalchemy": "2.1", "greenlet": False},
    ),
]

# Runs in the venv under `opentelemetry-instrument`, after the distro's start-up and before any app
# code. It prints the instrumentation mode per library, the imported modules and the versions.
PROBE = """
import importlib.metadata, importlib.util, json, sys
from raptorflow_otel.distro import runtime
import raptorflow_otel.distro
print(json.dumps({
    "instrumented": dict(runtime.instrumented),
    "modules": {name: name in sys.modules for name in ("sqlalchemy", "sqlalchemy.ext.asyncio")},
    "greenlet_installed": importlib.util.find_spec("greenlet") is not None,
    "fastapi": importlib.metadata.version("fastapi"),
    "sqlalchemy": importlib.metadata.version("sqlalchemy"),
    "distro_file": raptorflow_otel.distro.__file__,
}))
"""


@dataclass
class CompatRun:
    spec: VenvSpec
    bin_dir: Path
    probe: dict
    result: ScenarioResult


@pytest.fixture(scope="module", params=MATRIX, ids=[spec.name for spec in MATRIX])
def compat_run(request, wheel, tmp_path_factory) -> CompatRun:  # noqa: F811 - `wheel` is the fixture
    spec: VenvSpec = request.param
    bin_dir = cached_venv(spec, wheel)
    tmp_path = tmp_path_factory.mktemp(spec.name)
    # The environment has only the venv's bin directory and no telemetry destination, so the probe
    # exports nothing.
    probe_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "OTEL_TRACES_EXPORTER": "none"}
    output = run([bin_dir / "opentelemetry-instrument", bin_dir / "python", "-c", PROBE], env=probe_env, cwd=tmp_path, timeout=120)
    probe = json.loads(output.stdout.strip().splitlines()[-1])
    reviews_status = 200 if spec.expect.get("greenlet", True) else 503
    result = run_scenario(tmp_path, bin_dir=bin_dir, reviews_status=reviews_status)
    return CompatRun(spec, bin_dir, probe, result)


def test_venv_versions_match_entry(compat_run):
    probe, expect = compat_run.probe, compat_run.spec.expect
    assert probe["sqlalchemy"].startswith(expect["sqlalchemy"] + "."), probe
    if compat_run.spec.requirements[0] == OLD_FASTAPI:
        assert probe["fastapi"] == "0.115.14", probe
    assert probe["greenlet_installed"] is expect.get("greenlet", True), probe
    # The project comes from the wheel inside the venv, not from the working tree.
    assert Path(probe["distro_file"]).resolve().is_relative_to(compat_run.bin_dir.parent.resolve()), probe


def test_fastapi_instrumentation_mode(compat_run):
    instrumented = compat_run.probe["instrumented"]
    assert instrumented.get("fastapi") == compat_run.spec.expect["fastapi"], compat_run.probe
    assert instrumented.get("sqlalchemy") == "raptorflow", compat_run.probe


def test_startup_skips_sqlalchemy_asyncio(compat_run):
    modules = compat_run.probe["modules"]
    assert modules["sqlalchemy"], compat_run.probe
    assert not modules["sqlalchemy.ext.asyncio"], compat_run.probe


@pytest.mark.parametrize("check", CORE_CHECKS, ids=[check.__name__.removeprefix("check_") for check in CORE_CHECKS])
def test_core_invariant(compat_run, check):
    check(compat_run.result)
