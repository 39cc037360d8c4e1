"""The `ranking-evaluation` flow: run splits + bundle -> HR@k, NDCG@k, coverage, popularity vs references."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.scoring import run_namer
from flows.workspaces import held_workspace
from musicrec.pipeline.workspace import Workspace, new_run_id
from musicrec.results import mark_champion
from musicrec.settings import get_settings
from tasks import evaluation as t
from tasks.scoring import fetch_bundle


class RankingParams(BaseModel):
    """Which run's test split, which model; the Prefect UI renders this as a form."""

    run_id: str = Field(..., description="training run whose splits to use (runs/RUN_ID/ in the store)")
    store_uri: str = Field("", description="s3://bucket/prefix or file:///path; empty = MUSICREC_STORE_URI")
    version: str = Field(
        "", description="published model version; empty = the run's own bundle, else the champion"
    )
    k: int = Field(10, ge=1, le=1000, description="list length (HR@k, NDCG@k)")
    seed: int = Field(0, description="seed of the random reference (and of the user sample)")
    max_users: int = Field(0, ge=0, description="evaluate a seeded sample of this many test users; 0 = all")
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, description="onnxruntime threads")
    work_dir: str = Field(default_factory=lambda: get_settings().work_dir, description="local scratch folder")


@flow(
    name="ranking-evaluation",
    flow_run_name=run_namer("evaluate", "run_id", "version", defaults={"version": "run-bundle"}),
)
def ranking_evaluation(params: RankingParams) -> dict[str, Any]:
    """Rank for the run's test users; write runs/<run_id>/ranking.json and a table artifact."""
    store_uri = params.store_uri or get_settings().store_uri
    ws = Workspace.create(params.work_dir, f"evaluate-{new_run_id()}")
    version = t.resolve_version(store_uri, params.run_id, params.version)
    with held_workspace(str(ws.root)):
        bundle = fetch_bundle(store_uri, version, str(ws.root))
        splits = t.fetch_splits(store_uri, params.run_id, str(ws.root))
        result = t.rank_test_users(
            bundle["directory"], splits, params.k, params.seed, params.max_users, params.threads
        )
    result = mark_champion(result, t.current_champion(store_uri))
    return t.publish_ranking(store_uri, params.run_id, result)
