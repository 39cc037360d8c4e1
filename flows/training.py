"""The `training` flow: validate -> split -> Word2Vec beside
the models in parallel -> champion -> ONNX -> publish."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.futures import wait
from pydantic import Field

from flows.inputs import RETRIEVAL_MODELS, RetrievalName, RunInputs, begin_run, load_and_prepare, run_name
from flows.tuning import search_models
from flows.workspaces import held_workspace
from musicrec import registry
from musicrec.errors import DataError
from musicrec.pipeline.publish import PROMOTION_OFF, not_promoted
from musicrec.pipeline.report import StageClock, format_stages, with_decision
from musicrec.pipeline.retrieval import summarize as summarize_retrieval
from musicrec.pipeline.workspace import drop_cache
from musicrec.rating.build import model_class
from musicrec.settings import get_settings
from tasks import reporting
from tasks import training as t
from tasks.runners import fair_threads, make_task_runner, release_worker_caches

# tasks of the parallel stage alive at once: at the seed's size 3 was slower than 4 (benchmarks/RESULTS.md)
PARALLEL_TASKS = 4
# Kinds started after every other model: at the seed's size transitions' item x item tables beside
# Word2Vec, sasrec and als, or beside sasrec's test evaluation, made the run's peak memory
# (benchmarks/RESULTS.md, "Seed size on this session's machine").
START_LATE = frozenset({"transitions"})
CHAMPION_EVENT = (
    "musicrec.champion.promoted"  # batch-scoring/nightly's trigger listens for this (deployments/)
)


class TrainingParams(RunInputs):
    """Everything a training run needs; the Prefect UI renders this as a form."""

    overrides: dict[str, dict[str, Any]] = Field(
        default={},
        description='per-model hyperparameters, e.g. {"gmf": {"epochs": 5}}; they win over tuned ones',
    )
    retrieval_models: list[RetrievalName] = Field(
        default=list(RETRIEVAL_MODELS), description="implicit-feedback models (top-N retrieval); [] = none"
    )
    use_tuning: bool = Field(
        True,
        description="start each model from its latest tuning/<model>.json in the store, searching first "
        "for the models that have none (off = family defaults, no search)",
    )
    search_budget: float = Field(
        default_factory=lambda: get_settings().search_budget,
        ge=0,
        description="seconds of search for the models with no usable tuning record; 0 = no search",
    )
    search_trials: int = Field(
        default_factory=lambda: get_settings().search_trials,
        ge=1,
        description="at most this many trials per model in that search",
    )
    promote: bool = Field(
        True, description="move the champion pointer if the new champion wins; off = publish only"
    )
    refit: bool = Field(
        True, description="serve the champion refit on all ratings (train + validation + test)"
    )
    parallel_tasks: int = Field(
        PARALLEL_TASKS,
        ge=0,
        description="threads runner: tasks of the parallel stage alive at once (each holds "
        "its model in memory: fewer = a lower peak; 0 = all at once)",
    )


@flow(name="train-models")
def train_models(
    workdir: str,
    models: list[str],
    overrides: dict[str, dict[str, Any]],
    threads_per_model: int,
    retrieval_models: list[str] | None = None,
    seed: int = 0,
    threads: int | None = None,
    embedded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The parallel stage on the parent's runner: Word2Vec, and beside it one task run per rating model and
    per retrieval model (and one for each family's baselines); the models that use text wait for Word2Vec.

    Submission order is start order when the runner caps how many run at once (parallel_tasks): Word2Vec
    first; then the retrieval baselines, which build the leave-last-out split (cached per process) while
    Word2Vec trains rather than while the retrieval models wait for it; then the models without text; then
    those that use text (a task waiting for Word2Vec holds its slot, so they come after every model that can
    run meanwhile; hinge, the longest fit, first among them); then START_LATE; then the rating baselines;
    then each family's blend of its trained models (two models or more), which waits for them. A retrieval
    model's test evaluation may use every thread of the run (`threads`)."""
    embed = None if embedded else t.embed_text.submit(workdir, seed)  # embedded: done before a search
    retrieval_models = list(retrieval_models or [])
    ranking = t.ranking_baselines.submit(workdir) if retrieval_models else None
    configs = {m: registry.parse_config(m, overrides.get(m)) for m in retrieval_models}
    texts = {**{m: c.use_text for m, c in configs.items()}, **{m: model_class(m).uses_text for m in models}}
    negatives = {m: c.negatives for m, c in configs.items()}
    submitted = {}
    # stable: START_LATE last, text-free first; among equals the retrieval models scoring the most negatives
    # a row (hinge, the longest fit) first, so that the last to start is not the last to end
    for m in sorted(
        [*retrieval_models, *models], key=lambda m: (m in START_LATE, texts[m], -negatives.get(m, 0))
    ):
        wait_for = [embed] if texts[m] and embed is not None else None
        if m in retrieval_models:
            submitted[m] = t.train_retrieval.submit(
                workdir,
                m,
                overrides.get(m, {}),
                threads_per_model,
                threads or threads_per_model,
                wait_for=wait_for,
            )
        else:
            submitted[m] = t.train_model.submit(
                workdir, m, overrides.get(m, {}), threads_per_model, wait_for=wait_for
            )
    futures = [submitted[m] for m in models]  # results in the caller's order
    ranked = [submitted[m] for m in retrieval_models]
    baselines = t.evaluate_baselines.submit(workdir) if models else None
    blended = t.ensemble_rating.submit(workdir, futures) if len(futures) >= 2 else None
    summed = (
        t.ensemble_retrieval.submit(workdir, ranked, ranking)
        if ranking is not None and len(ranked) >= 2
        else None
    )
    wait(
        [
            *([embed] if embed is not None else []),
            *futures,
            *ranked,
            *([baselines] if baselines else []),
            *([ranking] if ranking else []),
            *([summed] if summed else []),
            *([blended] if blended else []),
        ]
    )
    release_worker_caches(workdir)
    ensemble = summed.result() if summed is not None else None
    blend = blended.result() if blended is not None else None
    return {
        "models": [*(f.result() for f in futures), *([blend] if blend else [])],
        "baselines": baselines.result() if baselines else [],
        "word2vec": embed.result() if embed is not None else embedded,
        "retrieval": [*(f.result() for f in ranked), *([ensemble] if ensemble else [])],
        "ranking_baselines": ranking.result() if ranking else [],
    }


