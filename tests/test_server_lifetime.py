"""A killed command leaves no Prefect server behind (issue 30, case 8): with no PREFECT_API_URL each command
starts a temporary server, and SIGKILL never reaches Prefect's exit hook, so a watchdog stops the server when
the command's pipe closes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_process import command_env

from musicrec.data.generate import generate_sample


def _children() -> dict[int, list[int]]:
    """Parent process id -> its children's ids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # a zombie has ended; only its parent's wait is missing
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.time() + seconds
    while _alive(pids) and time.time() < deadline:
        time.sleep(0.1)
    return _alive(pids)


pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process tree in /proc"
)


def test_the_watchdog_stops_the_server_when_its_command_is_killed(tmp_path: Path):
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "uvicorn"])
    command = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from flows.server import watch; watch(int(sys.argv[1]));"
            " print('watching', flush=True); time.sleep(120)",
            str(server.pid),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert command.stdout is not None and command.stdout.readline().strip() == "watching"
        time.sleep(0.5)
        assert server.poll() is None  # the command is alive: the server runs on
        command.kill()
        command.wait()
        assert server.wait(timeout=10) == -signal.SIGTERM
    finally:
        for proc in (server, command):
            if proc.poll() is None:
                proc.kill()


def test_the_watchdog_leaves_a_reused_process_id_alone(tmp_path: Path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    command = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from flows.server import watch;"
            " watch(int(sys.argv[1])); print('watching', flush=True)",
            str(bystander.pid),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert command.stdout is not None and command.stdout.readline().strip() == "watching"
        assert command.wait(timeout=30) == 0
        time.sleep(1.0)
        assert bystander.poll() is None  # not a uvicorn server: not this watchdog's to stop
    finally:
        for proc in (bystander, command):
            if proc.poll() is None:
                proc.kill()


@pytest.mark.slow
def test_a_killed_train_leaves_no_process_behind(tmp_path: Path):
    generate_sample(tmp_path / "data", scale="small", seed=0)
    env = command_env(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "musicrec",
        "train",
        "--reviews",
        str(tmp_path / "data" / "reviews.json.gz"),
        "--store",
        str(tmp_path / "store"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline, spawned = [], time.time() + 240, set()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # the flow runs: the server is up and the command is at work
            lines.append(line)
            if "Beginning flow run" in line or time.time() > deadline:
                break
        spawned = _descendants(proc.pid)
        servers = {p for p in spawned if b"uvicorn" in _cmdline(p)}
        assert servers, "".join(lines)[-3000:]
        proc.kill()
        proc.wait()
        assert _wait_gone(spawned, 30) == set(), "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _alive(spawned):  # an orphan must not outlive the test that found it
            os.kill(pid, signal.SIGKILL)
