"""The musicrec command as users run it: a real subprocess, exit codes, one clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from musicrec.cli import main


def _musicrec(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
           "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "musicrec", *args], check=False, capture_output=True, text=True, env=env,
                          timeout=600, cwd=Path(__file__).parents[1])


def test_sample_data_writes_files_and_card(tmp_path, capsys):
    assert main(["sample-data", str(tmp_path / "d"), "--scale", "small", "--seed", "3"]) == 0
    card = json.loads((tmp_path / "d" / "card.json").read_text())
    assert card["ratings"] == 20000 and card["seed"] == 3
    assert (tmp_path / "d" / "reviews.json.gz").stat().st_size > 0
    assert "20,000 ratings" in capsys.readouterr().out


def test_bad_model_name_is_one_clear_message(capsys):
    assert main(["train", "--reviews", "x.json", "--models", "gmf,svd"]) == 2
    err = capsys.readouterr().err
    assert "unknown model(s) ['svd']" in err and "Traceback" not in err


@pytest.mark.slow
def test_train_on_invalid_data_exits_nonzero_without_traceback(tmp_path):
    bad = tmp_path / "ratings.csv"
    bad.write_text("\n".join(f"I{k % 25},U{k % 40},{7 if k % 10 == 0 else 4},1400000000" for k in range(400)))
    store = tmp_path / "store"
    proc = _musicrec("train", "--reviews", str(bad), "--store", store.as_uri(), home=tmp_path / "ph")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    last = proc.stderr[proc.stderr.index("error: "):]
    assert str(bad) in last and "expect_column_values_to_be_between" in last and "what to do" in last
    assert not store.exists()


def test_the_cli_offers_exactly_the_registered_models():
    """The CLI keeps its own list (parsing arguments must not import torch); it must match the registry."""
    from musicrec.cli import MODEL_NAMES
    from musicrec.models.registry import MODELS

    assert MODEL_NAMES == list(MODELS)
