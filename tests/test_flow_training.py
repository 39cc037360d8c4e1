"""The training flow end to end under a real (test-harness) Prefect server, on the small generated sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from musicrec.errors import ValidationFailed
from musicrec.hashing import sha256_bytes
from musicrec.metrics import rmse
from musicrec.runtime import load_session, predict
from musicrec.store import open_store

pytestmark = [pytest.mark.slow, pytest.mark.flow]
QUICK = {m: {"epochs": 3} for m in ["gmf", "gmf_regression", "gmf_logistic", "nnmf", "mlp", "w2v_mlp"]}


def _params(sample: Path, store_uri: str, work: Path, **kw):
    from flows.training import TrainingParams

    return TrainingParams(reviews=[str(sample / "reviews.json.gz")], meta=[str(sample / "meta.json.gz")],
                          store_uri=store_uri, work_dir=str(work), **kw)


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


def test_full_flow_on_local_store(prefect_harness, small_sample, tmp_path):
    from flows.training import training

    sample, card = small_sample
    store_uri = (tmp_path / "store").as_uri()
    report = training(_params(sample, store_uri, tmp_path / "work"))
    store = open_store(store_uri)

    names = sorted(m["name"] for m in report["models"])
    assert names == sorted(QUICK)
    base = {b["name"]: b for b in report["baselines"]}
    for m in report["models"]:
        assert m["test_rmse"] < base["global_mean"]["test_rmse"], m["name"]
    champ = next(m for m in report["models"] if m["name"] == report["champion"]["name"])
    assert champ["test_rmse"] < base["bias"]["test_rmse"]
    assert report["sample_card"]["noise_rmse"] == pytest.approx(card["noise_rmse"])
    assert champ["test_rmse"] > card["noise_rmse"]  # the gap to the noise floor is reported, never negative
    assert report["promoted"] is True and report["previous_test_rmse"] is None
    assert report["champion"]["onnx_check"]["max_abs_diff"] <= 1e-4
    assert report["champion"]["onnx_check"]["unknown_users"] > 0
    _check_published(store, report)
    stages = report["stage_seconds"]
    assert list(stages) == ["load-and-validate", "split-and-embed", "train-models", "build-bundle",
                            "publish-and-promote"]
    assert all(v > 0 for v in stages.values())
    assert stages["train-models"] >= max(m["fit_seconds"] for m in report["models"])

    run = f"runs/{report['run_id']}"
    assert json.loads(store.get_bytes(f"{run}/report.json"))["run_id"] == report["run_id"]
    assert store.exists(f"{run}/learning_curves.png")
    test = pd.read_parquet(store.url_for(f"{run}/splits/test.parquet").removeprefix("file://"))
    assert {"user_id", "item_id", "rating"} <= set(test.columns)
    assert len(test) == report["split"]["test"]

    # onnxruntime on the published bundle reproduces the reported test RMSE from raw string ids
    session = load_session(store.get_bytes(f"models/{report['champion']['version']}/model.onnx"))
    pred = predict(session, test["user_id"].to_numpy(object), test["item_id"].to_numpy(object))
    assert rmse(test["rating"].to_numpy(np.float64), pred) == pytest.approx(champ["test_rmse"], abs=1e-4)

    # A second run whose champion is worse on its test split must not move the pointer.
    pointer_before = store.get_bytes("models/champion.json")
    second = training(_params(sample, store_uri, tmp_path / "work", seed=1, models=["gmf_logistic"],
                              overrides={"gmf_logistic": {"epochs": 2}}))
    assert second["promoted"] is False
    assert second["previous_test_rmse"] is not None
    second_champ = next(m for m in second["models"] if m["name"] == "gmf_logistic")
    assert second["previous_test_rmse"] < second_champ["test_rmse"]
    assert store.get_bytes("models/champion.json") == pointer_before
    assert store.exists(f"models/{second['champion']['version']}/metadata.json")  # kept, just not promoted


def test_failed_validation_stops_the_run_and_leaves_the_store_untouched(prefect_harness, tmp_path):
    from flows.training import training

    bad = tmp_path / "bad.csv"
    rows = [f"U{k % 40},I{k % 25},{7 if k % 10 == 0 else 4},1400000000" for k in range(400)]
    bad.write_text("\n".join(rows) + "\n")
    store_uri = (tmp_path / "store").as_uri()
    store = open_store(store_uri)
    store.put_bytes("models/champion.json", b'{"version": "kept"}')
    from flows.training import TrainingParams

    state = training(TrainingParams(reviews=[str(bad)], store_uri=store_uri, work_dir=str(tmp_path / "w")),
                     return_state=True)
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
        report = training(_params(sample, store_uri, tmp_path / "work", models=["gmf_logistic", "w2v_mlp"],
                                  overrides={k: QUICK[k] for k in ["gmf_logistic", "w2v_mlp"]}))
        store = open_store(store_uri)
        assert report["champion"]["uri"].startswith(f"s3://{s3.bucket}/musicrec/models/")
        _check_published(store, report)
        assert store.exists(f"runs/{report['run_id']}/splits/train.parquet")


def test_dask_runner_on_a_local_cluster(prefect_harness, small_sample, tmp_path):
    from flows.training import training

    sample, _ = small_sample
    report = training(_params(sample, (tmp_path / "store").as_uri(), tmp_path / "work", models=["gmf_logistic", "w2v_mlp"],
                              overrides={k: QUICK[k] for k in ["gmf_logistic", "w2v_mlp"]}, task_runner="dask", threads=2))
    assert report["task_runner"] == "dask"
    assert sorted(m["name"] for m in report["models"]) == ["gmf_logistic", "w2v_mlp"]
    assert report["champion"]["name"] in {"gmf_logistic", "w2v_mlp"}
