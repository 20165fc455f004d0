"""Virtual environments with the project installed from its wheel, for the compat and packaging tests
and for `bench/overhead.py`.

* `built_wheel` builds the wheel once per test session; the `wheel` fixture wraps it. Test modules
  import the fixture (``from venvs import wheel``) instead of a conftest defining it, and the
  module-level cache below keeps it to one build even when several modules import it.
* `cached_venv` returns a venv under ``<repo>/.cache/compat/<key>`` for one set of pinned
  requirements, creating it on first use. The key hashes the requirements, the constraints,
  ``pyproject.toml``, ``examples/requirements.txt`` and the Python version, so a change to any of
  them builds a new venv. A cached venv gets the session's wheel reinstalled (``--force-reinstall
  --no-deps``), because the wheel changes with every code change while its dependencies do not.
  Passing no wheel gives a venv without the project (the benchmark's other setups).
* `fresh_venv` creates an uncached venv in a given directory.

Every command runs with ``check=True, capture_output=True``; a failure raises AssertionError with
the command's output, so pip's resolver message shows in the test report.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / ".cache" / "compat"
EXAMPLE_REQUIREMENTS = REPO / "examples" / "requirements.txt"
# Written as the last step of a successful install; a venv without it is rebuilt.
MARKER = "raptorflow-venv.json"
# Touched every time a cached venv is used; stale siblings of the same spec are removed.
LAST_USED = "raptorflow-last-used"
STALE_AFTER_SECONDS = 3600
INSTALL_TIMEOUT = 600
PIP_FLAGS = ("--disable-pip-version-check", "--no-input")

_session_wheel: Path | None = None


def run(command: Sequence[str | os.PathLike], *, timeout: float = INSTALL_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    """Run a command and raise AssertionError with its output when it fails or times out."""
    command = [str(part) for part in command]
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.CalledProcessError as error:
        raise AssertionError(
            f"command failed with exit code {error.returncode}: {' '.join(command)}\n"
            f"--- stdout ---\n{error.stdout}\n--- stderr ---\n{error.stderr}"
        ) from None
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"command timed out after {timeout} s: {' '.join(command)}\n"
            f"--- stdout ---\n{_text(error.stdout)}\n--- stderr ---\n{_text(error.stderr)}"
        ) from None


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


# --- The wheel ----------------------------------------------------------------------------------


# Paths skipped when copying a tree that is not a git checkout, where git cannot apply .gitignore.
_NOT_SOURCES = (".git", ".cache", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "*.db")


def _copy_sources(destination: Path) -> None:
    """Copy the working tree's tracked and untracked, not ignored, files to ``destination``.

    Building from a copy keeps setuptools' ``build/`` and ``*.egg-info`` out of the shared
    working tree, and files left in ``build/lib`` by an earlier build cannot reach the wheel.
    """
    try:
        listing = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True, capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
        return
    for relative in filter(None, listing.stdout.split("\0")):
        source = REPO / relative
        if not source.is_file():  # deleted in the working tree but still in the index
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def build_wheel(workdir: Path) -> Path:
    """Build the project's wheel with ``python -m build --wheel`` in the empty directory ``workdir``."""
    sources = workdir / "src"
    outdir = workdir / "dist"
    _copy_sources(sources)
    run([sys.executable, "-m", "build", "--wheel", "--outdir", outdir, sources])
    wheels = sorted(outdir.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {outdir}, found {wheels}"
    return wheels[0]


def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the project's wheel once per test session."""
    global _session_wheel
    if _session_wheel is None or not _session_wheel.is_file():
        _session_wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    return _session_wheel


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_wheel(tmp_path_factory)


# --- Venvs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VenvSpec:
    """What goes into one venv besides ``examples/requirements.txt`` (and the wheel, when given)."""

    name: str
    requirements: tuple[str, ...]
    uninstall: tuple[str, ...] = ()
    # Pins written to a pip constraints file, so several venvs get the same versions.
    constraints: tuple[str, ...] = ()
    # Free-form expectations for the tests that use the venv; not part of the key.
    expect: dict = field(default_factory=dict, compare=False, hash=False)

    def key(self) -> str:
        content = json.dumps(
            {
                "requirements": list(self.requirements),
                "uninstall": list(self.uninstall),
                "constraints": list(self.constraints),
                "pyproject": (REPO / "pyproject.toml").read_text(),
                "examples": EXAMPLE_REQUIREMENTS.read_text(),
                "python": [sys.implementation.name, *sys.version_info[:3]],
            },
            sort_keys=True,
        )
        return hashlib.sha256(content.encode()).hexdigest()[:16]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def pip(venv: Path, *args: str | os.PathLike) -> subprocess.CompletedProcess:
    return run([venv_python(venv), "-m", "pip", *PIP_FLAGS, *args])


def create_venv(
    venv: Path,
    wheel: Path | None,
    requirements: Sequence[str] = (),
    uninstall: Sequence[str] = (),
    constraints: Sequence[str] = (),
) -> Path:
    """Create a venv at ``venv`` with the wheel (unless None), the example's requirements and ``requirements``."""
    run([sys.executable, "-m", "venv", venv], timeout=120)
    extra: list[str | os.PathLike] = []
    if constraints:
        constraints_file = venv / "constraints.txt"
        constraints_file.write_text("\n".join(constraints) + "\n")
        extra += ["-c", constraints_file]
    if wheel is not None:
        extra.append(wheel)
    # No .pyc files at install time, because the first import writes them for the modules it uses.
    pip(venv, "install", "--no-compile", *extra, "-r", EXAMPLE_REQUIREMENTS, *requirements)
    if uninstall:
        pip(venv, "uninstall", "-y", *uninstall)
    return venv


def fresh_venv(venv: Path, wheel: Path, requirements: Sequence[str] = ()) -> Path:
    """Create an uncached venv at ``venv``, which must not exist yet, and return its ``bin`` directory."""
    return create_venv(venv, wheel, requirements) / "bin"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so two test sessions never build one venv at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_venv(spec: VenvSpec, wheel: Path | None, cache_dir: Path = CACHE_DIR) -> Path:
    """Return the ``bin`` directory of the cached venv for ``spec``, with ``wheel`` installed unless None."""
    key = spec.key()
    venv = cache_dir / key
    with _locked(cache_dir / f"{key}.lock"):
        if (venv / MARKER).is_file() and venv_python(venv).exists():
            if wheel is not None:
                pip(venv, "install", "--no-compile", "--force-reinstall", "--no-deps", wheel)
        else:
            shutil.rmtree(venv, ignore_errors=True)
            create_venv(venv, wheel, spec.requirements, spec.uninstall, spec.constraints)
            frozen = pip(venv, "freeze", "--all").stdout.split()
            (venv / MARKER).write_text(
                json.dumps(
                    {"name": spec.name, "requirements": list(spec.requirements), "uninstall": list(spec.uninstall), "installed": frozen},
                    indent=1,
                )
            )
        (venv / LAST_USED).touch()
    _remove_stale_siblings(spec, key, cache_dir)
    return venv / "bin"


def _remove_stale_siblings(spec: VenvSpec, key: str, cache_dir: Path) -> None:
    """Delete venvs of the same spec name built for older inputs and unused for an hour."""
    for marker in cache_dir.glob(f"*/{MARKER}"):
        other = marker.parent
        if other.name == key:
            continue
        try:
            if json.loads(marker.read_text()).get("name") != spec.name:
                continue
            last_used = (other / LAST_USED).stat().st_mtime
        except (OSError, ValueError):
            continue
        if time.time() - last_used > STALE_AFTER_SECONDS:
            shutil.rmtree(other, ignore_errors=True)
            (cache_dir / f"{other.name}.lock").unlink(missing_ok=True)
