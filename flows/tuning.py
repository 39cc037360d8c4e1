"""The `tuning` flow: validate -> split + Word2Vec (the training flow's stages) -> one Optuna search per
model, its trials as parallel task runs -> tuning/<model>.json in the store, which training starts from."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import Field

from flows.inputs import RetrievalName, RunInputs, begin_run, load_and_prepare, run_name
from flows.workspaces import held_workspace
from musicrec.errors import DataError
from musicrec.pipeline.report import StageClock, format_stages
from musicrec.pipeline.workspace import is_remote
from tasks import tuning as tt
from tasks.runners import make_task_runner

RUN_NAME_PREFIX = "tuning-"


class TuningParams(RunInputs):
    """A search per model; the Prefect UI renders this as a form."""

    retrieval_models: list[RetrievalName] = Field(
        default=[], description="retrieval models to tune too (judged on validation NDCG@10); [] = none"
    )
    trials: int = Field(20, ge=1, le=10000, description="trials per model (trial 0 is the default)")
    timeout_per_model: float = Field(1800, gt=0, description="wall-clock seconds per model's search")
    timeout_total: float = Field(14400, gt=0, description="wall-clock seconds for all searches")
    parallel: int = Field(0, ge=0, description="trials at once; 0 = one per core")


def _run_name() -> str:
    """The Prefect flow run is named after the musicrec run id it creates (the flow reads it back)."""
    return run_name(RUN_NAME_PREFIX)


@flow(name="tune-model", flow_run_name="tune-{model}")
def tune_model(
    workdir: str,
    model: str,
    trials: int,
    budget_seconds: float,
    seed: int,
    parallel: int,
    threads_per_trial: int,
    warm_start: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One model's search: batches of `parallel` trials as task runs on the parent's runner; warm_start
    (the last record's best settings) is its second trial."""
    from musicrec.tuning.search import run_search

    logger = get_run_logger()

    def run_batch(specs: list[Any]) -> list[dict[str, Any]]:
        futures = [tt.run_trial.submit(workdir, s.as_dict(), threads_per_trial, seed) for s in specs]
        return [f.result() for f in futures]

    def on_trial(o: dict[str, Any]) -> None:
        logger.info(
            "%s: trial %d/%d %s %s %.4f, best %.4f (%d epochs, %.1fs)",
            model,
            o["number"] + 1,
            o["trials"],
            o["state"],
            o["metric"],
            o["value"],
            o["best_value"] or float("nan"),
            o["epochs"],
            o["seconds"],
        )

    journal = Path(workdir) / "tuning" / f"{model}.journal"
    return run_search(
        journal,
        model,
        trials=trials,
        parallel=parallel,
        budget_seconds=budget_seconds,
        seed=seed,
        run_batch=run_batch,
        warm_start=warm_start,
        on_trial=on_trial,
    )


def search_models(
    workdir: str,
    models: list[str],
    *,
    run_id: str,
    run: dict[str, Any],
    store_uri: str,
    trials: int,
    budget_total: float,
    budget_per_model: float,
    seed: int,
    runner: Any,
    parallel: int,
    threads: int,
    clock: StageClock,
    mark_unreached: bool = False,
) -> list[dict[str, Any]]:
    """One search per model in turn on the run's prepared workspace, each stored as tuning/<model>.json;
    the tuning flow's stage, and the training flow's first-run search. Each search's second trial is the
    model's previous record's best settings, if it has one (a warm start). A model the total budget does not
    reach (what is left of it is less than the median search so far: search.model_budget) keeps its previous
    record, if any; without one, and with mark_unreached (the training flow's search), it gets a record of
    no trial that says so (records.unreached_record), so that the nightly runs train it from its defaults
    instead of searching again, until `musicrec tune` (or the weekly tuning) searches it or the data's size
    drifts."""
    from musicrec.tuning.records import build_record, unreached_record
    from musicrec.tuning.search import model_budget

    logger = get_run_logger()
    end, records, spent = time.time() + budget_total, [], []
    warm = tt.last_best_params(store_uri, models)
    for model in models:
        budget = model_budget(budget_per_model, end - time.time(), spent)
        if budget <= 0:
            logger.warning(
                "search budget spent (%.0f s of %.0f s left, less than a search has taken in this run): "
                "%s not tuned (its previous record, if any, stays)",
                max(0.0, end - time.time()),
                budget_total,
                model,
            )
            if mark_unreached and model not in warm:
                record = unreached_record(model, run_id=run_id, run=run, seed=seed)
                record["uri"] = tt.publish_tuning(store_uri, record)
                records.append(record)
            continue
        t0 = time.time()
        with clock(f"tune-{model}"):
            outcomes = tune_model.with_options(task_runner=runner)(
                workdir, model, trials, budget, seed, parallel, max(1, threads // parallel), warm.get(model)
            )
            record = build_record(
                model,
                outcomes,
                run_id=run_id,
                run=run,
                seed=seed,
                seconds=time.time() - t0,
                budget_seconds=budget,
                trials_asked=trials,
            )
            record["uri"] = tt.publish_tuning(store_uri, record)
        spent.append(time.time() - t0)
        records.append(record)
    return records


@flow(name="tuning", flow_run_name=_run_name)
def tuning(params: TuningParams) -> dict[str, Any]:
    """Search each model's hyperparameters on validation (RMSE for rating models, NDCG@10 for retrieval
    models) and store the best as tuning/<model>.json."""
    workdir, run_id, store_uri, threads = begin_run(params, RUN_NAME_PREFIX)
    if is_remote(workdir):
        raise ValueError(
            f"tuning needs its workspace on a filesystem its trials share (the Optuna journal is a "
            f"file): unset MUSICREC_WORK_URI / work_uri ({workdir}) for musicrec tune"
        )
    with held_workspace(workdir):
        return _tuning(params, workdir, run_id, store_uri, threads)


def _tuning(params: TuningParams, workdir: str, run_id: str, store_uri: str, threads: int) -> dict[str, Any]:
    logger = get_run_logger()
    clock = StageClock()
    run, prep = load_and_prepare(params, workdir, clock)
    fb = run.get("feedback") or {}
    models = [*params.models, *params.retrieval_models]
    if fb.get("kind") == "implicit":  # play counts and the like train the retrieval models only
        if not params.retrieval_models:
            raise DataError(
                ", ".join(params.reviews),
                f"this input is implicit feedback ({fb.get('reason')}), which trains the retrieval models "
                "only, and no retrieval model is named",
                hint="add e.g. --retrieval-models implicit_bpr,als; --feedback explicit if the values are "
                "ratings",
            )
        models = list(params.retrieval_models)
        logger.info("implicit feedback (%s): rating models not searched", fb.get("reason"))
    parallel = params.parallel or max(1, min(threads, params.trials))
    runner, parallel = make_task_runner(params.task_runner, params.dask_address, threads, parallel)
    records = search_models(
        workdir,
        models,
        run_id=run_id,
        run={**run, "split": prep["split"]},
        store_uri=store_uri,
        trials=params.trials,
        budget_total=params.timeout_total,
        budget_per_model=params.timeout_per_model,
        seed=params.seed,
        runner=runner,
        parallel=parallel,
        threads=threads,
        clock=clock,
    )
    logger.info(format_stages(clock.seconds))
    return {
        "run_id": run_id,
        "store_uri": store_uri,
        "data": {k: run[k] for k in ("ratings", "fingerprint")},
        "records": records,
        "stage_seconds": clock.seconds,
    }
