"""The very first run on a fresh machine: no ~/.prefect, no Prefect database, none of the suite's PREFECT_*
settings. Prefect's own 20 s start-up timeout was too short for creating its database on 2 cores; the CLI
sets an ample one (musicrec.cli.PREFECT_DEFAULTS), so the first `musicrec train` must just work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_first_train_on_a_fresh_home_succeeds(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MUSICREC_", "DO_NOT_TRACK"))}
    env.update(HOME=str(home), PREFECT_HOME=str(home / ".prefect"))

    def musicrec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "musicrec", *args],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=600,
        )

    made = musicrec("sample-data", "data", "--scale", "small")
    assert made.returncode == 0, made.stderr[-2000:]
    proc = musicrec(
        "train",
        "--reviews",
        "data/reviews.json.gz",
        "--models",
        "gmf",
        "--retrieval-models",
        "implicit_pointwise",
        "--overrides",
        '{"gmf": {"epochs": 2}}',
        "--search-budget",  # the first run's search (learnt settings by default), kept short
        "5",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting temporary server" in proc.stderr + proc.stdout  # it really was a fresh ephemeral server
    assert (home / ".prefect").is_dir()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "report: file://" in proc.stdout
    assert "search: gmf (no usable tuning record)" in proc.stdout, proc.stdout[-3000:]
    assert (tmp_path / ".musicrec" / "store" / "runs").is_dir()
