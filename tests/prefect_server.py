"""A real `prefect server` process for end-to-end tests: free loopback port, isolated PREFECT_HOME, no
telemetry, and a process registry that stops every process group it started (the server last)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 60) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return f"--- last lines of {path.name} ---\n" + "\n".join(lines[-n:])


class Processes:
    """Starts subprocesses in their own process groups and stops every group (SIGTERM, then SIGKILL)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started.append((proc, log))
        return proc

    def log_tails(self) -> str:
        return "\n".join(tail(log) for _, log in self.started)

    def stop_all(self) -> None:
        """Newest first (the server last), so clients never see their server vanish under them."""
        for proc, _ in reversed(self.started):
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=10)  # a worker may sit out SIGTERM; the test is over, so it is killed
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # also reaps children left behind in the group
            proc.wait(timeout=10)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def wait_until(
    what: str, check: Callable[[], Any], timeout: float, procs: Processes, every: float = 1.0
) -> Any:
    """Poll check() until it returns something truthy; fail early if a started process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in procs.started:
            if proc.poll() is not None:
                pytest.fail(f"{log.stem} exited with {proc.returncode} while waiting for {what}\n{tail(log)}")
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{procs.log_tails()}")


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def server_env(home: Path, api_url: str, ui: bool) -> dict[str, str]:
    """This process's environment without PREFECT_*/MUSICREC_* settings, pointed at api_url."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MUSICREC_"))}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if ui else "false",
            "PREFECT_CLI_COLORS": "false",
            "GX_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_KEEPALIVE_TIMEOUT": "30",
        }
    )
    return env


def start_server(procs: Processes, env: dict[str, str], ui: bool = False) -> None:
    """`prefect server start` on env's PREFECT_API_URL port; returns once /api/health answers."""
    api_url = env["PREFECT_API_URL"]
    port = api_url.split(":")[2].split("/")[0]
    procs.start(
        "server",
        [
            str(BIN / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--ui" if ui else "--no-ui",
        ],
        env,
    )
    wait_until("the server's /api/health", lambda: healthy(api_url), 180, procs)
