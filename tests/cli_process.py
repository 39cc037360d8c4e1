"""The environment of a `python -m musicrec` child process in a test: its own Prefect home and work folder,
no telemetry, log lines instead of bars, and either no configured server (so the command starts its own) or
the session's (api: conftest's prefect_api_url)."""

from __future__ import annotations

import os
from pathlib import Path


def command_env(tmp_path: Path, api: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MUSICREC_WORK_DIR": str(tmp_path / "work"),
        "MUSICREC_PROGRESS": "lines",
    }
    env.pop("PREFECT_API_URL", None)
    return {**env, "PREFECT_API_URL": api} if api else env
