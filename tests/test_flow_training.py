"""The training flow end to end under a real (test-harness) Prefect server, on the small generated sample."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from musicrec import registry
from musicrec.errors import ValidationFailed
from musicrec.hashing import sha256_bytes
from musicrec.metrics.rating import rmse
from musicrec.scoring.runtime import load_session, predict_ratings
from musicrec.store import open_store

pytestmark = [pytest.mark.slow, pytest.mark.flow]
QUICK = {m: {"epochs": 3} for m in registry.names("rating")}  # the default selection: every rating model


def _params(sample: Path, store_uri: str, work: Path, **kw):
    from flows.training import TrainingParams

    kw.setdefault("retrieval_models", [])  # the retrieval models are trained where a test checks them
    return TrainingParams(
        reviews=[str(sample / "reviews.json.gz")],
        meta=[str(sample / "meta.json.gz")],
        store_uri=store_uri,
        work_dir=str(work),
        **kw,
    )


def _check_published(store, report) -> dict:
    """The pointer names the champion's bundle, and every sha256 in metadata.json matches the stored bytes."""
    pointer = json.loads(store.get_bytes("models/champion.json"))
    version = report["champion"]["version"]
    assert pointer["version"] == version
    meta_bytes = store.get_bytes(f"models/{version}/metadata.json")
    assert pointer["sha256"] == sha256_bytes(meta_bytes)
    meta = json.loads(meta_bytes)
    for name, digest in meta["files"].items():
        assert sha256_bytes(store.get_bytes(f"models/{version}/{name}")) == digest
    assert meta["model"] == report["champion"]["name"]
    assert meta["data"]["fingerprint"] == report["data"]["fingerprint"]
    return meta