def _search_first(
    params: TrainingParams,
    workdir: str,
    run_id: str,
    store_uri: str,
    run: dict[str, Any],
    models: list[str],
    threads: int,
    clock: StageClock,
) -> dict[str, Any]:
    """Learnt settings by default: search the models that have no usable tuning record (none, or one of
    data of another size) within params.search_budget, each search stored as tuning/<model>.json like
    `musicrec tune`'s, so the final fits and later runs start from it. Word2Vec is trained first (trials
    read the vectors; the parallel stage then reuses them). Returns what was searched and why, for the
    report, with the Word2Vec result ({} when nothing was searched)."""
    if params.search_budget <= 0:
        return {}
    reasons = t.plan_search(store_uri, models, run["ratings"])
    if not reasons:
        return {}
    logger = get_run_logger()
    with clock("word2vec"):  # the trials read the item vectors; the parallel stage then reuses them
        embedded = t.embed_text(workdir, params.seed)
    logger.info(
        "searching %s within %.0f s (%d trials a model at most): %s",
        ", ".join(reasons),
        params.search_budget,
        params.search_trials,
        "; ".join(f"{m}: {why}" for m, why in reasons.items()),
    )
    runner, parallel = make_task_runner(
        params.task_runner, params.dask_address, threads, max(1, min(threads, params.search_trials))
    )
    records = search_models(
        workdir,
        list(reasons),
        run_id=run_id,
        run=run,
        store_uri=store_uri,
        trials=params.search_trials,
        budget_total=params.search_budget,
        budget_per_model=params.search_budget / len(reasons),
        seed=params.seed,
        runner=runner,
        parallel=parallel,
        threads=threads,
        clock=clock,
        mark_unreached=True,
    )
    keep = ("metric", "best_value", "default_value", "trials", "pruned", "seconds", "stopped_by", "note")
    return {
        "budget_seconds": params.search_budget,
        "trials_per_model": params.search_trials,
        "models": {
            r["model"]: {"reason": reasons[r["model"]], **{k: r.get(k) for k in keep}}
            for r in records
            if r["trials"]
        },
        "not_searched": {r["model"]: r["skipped"] for r in records if not r["trials"]},
        "word2vec": embedded,
    }


RUN_NAME_PREFIX = "training-"


def _run_name() -> str:
    """The Prefect flow run is named after the musicrec run id it creates (the flow reads it back)."""
    return run_name(RUN_NAME_PREFIX)


