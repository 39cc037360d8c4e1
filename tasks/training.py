"""Tasks of the training flow. Each calls one musicrec.pipeline function; nothing here does the work."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from musicrec.errors import ValidationFailed
from musicrec.fit.loop import format_epoch
from musicrec.pipeline import ingest, prepare, publish, refit, train
from musicrec.pipeline.report import format_split
from musicrec.pipeline.workspace import open_workspace
from musicrec.validation import failure_markdown
from tasks.retries import io_retries, retry_transient


@task(name="load-and-validate", cache_policy=NO_CACHE)
def load_and_validate(
    workdir: str,
    reviews: list[str],
    meta: list[str],
    columns: dict[str, str] | None = None,
    rating_range: tuple[float, float] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Read and validate the inputs; a failed validation is published as an artifact and fails the run.
    options: ingest's other keywords (delimiter, ...)."""
    kw: dict[str, Any] = dict(options)
    if columns:
        kw["columns"] = columns
    if rating_range:
        kw["rating_range"] = tuple(rating_range)
    with open_workspace(workdir) as ws:
        try:
            run = ingest.ingest(ws, reviews, meta, **kw)
        except ValidationFailed as e:
            report = ws.read_json("validation.json")
            create_markdown_artifact(
                failure_markdown(report, str(e)),
                key="validation-report",
                description="Data validation failed: nothing was trained",
            )
            raise
    get_run_logger().info(
        "loaded %s ratings, %s users, %s items (%s)",
        f"{run['ratings']:,}",
        f"{run['users']:,}",
        f"{run['items']:,}",
        run["fingerprint"][:19],
    )
    for path, delimiter in run["read"].get("delimiters", {}).items():
        get_run_logger().info("%s: delimiter %s", path, delimiter)
    if run.get("feedback"):
        from musicrec.data.feedback import Feedback

        get_run_logger().info("%s", Feedback(**run["feedback"]).describe())
    return run


@task(name="split", cache_policy=NO_CACHE)
def split_data(workdir: str, seed: int, fractions: tuple[float, float, float], method: str) -> dict[str, Any]:
    """Write the splits (and the list of items with text, which fixes the item index)."""
    with open_workspace(workdir) as ws:
        out = prepare.split(ws, seed, fractions, method)
    get_run_logger().info(format_split(out["split"]))
    return out


@task(name="embed-text", cache_policy=NO_CACHE)
def embed_text(workdir: str, seed: int) -> dict[str, Any]:
    """Train Word2Vec on the training split's text and write the item vectors (w2v_mlp waits for it)."""
    with open_workspace(workdir) as ws:
        out = prepare.embed(ws, seed)
    get_run_logger().info(
        "word2vec: vocabulary %s, %s items with text, %.1f s",
        f"{out['vocabulary']:,}",
        f"{out['items_with_text']:,}",
        out["seconds"],
    )
    if out.get("note"):
        get_run_logger().warning(out["note"])
    return out


@task(name="train-model", task_run_name="train-{name}", cache_policy=NO_CACHE)
def train_model(workdir: str, name: str, overrides: dict[str, Any], threads: int) -> dict[str, Any]:
    """Train one model with its own torch thread budget; progress as log lines and a progress artifact."""
    logger = get_run_logger()
    progress_id = create_progress_artifact(
        0.0, key=f"train-{name.replace('_', '-')}", description=f"{name}: epochs done / max epochs"
    )
    log_line = train.progress_printer(logger.info)

    def on_epoch(e: dict[str, Any]) -> None:
        log_line(e)
        update_progress_artifact(progress_id, 100.0 * e["epoch"] / e["epochs"])

    with open_workspace(workdir) as ws:
        row = train.train_one(ws, name, overrides, threads=threads, on_epoch=on_epoch)
    update_progress_artifact(progress_id, 100.0)
    if row.get("skipped"):
        logger.info("%s: %s", name, row["skipped"])
        return row
    logger.info(
        "%s: val_rmse %.4f test_rmse %.4f in %.1fs",
        name,
        row["val_rmse"],
        row["test_rmse"],
        row["fit_seconds"],
    )
    return row


