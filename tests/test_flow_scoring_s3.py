"""Batch scoring (and ranking evaluation) against an S3 store: moto over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json

import boto3
import pandas as pd
import pytest

from musicrec.pipeline.workspace import Workspace
from musicrec.scoring.output import read_output
from musicrec.store import open_store
from musicrec.store.layout import OUTPUT_MANIFEST as MANIFEST

pytestmark = [pytest.mark.slow, pytest.mark.flow, pytest.mark.s3]


@pytest.fixture(scope="module")
def s3_trained(prefect_harness, small_sample, tmp_path_factory):
    """(s3 server, store_uri, workspace, report): a quick gmf_logistic run that published to the bucket."""
    from s3server import moto_s3

    from flows.training import TrainingParams, training

    sample, _ = small_sample
    root = tmp_path_factory.mktemp("scoring_s3")
    with moto_s3() as s3:
        store_uri = s3.uri("musicrec")
        report = training(
            TrainingParams(
                reviews=[str(sample / "reviews.json.gz")],
                meta=[str(sample / "meta.json.gz")],
                store_uri=store_uri,
                work_dir=str(root / "work"),
                models=["gmf_logistic"],
                overrides={"gmf_logistic": {"epochs": 3}},
                retrieval_models=[],
            )
        )
        assert report["promoted"], f"the training run published no champion: {report['champion']}"
        yield s3, store_uri, Workspace(root / "work" / report["run_id"]), report


def _keys(s3, prefix: str) -> list[str]:
    client = boto3.session.Session().client("s3", endpoint_url=s3.endpoint_url)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", ()))


def test_pairs_scored_from_and_into_the_bucket(s3_trained, tmp_path):
    from flows.scoring import ScoringParams, batch_scoring

    s3, store_uri, ws, _ = s3_trained
    pairs = pd.read_parquet(ws.splits / "test.parquet", columns=["user_id", "item_id"]).head(1500)
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    manifest = batch_scoring(
        ScoringParams(
            store_uri=store_uri,
            pairs=str(tmp_path / "pairs.csv"),
            chunk_rows=500,
            threads=2,
            work_dir=str(tmp_path / "swork"),
        )
    )
    assert manifest["uri"].startswith(f"s3://{s3.bucket}/musicrec/scores/") and manifest["uri"].endswith(
        MANIFEST
    )
    prefix = manifest["uri"].removeprefix(f"s3://{s3.bucket}/").removesuffix(f"/{MANIFEST}")
    keys = _keys(s3, prefix + "/")
    assert keys == sorted([f"{prefix}/{MANIFEST}", *(f"{prefix}/{p}" for p in manifest["parts"])])
    assert len(manifest["parts"]) == manifest["chunks"] == 4 and manifest["rows"] == len(
        pairs
    )  # 1500 rows, <= 500 per chunk, a multiple of 2 threads
    stored = json.loads(open_store(store_uri).get_bytes(prefix.removeprefix("musicrec/") + f"/{MANIFEST}"))
    assert stored["parts"] == manifest["parts"]
    out = read_output(open_store(store_uri), prefix.removeprefix("musicrec/"))
    assert out[["user_id", "item_id"]].equals(pairs.reset_index(drop=True))
    assert out["predicted_rating"].notna().all()


def test_ranking_evaluation_writes_next_to_the_report_in_the_bucket(s3_trained, tmp_path):
    from flows.evaluation import RankingParams, ranking_evaluation

    s3, store_uri, _, report = s3_trained
    result = ranking_evaluation(
        RankingParams(
            run_id=report["run_id"],
            store_uri=store_uri,
            max_users=200,
            threads=1,
            work_dir=str(tmp_path / "w"),
        )
    )
    keys = _keys(s3, f"musicrec/runs/{report['run_id']}/")
    assert f"musicrec/runs/{report['run_id']}/report.json" in keys
    assert f"musicrec/runs/{report['run_id']}/ranking.json" in keys
    assert result["uri"] == f"s3://{s3.bucket}/musicrec/runs/{report['run_id']}/ranking.json"
    assert len(result["methods"]) == 3
