"""Run workspaces do not pile up: a run deletes the older ones beyond MUSICREC_KEEP_WORK, never one a live run
holds, never a folder that is not a run's (musicrec.pipeline.workspace.run_in)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from musicrec.pipeline.workspace import new_run_id, run_in


def _workspace(work: Path, name: str, age: float) -> Path:
    path = work / name
    (path / "splits").mkdir(parents=True)
    (path / "splits" / "train.parquet").write_bytes(b"x" * 100)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_a_run_keeps_the_newest_workspaces_and_deletes_the_rest(tmp_path: Path):
    work = tmp_path / "work"
    old = [_workspace(work, new_run_id(), age=3600 * (k + 1)) for k in range(4)]  # old[0] is the newest
    scoring = _workspace(work, f"score-{new_run_id()}", age=60)
    mine = _workspace(work, "photos", age=10**6)  # a user's folder in a shared work_dir: not a run's
    current = work / new_run_id()
    with run_in(str(current), keep=2) as deleted:
        assert (current / ".in-use").exists()
        assert sorted(deleted) == sorted(p.name for p in old[1:])
        assert scoring.exists() and old[0].exists() and mine.exists()
        assert not any(p.exists() for p in old[1:])
    assert not (current / ".in-use").exists()  # a finished run leaves no lock file


LIVE_RUN = """
import sys, time
from musicrec.pipeline.workspace import run_in
with run_in(sys.argv[1], keep=100):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_workspace_a_live_run_holds_is_never_deleted_and_a_killed_runs_is(tmp_path: Path):
    work = tmp_path / "work"
    live = work / new_run_id()
    proc = subprocess.Popen([sys.executable, "-c", LIVE_RUN, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        os.utime(live, (time.time() - 7200, time.time() - 7200))  # older than everything below
        with run_in(str(work / new_run_id()), keep=0) as deleted:
            assert deleted == [] and live.exists()
    finally:
        proc.kill()
        proc.wait()
    with run_in(str(work / new_run_id()), keep=0) as deleted:  # the kernel dropped the dead run's lock
        assert live.name in deleted and not live.exists()


def test_a_remote_workspace_is_left_to_the_store(tmp_path: Path):
    with run_in("s3://bucket/work/" + new_run_id(), keep=0) as deleted:
        assert deleted == []
    assert not any(tmp_path.iterdir())