@task(name="load-tuning", **io_retries([2, 5]), cache_policy=NO_CACHE)
def load_tuning(
    store_uri: str, models: list[str], overrides: dict[str, dict[str, Any]], fingerprint: str
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], list[str]]:
    """Each model's latest tuning/<model>.json under the run's overrides (which win); what came from where;
    notes on records that could not be used (logged, and kept in the report)."""
    from musicrec.store import open_store
    from musicrec.tuning.records import apply_records, read_records

    records, notes = read_records(open_store(store_uri), models)
    merged, info = apply_records(records, overrides, fingerprint)
    logger = get_run_logger()
    for note in notes:
        logger.warning(note)
    for model, used in info.items():
        logger.info(
            "%s starts from tuning run %s: %s",
            model,
            used["run_id"],
            ", ".join(f"{k}={v}" for k, v in used["params"].items()) or "(every tuned value overridden)",
        )
        if used["fingerprint_differs"]:
            logger.warning(
                "%s was tuned on other data than this run's (fingerprint differs): re-run tuning", model
            )
    return merged, info, notes


@task(name="plan-search", **io_retries([2, 5, 10]), cache_policy=NO_CACHE)
def plan_search(store_uri: str, models: list[str], ratings: int) -> dict[str, str]:
    """The models this run searches before its final fits, each with the reason (musicrec.tuning.records.
    to_search): no usable record, or a record of data of another size."""
    from musicrec.store import open_store
    from musicrec.tuning.records import read_records, to_search

    records, _ = read_records(open_store(store_uri), models, keep_skipped=True)
    return to_search(models, records, ratings)


@task(name="train-retrieval", task_run_name="train-{name}", cache_policy=NO_CACHE)
def train_retrieval(
    workdir: str, name: str, overrides: dict[str, Any], threads: int, test_threads: int | None = None
) -> dict[str, Any]:
    """Train one implicit model on the run's leave-last-out split; one log line per epoch (val NDCG@10)."""
    from musicrec.pipeline import retrieval

    logger = get_run_logger()

    def on_epoch(e: dict[str, Any]) -> None:
        logger.info("%s", format_epoch(e))

    with open_workspace(workdir) as ws:
        row = retrieval.train_implicit(
            ws, name, overrides, threads=threads, on_epoch=on_epoch, test_threads=test_threads
        )
    if row.get("skipped"):
        logger.info("%s: %s", name, row["skipped"])
        return row
    logger.info(
        "%s: val_ndcg@10 %.4f test_ndcg@10 %.4f in %.1fs",
        name,
        row["val_ndcg_at_10"],
        row["test_ndcg_at_10"],
        row["fit_seconds"],
    )
    return row


