"""`python deployments/serve.py`: serve musicrec's deployments from one process (no work pool, no worker).

    training/nightly          cron MUSICREC_TRAINING_CRON (default "0 2 * * *")
    tuning/weekly             cron MUSICREC_TUNING_CRON (default "0 1 * * 0", Sundays 01:00): an Optuna
                              search per model (MUSICREC_TUNING_TRIALS trials each) whose
                              tuning/<model>.json nightly training uses
    batch-scoring/nightly     event trigger: runs whenever a training run emits musicrec.champion.promoted
    batch-scoring/on-demand   no schedule: run it from the UI (or `prefect deployment run`)

Both crons are in MUSICREC_TIMEZONE (default UTC).

Default parameters (shown pre-filled in the UI forms) come from the environment when this script starts, and
every field of each form is filled (full_form): a field whose default comes from a factory has no default in
the JSON schema the UI renders, so without a value there the form would show e.g. "Models: 0 selected".
MUSICREC_REVIEWS / MUSICREC_META (comma-separated files; default: the `make run` sample under .musicrec/demo),
MUSICREC_STORE_URI (default file://<repo>/.musicrec/store), MUSICREC_WORK_DIR (default <repo>/.musicrec/work),
MUSICREC_TASK_RUNNER (threads | processes | dask) and MUSICREC_DASK_ADDRESS (empty = a local Dask cluster).
Point PREFECT_API_URL at a running server first (`make server`); see docs/deployments.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: flows/ and tasks/ live at the repo root
    sys.path.insert(0, str(REPO))

from pydantic import BaseModel

from flows.scoring import ScoringParams, batch_scoring
from flows.training import CHAMPION_EVENT, TrainingParams, training
from flows.tuning import TuningParams, tuning
from musicrec import registry
from musicrec.settings import get_settings

DEMO_DATA = REPO / ".musicrec" / "demo" / "data"
NIGHTLY_CRON = "0 2 * * *"


def _files(raw: str, default: Path) -> list[str]:
    if not raw:
        return [str(default)]
    return [str(Path(p.strip()).expanduser().resolve()) for p in raw.split(",") if p.strip()]


def _store_uri() -> str:
    uri = get_settings().store_uri
    if "://" in uri:
        return uri
    return Path(uri or REPO / ".musicrec" / "store").expanduser().resolve().as_uri()


def _work_dir() -> str:
    path = Path(get_settings().work_dir).expanduser()  # relative = under the repository, like the default
    return str((path if path.is_absolute() else REPO / path).resolve())


def training_defaults() -> dict[str, Any]:
    """The nightly training run's parameters: every model, data and store from the environment."""
    env = get_settings()
    return {
        "reviews": _files(env.reviews, DEMO_DATA / "reviews.json.gz"),
        "meta": _files(env.meta, DEMO_DATA / "meta.json.gz"),
        "store_uri": _store_uri(),
        "work_dir": _work_dir(),
        "task_runner": env.task_runner,
        "dask_address": env.dask_address,
    }


def tuning_defaults() -> dict[str, Any]:
    """The weekly search: the nightly run's data, store, runner; MUSICREC_TUNING_TRIALS trials per model, for
    every rating model and every retrieval model with something to search (closed-form kinds choose inside
    their fit)."""
    searchable = [m for m in registry.names("retrieval") if registry.search_space(m)]
    return {**training_defaults(), "trials": get_settings().tuning_trials, "retrieval_models": searchable}


def scoring_defaults() -> dict[str, Any]:
    """Top-10 lists for every user the champion knows, written to <store>/scores/<run id>/topn."""
    return {"store_uri": _store_uri(), "all_users": True, "top_n": 10, "work_dir": _work_dir()}


def full_form(params: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """Every field of the flow's parameter model, `values` applied: what the UI form shows pre-filled."""
    return params(**values).model_dump(mode="json")


def champion_trigger() -> DeploymentEventTrigger:
    """Fire once per musicrec.champion.promoted event; score exactly the promoted version in its store.

    Trigger parameters replace the deployment's whole `params` value (Prefect merges top-level keys only),
    so they repeat the defaults and template the two fields that come from the event.
    """
    params = {
        **full_form(ScoringParams, scoring_defaults()),
        "store_uri": "{{ event.payload.store_uri }}",
        "version": "{{ event.payload.version }}",
    }
    return DeploymentEventTrigger(
        name="score-new-champion",
        expect={CHAMPION_EVENT},
        match={"prefect.resource.id": "musicrec.champion.*"},
        parameters={"params": params},
    )


def build_deployments() -> list[RunnerDeployment]:
    """The four deployments; the flows' pydantic parameters give the UI its forms."""
    env = get_settings()
    schedule = Cron(env.training_cron, timezone=env.timezone, slug="nightly")
    weekly = Cron(env.tuning_cron, timezone=env.timezone, slug="weekly")
    return [
        training.to_deployment(
            name="nightly",
            schedule=schedule,
            parameters={"params": full_form(TrainingParams, training_defaults())},
            tags=["musicrec", "nightly"],
            description="Retrain every model on the configured data; promote the champion.",
        ),
        batch_scoring.to_deployment(
            name="nightly",
            triggers=[champion_trigger()],
            parameters={"params": full_form(ScoringParams, scoring_defaults())},
            tags=["musicrec", "nightly"],
            description="Top-N lists for all users, after each newly promoted champion.",
        ),
        batch_scoring.to_deployment(
            name="on-demand",
            parameters={"params": full_form(ScoringParams, scoring_defaults())},
            tags=["musicrec"],
            description="Score pairs or rank users on demand; edit the form before running.",
        ),
        tuning.to_deployment(
            name="weekly",
            schedule=weekly,
            parameters={"params": full_form(TuningParams, tuning_defaults())},
            tags=["musicrec", "weekly"],
            description="Search each model's hyperparameters; nightly training starts from them.",
        ),
    ]


def main() -> None:
    limit = get_settings().serve_limit  # concurrent flow runs in this process
    serve(*build_deployments(), limit=limit)


if __name__ == "__main__":
    main()
