"""Prefect's temporary server, tied to the life of the musicrec command that starts it.

With no PREFECT_API_URL, Prefect starts a temporary API server (a uvicorn child process) the first time a
flow needs one and stops it at interpreter exit (atexit). A command killed with SIGKILL, or by the OOM killer,
never reaches atexit, so the server would run on as an orphan, one per killed command. So the command starts
the server itself (Prefect reuses the same instance: one per process) and hands its process id to a watchdog:
a small process that waits on a pipe only the command holds open. The kernel closes that pipe however the
command ends, and the watchdog then stops the server (SIGTERM, then SIGKILL), if it is still running.
"""

from __future__ import annotations

import os
import subprocess
import sys

# The watchdog's program. It ignores Ctrl-C (a terminal sends it to the whole foreground group; the command
# handles it and stops the server itself), reads its stdin to the end, then stops the server if that process
# id is still a uvicorn server (on Linux it checks /proc, so a reused id is left alone).
_WATCHDOG = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pid = int(sys.argv[1])
sys.stdin.buffer.read()

def running():
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"uvicorn" in f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True

for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
    if not running():
        break
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        break
    deadline = time.monotonic() + wait
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
"""

# Server process id -> its watchdog. Kept for the life of the command: the pipe closes with the Popen object.
_WATCHDOGS: dict[int, subprocess.Popen[bytes]] = {}


def tie_temporary_server() -> int | None:
    """Start Prefect's temporary server now, if this command will use one, with a watchdog that stops it
    when the command ends in any way. Returns the server's process id (None: a server is configured, and
    nothing is started)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's clients reuse for the rest of the command
    server.start()
    if server.server_process is None:
        return None
    pid = server.server_process.pid
    if pid not in _WATCHDOGS:
        _WATCHDOGS[pid] = watch(pid)
    return pid


def watch(pid: int) -> subprocess.Popen[bytes]:
    """A watchdog that stops process `pid` when this process ends (its stdin pipe closes). It runs in its own
    session, so a signal to the command's process group does not reach it before it has done its job."""
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k.startswith(("PATH", "SYSTEMROOT"))},
    )