def _check_parallel_stage_is_capped(since: datetime, cap: int) -> None:
    """From the server's task runs: never more than `cap` of the parallel stage ran at once, and the queue
    started in submission order: Word2Vec, the retrieval baselines (they build the leave-last-out split
    while Word2Vec trains) and the first models without text; the models that use text (the retrieval
    models and w2v_mlp) only once Word2Vec and a first model ended; transitions (START_LATE) after every
    other model started."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=since))
        )
    models = {
        f"train-{m}" for m in [*QUICK, "implicit_pointwise", "implicit_bpr", "implicit_hinge", "transitions"]
    }
    # (not "train-models-...": the parent flow's task run that stands for the subflow)
    stage = [
        r
        for r in runs
        if r.name in models or r.name.startswith(("embed-text", "evaluate-baselines", "ranking-baselines"))
    ]
    assert len(stage) == 1 + len(QUICK) + 4 + 2, sorted(r.name for r in stage)
    assert all(r.end_time is not None for r in stage)
    edges = sorted(
        [(r.start_time, 1) for r in stage] + [(r.end_time, -1) for r in stage]
    )  # an end sorts first
    alive = np.cumsum([d for _, d in edges])
    assert 2 <= alive.max() <= cap
    first = sorted(stage, key=lambda r: r.start_time)[:cap]
    embed = next(r for r in stage if r.name.startswith("embed-text"))
    text_free = {f"train-{m}" for m in QUICK if m != "w2v_mlp"}
    ranking = next(r for r in stage if r.name.startswith("ranking-baselines"))
    assert (
        embed in first
        and ranking in first
        and {r.name for r in first} <= text_free | {embed.name, ranking.name}
    )
    texts = [
        r for r in stage if r.name.startswith(("train-implicit", "train-w2v_mlp"))
    ]  # they wait for Word2Vec
    assert len(texts) == 4 and min(r.start_time for r in texts) >= embed.end_time
    assert min(r.start_time for r in texts) >= min(r.end_time for r in first)
    late = next(r for r in stage if r.name == "train-transitions")
    assert late.start_time >= max(
        r.start_time for r in stage if r.name.startswith("train-") and r is not late
    )


def test_full_flow_on_local_store(prefect_harness, small_sample, tmp_path):
    from flows.training import training

    sample, card = small_sample
    store_uri = (tmp_path / "store").as_uri()
    since = datetime.now(UTC)
    report = training(
        _params(
            sample,
            store_uri,
            tmp_path / "work",
            parallel_tasks=3,
            retrieval_models=["implicit_pointwise", "implicit_bpr", "implicit_hinge", "transitions"],
        )
    )
    store = open_store(store_uri)
    _check_parallel_stage_is_capped(since, 3)

    names = sorted(m["name"] for m in report["models"] if not m.get("members"))
    assert names == sorted(QUICK)
    base = {b["name"]: b for b in report["baselines"]}
    for m in report["models"]:
        if m.get("skipped"):  # knn_baseline on this sample: its dense export table passes the cap
            assert m["name"] == "knn_baseline" and "max_table_cells" in m["skipped"]
            continue
        assert m["test_rmse"] < base["global_mean"]["test_rmse"], m["name"]
    champ = next(m for m in report["models"] if m["name"] == report["champion"]["name"])
    assert champ["test_rmse"] < base["bias"]["test_rmse"]
    assert report["sample_card"]["noise_rmse"] == pytest.approx(card["noise_rmse"])
    assert champ["test_rmse"] > card["noise_rmse"]  # the gap to the noise floor is reported, never negative
    assert report["promoted"] is True and report["promotion"]["reason"] == "no published champion yet"
    assert report["champion"]["onnx_check"]["max_abs_diff"] <= 1e-4
    assert report["champion"]["onnx_check"]["unknown_users"] > 0
    meta = _check_published(store, report)
    stages = report["stage_seconds"]
    assert list(stages) == [
        "load-and-validate",
        "split",
        "train-models",
        "refit-champion",
        "build-bundle",
        "publish-and-promote",
    ]
    # Word2Vec trained inside train-models, beside the models that use no text; w2v_mlp started after it
    assert report["word2vec"]["vocabulary"] > 0 and 0 < report["word2vec"]["seconds"] < stages["train-models"]
    assert all(v > 0 for v in stages.values())
    assert stages["train-models"] >= max(m.get("fit_seconds", 0.0) for m in report["models"])

    run = f"runs/{report['run_id']}"
    assert json.loads(store.get_bytes(f"{run}/report.json"))["run_id"] == report["run_id"]
    assert store.exists(f"{run}/learning_curves.png")
    parts = {
        n: pd.read_parquet(store.url_for(f"{run}/splits/{n}.parquet").removeprefix("file://"))
        for n in ("train", "validation", "test")
    }
    assert len(parts["test"]) == report["split"]["test"]

    # the served model is the refit on every rating; its reported metrics are the held-out fit's
    everything = pd.concat(parts.values(), ignore_index=True)
    assert meta["fitted_on"]["rows"] == len(everything) == report["refit"]["rows"]
    assert meta["fitted_on"]["splits"] == ["train", "validation", "test"]
    assert meta["metrics"]["test_rmse"] == pytest.approx(champ["test_rmse"])
    history = pd.read_parquet(
        store.url_for(f"models/{report['champion']['version']}/user_history.parquet").removeprefix("file://")
    )
    assert len(history) == len(everything[["user_id", "item_id"]].drop_duplicates())  # every split's ratings
    session = load_session(store.get_bytes(f"models/{report['champion']['version']}/model.onnx"))
    val_users = parts["validation"]["user_id"].to_numpy(object)
    pred = predict_ratings(session, val_users, parts["validation"]["item_id"].to_numpy(object))
    assert (
        rmse(parts["validation"]["rating"].to_numpy(np.float64), pred) < champ["val_rmse"]
    )  # it learned them

    _check_rating_blend(store, tmp_path / "work", report)

    # the implicit models: each improved on its untrained start, the champion beat most-popular on validation
    retrieval = report["retrieval"]
    singles = [r for r in retrieval["models"] if not r.get("members")]
    assert {r["name"] for r in singles} == {
        "implicit_pointwise",
        "implicit_bpr",
        "implicit_hinge",
        "transitions",
    }
    assert all(r["best_epoch"] >= 1 for r in singles)
    # their blend, weights fitted on validation, is measured like them, on the same validation and test users
    summed = next(r for r in retrieval["models"] if r["name"] == "implicit_ensemble")
    assert {m["name"] for m in summed["members"]} <= {r["name"] for r in singles} and len(
        summed["members"]
    ) >= 2
    assert all(m["weight"] > 0 and m["scale"] > 0 for m in summed["members"])
    assert 0 < summed["val_ndcg_at_10"] and summed["test_users"] == singles[0]["test_users"] > 0
    popular = next(b for b in retrieval["baselines"] if b["name"] == "most_popular")
    best = next(r for r in retrieval["models"] if r["name"] == retrieval["champion"])
    assert (
        best["val_ndcg_at_10"]
        == max(r["val_ndcg_at_10"] for r in retrieval["models"])
        > popular["val_ndcg_at_10"]
    )
    assert meta["retrieval"]["model"] == retrieval["champion"]
    assert {"retrieval.onnx", "retrieval_items.parquet"} <= set(meta["files"])  # hashed and checked above
    assert (
        meta["retrieval"]["onnx_check"]["max_abs_diff"] == 0.0
        and meta["retrieval"]["onnx_check"]["unknown_users"] == 1
    )


def _check_rating_blend(store, work: Path, report) -> None:
    """The rating blend is a leaderboard row like any model (val_rmse out of fold). Served (the published
    bundle when it won, else forced: its members refit and the bundle built in the run's workspace), its one
    ONNX graph scores test pairs as the torch blend of the refit members does, unknown ids included."""
    from musicrec.pipeline.prepare import load_train_data
    from musicrec.pipeline.publish import build_rating_bundle
    from musicrec.pipeline.refit import REFIT_DIR, full_data, refit_rating
    from musicrec.pipeline.report import format_leaderboard, leaderboard, model_card
    from musicrec.pipeline.train import load_model
    from musicrec.pipeline.workspace import Workspace
    from musicrec.rating.blend import ENSEMBLE

    blend = next(m for m in report["models"] if m["name"] == ENSEMBLE)
    # on this sparse sample the models predict nearly alike: often one member, recalibrated on validation
    assert len(blend["members"]) >= 1 and all(m["weight"] > 0 for m in blend["members"])
    assert blend["val_rmse"] >= blend["val_rmse_in_sample"] and blend["test_rmse"] > 0
    board = format_leaderboard(leaderboard(report["models"], report["baselines"]), report["champion"]["name"])
    assert any(line.startswith(ENSEMBLE) for line in board.splitlines())
    ws = Workspace(work / report["run_id"])
    if report["champion"]["name"] == ENSEMBLE:
        onnx = store.get_bytes(f"models/{report['champion']['version']}/model.onnx")
        assert "- a blend of" in model_card(report)
    else:
        run = {**report["data"], "split": report["split"]}
        meta = build_rating_bundle(ws, blend, load_train_data(ws), run, refit_rating(ws, blend))
        assert meta["model"] == ENSEMBLE and meta["onnx_check"]["max_abs_diff"] <= 1e-4
        assert meta["fitted_on"]["epochs"].keys() == {m["name"] for m in blend["members"]}
        onnx = (ws.bundle / "model.onnx").read_bytes()
    full = full_data(ws)
    served = load_model(ws, ENSEMBLE, full, directory=REFIT_DIR)
    test = pd.read_parquet(ws.splits / "test.parquet")
    users = np.array([*test["user_id"], "NEW-USER"], dtype=object)
    items = np.array([*test["item_id"], test["item_id"].iloc[0]], dtype=object)
    import torch

    with torch.no_grad():
        expected = served(
            torch.from_numpy(full.users.lookup(users)), torch.from_numpy(full.items.lookup(items))
        ).numpy()
    np.testing.assert_allclose(predict_ratings(load_session(onnx), users, items), expected, atol=1e-4)


def test_promotion_compares_on_rows_the_incumbent_never_fitted_on(
    prefect_harness, small_sample, tmp_path, monkeypatch
):
    """The issue's nightly case: a run on the oldest 80% of the sample, then a run on all of it. The second
    run, told to keep no older workspace, deletes the first's: the promotion reads the store only."""
    from flows.training import training
    from musicrec.data.readers import load_dataset

    sample, _ = small_sample
    ratings = load_dataset([str(sample / "reviews.json.gz")], []).ratings.sort_values(
        "timestamp", kind="stable"
    )
    old = tmp_path / "old.csv"
    cols = ["user_id", "item_id", "rating", "timestamp"]
    ratings[cols].iloc[: int(0.8 * len(ratings))].to_csv(old, index=False)
    full = tmp_path / "all.csv"
    ratings[cols].to_csv(full, index=False)
    store_uri = (tmp_path / "store").as_uri()
    store = open_store(store_uri)
    models = [
        "gmf",
        "gmf_logistic",
        "nnmf",
    ]  # at their defaults: fast on 16K ratings; one must beat the baseline
    quick = {"retrieval_models": ["implicit_bpr"], "overrides": {"implicit_bpr": {"epochs": 8}}}
    first = training(
        _params(sample, store_uri, tmp_path / "work", models=models, **quick).model_copy(
            update={"reviews": [str(old)], "meta": []}
        )
    )
    assert first["promoted"]
    assert (tmp_path / "work" / first["run_id"] / "splits").is_dir()
    monkeypatch.setenv("MUSICREC_KEEP_WORK", "0")
    second = training(
        _params(sample, store_uri, tmp_path / "work", models=models, seed=1, **quick).model_copy(
            update={"reviews": [str(full)], "meta": []}
        )
    )
    assert second["champion"].get("version"), second["promotion"]
    assert not (tmp_path / "work" / first["run_id"]).exists()
    assert (tmp_path / "work" / second["run_id"] / "splits").is_dir()
    promo = second["promotion"]
    run1 = f"runs/{first['run_id']}/splits"
    seen = pd.concat(
        [
            pd.read_parquet(store.url_for(f"{run1}/{n}.parquet").removeprefix("file://"))
            for n in ("train", "validation", "test")
        ]
    )
    test2 = pd.read_parquet(
        store.url_for(f"runs/{second['run_id']}/splits/test.parquet").removeprefix("file://")
    )
    key = pd.MultiIndex.from_frame(test2[["user_id", "item_id"]])
    unseen = test2[~key.isin(pd.MultiIndex.from_frame(seen[["user_id", "item_id"]]))]
    assert 100 <= promo["compared_rows"] == len(unseen) < len(test2)
    session = load_session(store.get_bytes(f"models/{first['champion']['version']}/model.onnx"))
    inc = predict_ratings(session, unseen["user_id"].to_numpy(object), unseen["item_id"].to_numpy(object))
    assert promo["incumbent_rmse"] == pytest.approx(
        rmse(unseen["rating"].to_numpy(np.float64), inc), abs=1e-9
    )
    assert isinstance(promo["challenger_rmse"], float) and isinstance(promo["reason"], str)
    # the retrieval champions: NDCG@10 on the second run's leave-last-out test users whose held-out pair the
    # incumbent never fitted on, both ranking over the same items with the same exclusions
    ranking = promo.get("retrieval") or {}
    if promo["challenger_rmse"] <= promo["incumbent_rmse"]:
        test_llo = pd.read_parquet(
            store.url_for(f"runs/{second['run_id']}/ranking_splits/test.parquet").removeprefix("file://")
        )
        fair = ~pd.MultiIndex.from_frame(test_llo).isin(
            pd.MultiIndex.from_frame(seen[["user_id", "item_id"]])
        )
        assert ranking["comparable"] and ranking["users"] == int(fair.sum()) < len(test_llo)
        assert 0 <= ranking["incumbent_ndcg"] <= 1 and 0 <= ranking["challenger_ndcg"] <= 1
        assert promo["promoted"] == (ranking["challenger_ndcg"] >= ranking["incumbent_ndcg"])
    else:
        assert not promo["promoted"]
    pointer = json.loads(store.get_bytes("models/champion.json"))
    assert pointer["version"] == (second if promo["promoted"] else first)["champion"]["version"]


def test_failed_validation_stops_the_run_and_leaves_the_store_untouched(prefect_harness, tmp_path):
    from flows.training import training

    bad = tmp_path / "bad.csv"
    rows = [f"U{k % 40},I{k % 25},{7 if k % 10 == 0 else 4},1400000000" for k in range(400)]
    bad.write_text("\n".join(rows) + "\n")
    store_uri = (tmp_path / "store").as_uri()
    store = open_store(store_uri)
    store.put_bytes("models/champion.json", b'{"version": "kept"}')
    from flows.training import TrainingParams

    state = training(
        TrainingParams(
            reviews=[str(bad)], store_uri=store_uri, work_dir=str(tmp_path / "w"), rating_range=[1, 5]
        ),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_between"):
        state.result()
    assert store.list("") == ["models/champion.json"]
    assert store.get_bytes("models/champion.json") == b'{"version": "kept"}'


@pytest.mark.s3
def test_full_flow_on_s3_over_http(prefect_harness, small_sample, tmp_path):
    from s3server import moto_s3

    from flows.training import training

    sample, _ = small_sample
    with moto_s3() as s3:
        store_uri = s3.uri("musicrec")
        report = training(
            _params(
                sample,
                store_uri,
                tmp_path / "work",
                models=["gmf_logistic", "w2v_mlp"],
                overrides={k: QUICK[k] for k in ["gmf_logistic", "w2v_mlp"]},
            )
        )
        store = open_store(store_uri)
        assert report["champion"]["uri"].startswith(f"s3://{s3.bucket}/musicrec/models/")
        _check_published(store, report)
        assert store.exists(f"runs/{report['run_id']}/splits/train.parquet")


def test_dask_runner_on_a_local_cluster(prefect_harness, small_sample, tmp_path):
    from flows.training import training

    sample, _ = small_sample
    report = training(
        _params(
            sample,
            (tmp_path / "store").as_uri(),
            tmp_path / "work",
            models=["gmf_logistic", "w2v_mlp"],
            overrides={k: QUICK[k] for k in ["gmf_logistic", "w2v_mlp"]},
            task_runner="dask",
            threads=2,
        )
    )
    assert report["task_runner"] == "dask"
    assert sorted(m["name"] for m in report["models"] if not m.get("members")) == ["gmf_logistic", "w2v_mlp"]
    assert report["champion"]["name"] in {"gmf_logistic", "w2v_mlp", "rating_ensemble"}