@task(name="ensemble-retrieval", cache_policy=NO_CACHE)
def ensemble_retrieval(
    workdir: str, rows: list[dict[str, Any]], baselines: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The blend of the implicit models that beat most-popular on validation, its weights fitted on validation
    and measured like one of them (None: fewer than two qualify or keep a weight)."""
    from musicrec.pipeline.champion_retrieval import ensemble_implicit

    with open_workspace(workdir, models=[r["name"] for r in rows]) as ws:
        row = ensemble_implicit(ws, rows, baselines)
    _log_blend(row, "ndcg_at_10")
    return row


def _log_blend(row: dict[str, Any] | None, metric: str) -> None:
    """One line for a family's blend: its members with their weights, its validation and test metric."""
    if row is not None:
        get_run_logger().info(
            "%s of %s: val_%s %.4f test_%s %.4f",
            row["name"],
            ", ".join(f"{m['name']} (weight {m['weight']:.2f})" for m in row["members"]),
            metric,
            row[f"val_{metric}"],
            metric,
            row[f"test_{metric}"],
        )


@task(name="ensemble-rating", cache_policy=NO_CACHE)
def ensemble_rating(workdir: str, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ridge blend of the trained rating models and the bias baseline, fitted on validation, as a
    leaderboard row (val_rmse out of fold); None without a trained model to blend."""
    from musicrec.pipeline.champion_rating import ensemble_rating as blend

    with open_workspace(workdir, models=[r["name"] for r in rows]) as ws:
        row = blend(ws, rows)
    _log_blend(row, "rmse")  # its val_rmse is out of fold
    return row


@task(name="ranking-baselines", cache_policy=NO_CACHE)
def ranking_baselines(workdir: str) -> list[dict[str, Any]]:
    """Most-popular and random on the leave-last-out split: the bar every retrieval model must clear."""
    from musicrec.pipeline import retrieval

    with open_workspace(workdir) as ws:
        return retrieval.ranking_baselines(ws)


@task(name="refit-champion", task_run_name="refit-{row[name]}", cache_policy=NO_CACHE)
def refit_champion(workdir: str, row: dict[str, Any], threads: int) -> dict[str, Any]:
    """Refit a champion (rating or retrieval) on every row of the run for its best epoch count: the model
    that is served."""
    with open_workspace(workdir) as ws:
        info = refit.refit(ws, row, threads)
    get_run_logger().info(
        "refit %s on all %s rows for %s epoch(s) in %.1f s",
        row["name"],
        f"{info['rows']:,}",
        info["epochs"],
        info["seconds"],
    )
    return info


@task(name="evaluate-baselines", cache_policy=NO_CACHE)
def evaluate_baselines(workdir: str) -> list[dict[str, Any]]:
    with open_workspace(workdir) as ws:
        return train.evaluate_baselines(ws)


@task(name="build-bundle", cache_policy=NO_CACHE)
def build_bundle(
    workdir: str, row: dict[str, Any], run: dict[str, Any], refit_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Export the champion to ONNX and verify it (checker, one file, dynamic batch, parity with torch)."""
    from musicrec.pipeline.champion_rating import model_folders

    with open_workspace(workdir, models=[*model_folders(row), refit.REFIT_DIR]) as ws:
        return publish.build_rating_bundle(ws, row, prepare.load_train_data(ws), run, refit_info)


@task(name="export-retrieval", cache_policy=NO_CACHE)
def export_retrieval(
    workdir: str, retrieval_row: dict[str, Any], refit_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the retrieval champion's user tower and item table into the bundle folder, checked against
    torch; what bundle_retrieval adds to the bundle's metadata. It runs beside the rating bundle's export."""
    from musicrec.pipeline.champion_retrieval import export_retrieval as export
    from musicrec.pipeline.champion_retrieval import model_folders

    with open_workspace(workdir, models=model_folders(retrieval_row)) as ws:
        return export(ws, retrieval_row, refit_info)


@task(name="bundle-retrieval", cache_policy=NO_CACHE)
def bundle_retrieval(workdir: str, meta: dict[str, Any], retrieval: dict[str, Any]) -> dict[str, Any]:
    """The bundle's metadata over the rating champion's files and the exported retrieval champion's."""
    with open_workspace(workdir) as ws:
        return publish.add_retrieval(ws, meta, retrieval)


@task(name="build-retrieval-bundle", cache_policy=NO_CACHE)
def build_retrieval_bundle(
    workdir: str, retrieval_row: dict[str, Any], run: dict[str, Any], refit_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An implicit run's bundle: the retrieval champion as
    model.onnx (relevance scores) and its user tower."""
    from musicrec.pipeline.champion_retrieval import model_folders
    from musicrec.pipeline.retrieval_bundle import build_retrieval_bundle as build

    with open_workspace(workdir, models=model_folders(retrieval_row)) as ws:
        return build(ws, retrieval_row, run, refit_info)


@task(
    name="publish-bundle",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def publish_bundle(workdir: str, store_uri: str, version: str) -> dict[str, str]:
    """Upload the bundle and verify every file; retried on transient store errors."""
    from musicrec.store import open_store

    with open_workspace(workdir) as ws:
        return publish.publish_bundle(open_store(store_uri), ws, version)


@task(name="promote-champion", **io_retries([5, 5]), cache_policy=NO_CACHE)
def promote_champion(
    workdir: str,
    store_uri: str,
    published: dict[str, str],
    beats_own_baseline: bool,
    retrieval_row: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare with the published champion on this run's test rows it never fitted on; move the pointer only
    if not worse (or, with too few such rows, by the documented policy). With `report`, the run's report.json
    (with the decision) is written just before the pointer moves: the pointer never names a run without it."""
    import pandas as pd

    from musicrec.pipeline import report as rep
    from musicrec.pipeline.champion_retrieval import model_folders, retrieval_check
    from musicrec.store import open_store

    store = open_store(store_uri)
    with open_workspace(workdir, models=model_folders(retrieval_row)) as ws:
        path = ws.root / publish.CHALLENGER_TEST  # none in a retrieval-only run: retrieval champions compared
        challenger = pd.read_parquet(path) if path.exists() else None

        def write_report(decision: dict[str, Any]) -> None:
            if report is not None:
                rep.write_report(store, ws, rep.with_decision(report, decision))

        check = retrieval_check(ws, retrieval_row and retrieval_row["name"])
        decision = publish.promote(
            store,
            published,
            challenger,
            beats_own_baseline,
            retrieval_check=check,
            before_pointer=write_report,
        )
    logger = get_run_logger()
    if decision["replaced_damaged"]:
        logger.warning(
            "the published champion %s is damaged and was replaced: %s",
            decision["incumbent_version"],
            decision["replaced_damaged"],
        )
    logger.info(
        "promotion: %s (%s)", "promoted" if decision["promoted"] else "not promoted", decision["reason"]
    )
    return decision
