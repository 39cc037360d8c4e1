"""The ranking-evaluation flow and `musicrec evaluate`, after a quick real training run on the small sample."""

from __future__ import annotations

import json

import pytest

from musicrec.cli import main
from musicrec.store import open_store

pytestmark = [pytest.mark.slow, pytest.mark.flow]


@pytest.fixture(scope="module")
def trained(quick_champion):
    store_uri, _, report = quick_champion
    return store_uri, report


def test_cli_evaluate_writes_ranking_json_next_to_the_report(trained, tmp_path, monkeypatch, capsys):
    store_uri, report = trained
    monkeypatch.chdir(tmp_path)  # the flow's work_dir is relative
    assert main(["evaluate", "--run", report["run_id"], "--store", store_uri]) == 0
    printed = capsys.readouterr().out
    assert "hr@10" in printed and "most_popular" in printed and "random" in printed
    store = open_store(store_uri)
    prefix = f"runs/{report['run_id']}"
    assert store.exists(f"{prefix}/report.json") and store.exists(f"{prefix}/ranking.json")
    got = json.loads(store.get_bytes(f"{prefix}/ranking.json"))
    assert got["version"] == report["champion"]["version"] and got["bundle_from_this_run"]
    assert got["k"] == 10 and got["test_users"] > 0
    methods = {m["method"].split(" (")[0]: m for m in got["methods"]}
    assert set(methods) == {
        "served: retrieve-then-rank",
        "served without also_bought",
        "retrieval champion alone",
        "most_popular",
        "random",
    }
    assert got["protocol"].startswith("temporal leave-last-out")
    # the served retrieval model is the refit on every interaction, these held-out items included: said so
    assert "refit" in got["note"] and "note: the served models were refit" in printed
    assert methods["served: retrieve-then-rank"]["hr@10"] > methods["random"]["hr@10"]
    for m in methods.values():
        assert 0.0 <= m["hr@10"] <= 1.0 and 0.0 <= m["ndcg@10"] <= m["hr@10"]
        assert 0.0 < m["catalogue_coverage"] <= 1.0 and m["mean_popularity"] >= 0
    # the references bracket what a ranker should do: popular items are hit far more often than random ones
    assert methods["most_popular"]["hr@10"] > methods["random"]["hr@10"]
    assert methods["most_popular"]["mean_popularity"] > methods["random"]["mean_popularity"]


def test_flow_on_a_user_sample_with_an_explicit_version(trained, tmp_path):
    from flows.evaluation import RankingParams, ranking_evaluation

    store_uri, report = trained
    result = ranking_evaluation(
        RankingParams(
            run_id=report["run_id"],
            store_uri=store_uri,
            k=5,
            max_users=50,
            version=report["champion"]["version"],
            threads=1,
            work_dir=str(tmp_path / "w"),
        )
    )
    assert result["test_users"] == 50 and result["k"] == 5
    assert all(0.0 <= m["ndcg@5"] <= 1.0 for m in result["methods"])
    assert result["uri"].endswith(f"runs/{report['run_id']}/ranking.json")


def test_unknown_run_is_a_clear_error(trained, tmp_path, monkeypatch, capsys):
    store_uri, _ = trained
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--run", "no-such-run", "--store", store_uri]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