@flow(name="training", flow_run_name=_run_name)
def training(params: TrainingParams) -> dict[str, Any]:
    """Train all models on fresh data and publish the
    champion if it is at least as good as the current one."""
    workdir, run_id, store_uri, threads = begin_run(params, RUN_NAME_PREFIX)
    try:
        with held_workspace(workdir):
            return _training(params, workdir, run_id, store_uri, threads)
    finally:
        drop_cache(workdir)  # this machine's copy of a remote workspace (workers drop theirs in train_models)


def _training(
    params: TrainingParams, workdir: str, run_id: str, store_uri: str, threads: int
) -> dict[str, Any]:
    logger = get_run_logger()
    clock = StageClock()
    run, prep = load_and_prepare(params, workdir, clock, embed=False)
    skipped = rating_models_skipped(run, params)
    models = [] if skipped else list(params.models)
    if skipped:
        logger.info("%s", skipped)
    n_tasks = len(models) + len(params.retrieval_models) + 1  # + Word2Vec
    runner, parallel = make_task_runner(
        params.task_runner, params.dask_address, threads, n_tasks, params.parallel_tasks
    )
    overrides = {
        m: {"seed": params.seed, **params.overrides.get(m, {})} for m in (*models, *params.retrieval_models)
    }
    tuning: dict[str, Any] = {}
    tuning_notes: list[str] = []
    search: dict[str, Any] = {}
    tuned = [*models, *params.retrieval_models]
    if params.use_tuning and tuned:
        search = _search_first(
            params, workdir, run_id, store_uri, {**run, "split": prep["split"]}, tuned, threads, clock
        )
        overrides, tuning, tuning_notes = t.load_tuning(store_uri, tuned, overrides, run["fingerprint"])
    with clock("train-models"), fair_threads(params.task_runner):
        trained = train_models.with_options(task_runner=runner)(
            workdir,
            models,
            overrides,
            max(1, threads // parallel),
            list(params.retrieval_models),
            params.seed,
            threads,
            search.pop("word2vec", None),
        )
    rows, baselines = trained["models"], trained["baselines"]
    prep["word2vec"] = trained["word2vec"]
    bias = next((b for b in baselines if b["name"] == "bias"), None)
    champion = registry.choose_champion(rows, "rating", bias["val_rmse"]) if bias else None
    retrieval = summarize_retrieval(trained["retrieval"], trained["ranking_baselines"])
    if retrieval["models"] and not run.get("has_times", True):
        retrieval["held_out"] = (
            "leave-one-out of a seeded random interaction per user (the input has no times)"
        )
    retrieval_row = next((r for r in retrieval["models"] if r["name"] == retrieval["champion"]), None)
    report: dict[str, Any] = {
        "run_id": run_id,
        "data": {k: run[k] for k in ("ratings", "users", "items", "fingerprint", "inputs")},
        "read": run["read"],
        "split": prep["split"],
        "word2vec": prep["word2vec"],
        "models": rows,
        "baselines": baselines,
        "champion": {"name": champion},
        "retrieval": retrieval,
        "promoted": False,
        "previous_test_rmse": None,
        "task_runner": params.task_runner,
        "tuning": tuning,
        "sample_card": run.get("sample_card"),
        "stage_seconds": clock.seconds,
        "tuning_notes": tuning_notes,
        "search": search,
        "feedback": run.get("feedback"),
        **({"skipped": {"rating_models": skipped}} if skipped else {}),
    }
    if skipped:
        publish_retrieval_only(
            params, workdir, store_uri, threads, {**run, "split": prep["split"]}, retrieval_row, report, clock
        )
    elif champion is None:
        logger.warning("no model beat the bias baseline on validation: nothing is published")
        report["promotion"] = not_promoted("no model beat the bias baseline on validation")
        report["learning_curves_uri"] = reporting.publish_run_files(workdir, store_uri, report)
    else:
        assert bias is not None  # a rating champion beat it
        row = next(r for r in rows if r["name"] == champion)
        refit_info = None
        # the retrieval champion's refit runs beside the rating champion's refit and export (on every thread:
        # its step's threads share the cores with them, and have them to itself once they are done), and its
        # own export waits for it
        pending = (
            t.refit_champion.submit(workdir, retrieval_row, threads)
            if params.refit and retrieval_row is not None
            else None
        )
        # its export waits for that refit and runs beside the rating champion's refit and export
        exported = (
            t.export_retrieval.submit(workdir, retrieval_row, pending) if retrieval_row is not None else None
        )
        if params.refit:
            with clock("refit-champion"):
                refit_info = t.refit_champion(workdir, row, threads)
            report["refit"] = refit_info
        with clock("build-bundle"):
            meta = t.build_bundle(workdir, row, {**run, "split": prep["split"]}, refit_info)
            if exported is not None:
                retrieval_refit = pending.result() if pending is not None else None
                if refit_info is not None and retrieval_refit is not None:
                    refit_info["retrieval"] = retrieval_refit
                meta = t.bundle_retrieval(workdir, meta, exported.result())
        with clock("publish-and-promote"):
            published = t.publish_bundle(workdir, store_uri, meta["version"])
            report["champion"] = {
                "name": champion,
                "version": published["version"],
                "uri": published["uri"],
                "onnx_check": meta["onnx_check"],
            }
            # the pointer is the run's last write: its splits and report.json are in the store before it moves
            report["learning_curves_uri"] = reporting.publish_run_files(workdir, store_uri, report)
            if params.promote:
                decision = t.promote_champion(
                    workdir, store_uri, published, row["val_rmse"] < bias["val_rmse"], retrieval_row, report
                )
            else:
                decision = not_promoted(PROMOTION_OFF)
        report = with_decision(report, decision)
    logger.info(format_stages(clock.seconds))
    out = reporting.publish_report(workdir, store_uri, report)
    if out["promoted"]:
        announce_champion(store_uri, out)
    return out


def rating_models_skipped(run: dict[str, Any], params: TrainingParams) -> str:
    """The one line that says why an implicit-feedback run trains no rating model ("" for ratings); a run
    whose retrieval models are none has nothing to train then: an error naming the flag."""
    fb = run.get("feedback") or {}
    if fb.get("kind") != "implicit":
        return ""
    if not params.retrieval_models:
        raise DataError(
            ", ".join(params.reviews),
            f"implicit feedback ({fb.get('reason')}) trains the retrieval "
            "models only, and retrieval_models (--retrieval-models) is empty",
            hint="name retrieval models to train, or --feedback explicit with --rating-range MIN,MAX "
            "if the values are ratings",
        )
    return (
        f"rating models skipped: implicit feedback ({fb.get('reason')}); play counts are not ratings, so "
        "only the retrieval models train (confidence weight 1 + "
        f"{fb.get('alpha', 1.0):g} * log(1 + count))"
    )


def publish_retrieval_only(
    params: TrainingParams,
    workdir: str,
    store_uri: str,
    threads: int,
    run: dict[str, Any],
    retrieval_row: dict[str, Any] | None,
    report: dict[str, Any],
    clock: StageClock,
) -> None:
    """An implicit run's bundle: the retrieval champion alone (refit on every interaction), scored as
    relevance; promotion compares retrieval champions. Fills report's champion, refit and promotion."""
    if retrieval_row is None:
        reason = "no retrieval model beat most-popular on validation NDCG@10: nothing is published"
        get_run_logger().warning(reason)
        report["promotion"] = not_promoted(reason)
        report["learning_curves_uri"] = reporting.publish_run_files(workdir, store_uri, report)
        return
    refit_info = None
    if params.refit:
        with clock("refit-champion"):
            refit_info = t.refit_champion(workdir, retrieval_row, threads)
        report["refit"] = refit_info
    with clock("build-bundle"):
        meta = t.build_retrieval_bundle(workdir, retrieval_row, run, refit_info)
    with clock("publish-and-promote"):
        published = t.publish_bundle(workdir, store_uri, meta["version"])
        report["champion"] = {
            "name": retrieval_row["name"],
            "kind": "retrieval",
            "version": published["version"],
            "uri": published["uri"],
            "onnx_check": meta["onnx_check"],
        }
        # the pointer is the run's last write: its splits and report.json are in the store before it moves
        report["learning_curves_uri"] = reporting.publish_run_files(workdir, store_uri, report)
        if params.promote:
            decision = t.promote_champion(workdir, store_uri, published, True, retrieval_row, report)
        else:
            decision = not_promoted(PROMOTION_OFF)
    report.update(with_decision(report, decision))


def announce_champion(store_uri: str, report: dict[str, Any]) -> None:
    """Emit CHAMPION_EVENT so that deployments can react to a new champion (nightly scoring does)."""
    from musicrec.store import open_store

    store = open_store(store_uri).uri
    emit_event(
        event=CHAMPION_EVENT,
        resource={
            "prefect.resource.id": f"musicrec.champion.{store}",
            "prefect.resource.name": "musicrec champion",
        },
        payload={
            "version": report["champion"]["version"],
            "model": report["champion"]["name"],
            "store_uri": store,
            "run_id": report["run_id"],
        },
    )
