"""Results you can find: runs, champion, recommend (no Prefect), score --format csv and evaluate (flows), on
the session's quick champion. A damaged bundle fails at once: no retries, one message."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from musicrec.cli import main
from musicrec.scoring.output import read_output
from musicrec.store import open_store

pytestmark = [pytest.mark.slow, pytest.mark.flow]


@pytest.fixture
def champion_store(quick_champion, monkeypatch, tmp_path):
    store_uri, root, report = quick_champion
    monkeypatch.setenv("MUSICREC_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MUSICREC_PROGRESS", "lines")
    return store_uri, root, report


def test_runs_champion_and_recommend_read_the_store(champion_store, capsys):
    store_uri, root, report = champion_store
    version = report["champion"]["version"]
    assert main(["runs", "--store", store_uri]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(report["run_id"]))
    assert "gmf_logistic" in row and "yes" in row and "(current champion)" in row
    assert main(["champion", "--store", store_uri]) == 0
    out = capsys.readouterr().out
    assert f"champion: {version} (gmf_logistic)" in out and report["run_id"] in out

    user = pd.read_parquet(root / "work" / report["run_id"] / "splits" / "train.parquet")["user_id"].iloc[0]
    assert main(["recommend", str(user), "--top-n", "5", "--store", store_uri]) == 0
    out = capsys.readouterr().out
    assert f"top 5 for {user} from {version}" in out
    listed = [line for line in out.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert [line.split()[0] for line in listed] == ["1", "2", "3", "4", "5"]
    items = pd.read_parquet(root / "work" / report["run_id"] / "items.parquet").set_index("item_id")["title"]
    for line in listed:  # each item with its title from the metadata (items without a meta line have none)
        item = line.split()[1]
        assert line.rstrip().endswith(str(items.get(item, ""))[:60].rstrip())
    assert main(["recommend", "NOBODY", "--top-n", "3", "--store", store_uri]) == 0
    assert "NOBODY is not known to" in capsys.readouterr().out


def test_score_csv_is_one_file_and_a_summary(champion_store, tmp_path, capfd):
    store_uri, _, report = champion_store
    out_dir = tmp_path / "out"
    assert (
        main(
            [
                "score",
                "--all-users",
                "--top-n",
                "3",
                "--format",
                "csv",
                "--store",
                store_uri,
                "--out",
                out_dir.as_uri(),
            ]
        )
        == 0
    )
    stdout = capfd.readouterr().out
    manifest = json.loads((out_dir / "_manifest.json").read_text())
    csvs = sorted(p.name for p in out_dir.iterdir() if p.suffix == ".csv")
    assert csvs == manifest["parts"] and len(csvs) == 1
    assert f"output: {(out_dir / csvs[0]).as_uri()}" in stdout
    assert f"{manifest['rows']:,} rows, {manifest['users']:,} users" in stdout
    assert f"scored with {report['champion']['version']}" in stdout and '"sha256"' not in stdout
    table = read_output(open_store(out_dir.as_uri()), "")
    assert len(table) == manifest["rows"] == 3 * manifest["users"]
    assert list(table.columns) == ["user_id", "rank", "item_id", "score", "source"]


def test_evaluate_prints_once_and_names_the_champion(champion_store, capfd):
    store_uri, _, report = champion_store
    assert main(["evaluate", "--run", report["run_id"], "--store", store_uri]) == 0
    captured = capfd.readouterr()
    assert (captured.out + captured.err).count("most_popular") == 1
    assert f"{report['champion']['version']} (the current champion)" in captured.out
    assert "served: retrieve-then-rank" in captured.out  # the lists batch scoring writes, measured


def test_a_damaged_bundle_fails_at_once_with_one_message(champion_store, tmp_path, capfd):
    store_uri, _, report = champion_store
    copy = tmp_path / "store"
    shutil.copytree(Path(open_store(store_uri).root), copy)
    version = report["champion"]["version"]
    (copy / "models" / version / "model.onnx").unlink()
    assert main(["score", "--all-users", "--store", str(copy)]) == 2
    captured = capfd.readouterr()
    assert "Retry 1/" not in captured.out + captured.err  # a missing file does not come back by retrying
    assert captured.err.count("error: ") == 1 and "model.onnx is missing" in captured.err
    assert "Traceback" not in captured.out + captured.err
