"""The `training` flow: validate -> split + Word2Vec -> six models in parallel -> champion -> ONNX -> publish."""

from __future__ import annotations

import os
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.futures import wait
from pydantic import BaseModel, Field

from musicrec.evaluation import choose_champion
from musicrec.models.registry import MODELS
from musicrec.pipeline.report import StageClock, format_stages
from musicrec.pipeline.workspace import Workspace, new_run_id
from musicrec.quiet import quiet_third_party
from musicrec.settings import get_settings
from tasks import reporting
from tasks import training as t
from tasks.runners import make_task_runner

CHAMPION_EVENT = "musicrec.champion.promoted"  # batch-scoring/nightly's trigger listens for this (deployments/)
ModelName = Literal[tuple(MODELS)]  # the registry's names: the UI form offers exactly these


class SplitParams(BaseModel):
    method: Literal["random", "temporal"] = "random"
    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)


class TrainingParams(BaseModel):
    """Everything a training run needs; the Prefect UI renders this as a form."""

    reviews: list[str] = Field(..., description="review files (Amazon 2014/2018/2023 JSON lines, ratings CSV, ...)")
    meta: list[str] = Field(default=[], description="optional metadata files")
    store_uri: str = Field("", description="s3://bucket/prefix or file:///path; empty = MUSICREC_STORE_URI or ./.musicrec/store")
    models: list[ModelName] = Field(default=list(MODELS), description="which models to train")
    seed: int = 0
    split: SplitParams = Field(default=SplitParams())
    overrides: dict[str, dict[str, Any]] = Field(default={},
                                                 description='per-model hyperparameters, e.g. {"gmf": {"epochs": 5}}')
    task_runner: Literal["threads", "processes", "dask"] = "threads"
    dask_address: str = Field("", description="existing Dask scheduler; empty = a LocalCluster")
    threads: int = Field(0, ge=0, description="CPU threads for the whole run; 0 = every core")
    work_dir: str = ".musicrec/work"
    promote: bool = Field(True, description="move the champion pointer if the new champion wins; off = publish only")
    refit: bool = Field(True, description="serve the champion refit on all ratings (train + validation + test)")
    columns: dict[str, str] = Field(default={},
                                    description="file column for user, item, rating, timestamp (headers not matched)")
    rating_range: list[float] | None = Field(None, min_length=2, max_length=2,
                                             description="[min, max] stars; empty = read from the data")


@flow(name="train-models")
def train_models(workdir: str, models: list[str], overrides: dict[str, dict[str, Any]],
                 threads_per_model: int) -> dict[str, list[dict[str, Any]]]:
    """The parallel stage: one task run per model (and one for the baselines) on the parent's runner."""
    futures = [t.train_model.submit(workdir, m, overrides.get(m, {}), threads_per_model) for m in models]
    baselines = t.evaluate_baselines.submit(workdir)
    wait([*futures, baselines])
    return {"models": [f.result() for f in futures], "baselines": baselines.result()}


RUN_NAME_PREFIX = "training-"


def _run_name() -> str:
    """The Prefect flow run is named after the musicrec run id it creates (the flow reads it back)."""
    return RUN_NAME_PREFIX + new_run_id()


def _run_id() -> str:
    from prefect.runtime import flow_run

    name = flow_run.name or ""
    return name[len(RUN_NAME_PREFIX):] if name.startswith(RUN_NAME_PREFIX) else new_run_id()


@flow(name="training", flow_run_name=_run_name)
def training(params: TrainingParams) -> dict[str, Any]:
    """Train all models on fresh data and publish the champion if it is at least as good as the current one."""
    quiet_third_party()
    logger = get_run_logger()
    store_uri = params.store_uri or get_settings().store_uri
    threads = params.threads or os.cpu_count() or 1
    ws = Workspace.create(params.work_dir, _run_id())
    workdir = str(ws.root)
    clock = StageClock()
    with clock("load-and-validate"):
        run = t.load_and_validate(workdir, params.reviews, params.meta, params.columns,
                                  tuple(params.rating_range) if params.rating_range else None)
    fractions = (params.split.train, params.split.validation, params.split.test)
    with clock("split-and-embed"):
        prep = t.split_and_embed(workdir, params.seed, fractions, params.split.method)
    runner, parallel = make_task_runner(params.task_runner, params.dask_address, threads, len(params.models))
    overrides = {m: {"seed": params.seed, **params.overrides.get(m, {})} for m in params.models}
    with clock("train-models"):
        trained = train_models.with_options(task_runner=runner)(
            workdir, list(params.models), overrides, max(1, threads // parallel))
    rows, baselines = trained["models"], trained["baselines"]
    bias = next(b for b in baselines if b["name"] == "bias")
    champion = choose_champion(rows, bias["val_rmse"])
    report: dict[str, Any] = {
        "run_id": ws.run_id, "data": {k: run[k] for k in ("ratings", "users", "items", "fingerprint", "inputs")},
        "read": run["read"], "split": prep["split"], "word2vec": prep["word2vec"], "models": rows,
        "baselines": baselines, "champion": {"name": champion}, "promoted": False, "previous_test_rmse": None,
        "task_runner": params.task_runner, "sample_card": run.get("sample_card"), "stage_seconds": clock.seconds,
    }
    if champion is None:
        logger.warning("no model beat the bias baseline on validation: nothing is published")
        report["promotion"] = {"compared_rows": 0, "incumbent_rmse": None, "challenger_rmse": None,
                               "promoted": False, "reason": "no model beat the bias baseline on validation"}
    else:
        row = next(r for r in rows if r["name"] == champion)
        refit_info = None
        if params.refit:
            with clock("refit-champion"):
                refit_info = t.refit_champion(workdir, row, threads)
            report["refit"] = refit_info
        with clock("build-bundle"):
            meta = t.build_bundle(workdir, row, {**run, "split": prep["split"]}, refit_info)
        with clock("publish-and-promote"):
            published = t.publish_bundle(workdir, store_uri, meta["version"])
            report["champion"] = {"name": champion, "version": published["version"], "uri": published["uri"],
                                  "onnx_check": meta["onnx_check"]}
            if params.promote:
                decision = t.promote_champion(workdir, store_uri, published, row["val_rmse"] < bias["val_rmse"])
            else:
                decision = {"compared_rows": 0, "incumbent_rmse": None, "challenger_rmse": None, "promoted": False,
                            "reason": "promotion off (--no-promote): bundle published, pointer untouched",
                            "incumbent_version": None, "replaced_damaged": None}
        report["promotion"] = decision
        report.update(promoted=decision["promoted"], previous_version=decision.get("incumbent_version"),
                      previous_test_rmse=decision.get("incumbent_rmse"), replaced_damaged=decision.get("replaced_damaged"))
    logger.info(format_stages(clock.seconds))
    out = reporting.publish_report(workdir, store_uri, report)
    if out["promoted"]:
        announce_champion(store_uri, out)
    return out


def announce_champion(store_uri: str, report: dict[str, Any]) -> None:
    """Emit CHAMPION_EVENT so that deployments can react to a new champion (nightly scoring does)."""
    from musicrec.store import open_store

    store = open_store(store_uri).uri
    emit_event(event=CHAMPION_EVENT, resource={"prefect.resource.id": f"musicrec.champion.{store}",
                                               "prefect.resource.name": "musicrec champion"},
               payload={"version": report["champion"]["version"], "model": report["champion"]["name"],
                        "store_uri": store, "run_id": report["run_id"]})
