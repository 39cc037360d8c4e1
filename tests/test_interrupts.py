"""Ctrl-C is an interrupt, whatever a library's cleanup raises after it (issue 30, case 7): `musicrec tune`
interrupted while its trials run ends with exit 130 and "interrupted", never an unexpected error (Optuna's
journal lock rename used to surface as FileNotFoundError), and the tuning records stay readable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_process import command_env

from musicrec import cli
from musicrec.data.generate import generate_sample


def test_an_error_raised_while_handling_an_interrupt_is_an_interrupt():
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise FileNotFoundError("tuning/nnmf.journal.lock")  # noqa: B904 (the chain under test)
    except FileNotFoundError as e:
        assert cli._caused_by_interrupt(e)
    assert not cli._caused_by_interrupt(ValueError("plain"))


# The issue asks for 20 tries; make test runs 2 (each starts a Prefect server). MUSICREC_SIGINT_TRIES=20
# runs the full count; the delay after the first trial steps through 0-4 s, well inside the 400 trials.
TRIES = int(os.environ.get("MUSICREC_SIGINT_TRIES", "2"))


@pytest.mark.slow
@pytest.mark.parametrize("after", [round(k * 0.7 % 4.0, 1) for k in range(TRIES)])
def test_sigint_during_tune_exits_130(tmp_path: Path, after: float):
    generate_sample(tmp_path / "data", scale="small", seed=0)
    env = command_env(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "musicrec",
        "tune",
        "--reviews",
        str(tmp_path / "data" / "reviews.json.gz"),
        "--models",
        "nnmf,gmf",
        "--trials",
        "400",
        "--store",
        str(tmp_path / "store"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.time() + 240
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the first trial has reported: the search is running
        lines.append(line)
        if ": trial " in line or time.time() > deadline:
            break
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted" in out and "unexpected" not in out and "Traceback" not in out, out[-3000:]
