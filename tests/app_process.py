"""Start the example shop under `opentelemetry-instrument uvicorn` in a subprocess, env vars only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import httpx

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
# Variables of the developer's shell that would change what the app under test does.
_STRIPPED_PREFIXES = ("OTEL_", "SENTRY_", "RAPTORFLOW_", "SHOP_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_STRIPPED_PREFIXES)}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


class AppProcess:
    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(self.base_url + path, timeout=30, **kwargs)

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@contextmanager
def run_shop(
    env: Mapping[str, str],
    workdir: Path,
    *,
    bin_dir: Path | None = None,
    app: str = "shop_app:app",
    instrument: bool = True,
    startup_timeout: float = 60.0,
) -> Iterator[AppProcess]:
    """Run the shop on a free loopback port until the block ends, then stop it with SIGTERM."""
    bin_dir = bin_dir or Path(sys.executable).parent
    port = free_port()
    command = [str(bin_dir / "uvicorn"), app, "--app-dir", str(EXAMPLES), "--host", "127.0.0.1", "--port", str(port)]
    if instrument:
        command = [str(bin_dir / "opentelemetry-instrument"), *command]
    full_env = clean_environment({"SHOP_DATABASE_URL": f"sqlite:///{workdir / 'shop.db'}", **env})
    log_path = workdir / f"app-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, env=full_env, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT)
    app_process = AppProcess(process, port, log_path)
    try:
        _wait_until_ready(app_process, startup_timeout)
        yield app_process
    finally:
        app_process.stop()


def _wait_until_ready(app: AppProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise RuntimeError(f"the app exited with {app.process.returncode}:\n{app.log()}")
        try:
            if httpx.get(app.base_url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the app did not answer /health within {timeout} s:\n{app.log()}")
