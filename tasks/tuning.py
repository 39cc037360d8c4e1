"""Tasks of the tuning flow: one trial, and publishing a model's record (store + UI artifacts)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from musicrec.pipeline.workspace import open_workspace
from tasks.reporting import publish_image
from tasks.retries import io_retries


@task(name="run-trial", task_run_name="trial-{spec[model]}-{spec[number]}", cache_policy=NO_CACHE)
def run_trial(workdir: str, spec: dict[str, Any], threads: int, seed: int) -> dict[str, Any]:
    """Fit one trial's hyperparameters (pruned early when the study's median says so)."""
    from musicrec.tuning.search import TrialSpec
    from musicrec.tuning.trial import run_trial as fit_trial

    with open_workspace(workdir) as ws:
        return fit_trial(ws, TrialSpec(**spec), threads=threads, seed=seed)


@task(name="last-best-params", cache_policy=NO_CACHE)
def last_best_params(store_uri: str, models: list[str]) -> dict[str, dict[str, Any]]:
    """Each model's best settings from its usable tuning/<model>.json: a new search's warm start."""
    from musicrec.store import open_store
    from musicrec.tuning.records import read_records

    records, _ = read_records(open_store(store_uri), models)
    return {m: r["best_params"] for m, r in records.items()}


@task(
    name="publish-tuning",
    task_run_name="publish-tuning-{record[model]}",
    **io_retries([2, 5, 10]),
    cache_policy=NO_CACHE,
)
def publish_tuning(store_uri: str, record: dict[str, Any]) -> str:
    """Replace tuning/<model>.json in the store (the previous record stays if this fails) and show the trials
    table and the optimisation history in the UI."""
    from musicrec.store import open_store
    from musicrec.tuning.records import gain, history_png, trial_table, write_record

    uri = write_record(open_store(store_uri), record)
    if not record["trials"]:  # a model the search did not reach: nothing to show
        get_run_logger().info("%s: not searched (%s) -> %s", record["model"], record.get("skipped"), uri)
        return uri
    key = record["model"].replace("_", "-")
    g = gain(record)
    create_table_artifact(
        trial_table(record),
        key=f"tuning-{key}",
        description=f"{record['model']}: {record['trials']} trials ({record['pruned']} pruned); "
        f"best {record['metric']} {record['best_value']}, default {record['default_value']}"
        + (f" ({record['note']})" if record.get("note") else ""),
    )
    publish_image(
        history_png(record),
        f"Tuning {record['model']}",
        key=f"tuning-history-{key}",
        description=f"{record['model']}: {record['metric']} per trial",
        caption=f"Stored as `{uri}`",
    )
    get_run_logger().info(
        "%s: tuned %s %s vs default %s (%s) -> %s",
        record["model"],
        record["metric"],
        _f(record["best_value"]),
        _f(record["default_value"]),
        "-" if g is None else f"{g:+.2f}%",
        uri,
    )
    if record.get("note"):
        get_run_logger().info("%s: %s", record["model"], record["note"])
    return uri


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"
