"""End to end on a real `prefect server` process: register the deployments (serve-style, then a process work
pool), trigger training/nightly through the API as the UI does, and check that batch-scoring/nightly followed
the musicrec.champion.promoted event and wrote its output. Teardown stops every process started here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect_server import BIN, REPO, Processes, free_port, server_env, start_server
from prefect_server import wait_until as _wait_until

from musicrec.registry import names as _names
from musicrec.registry import search_space

MODELS = _names("rating")
from musicrec.results import promotion
from musicrec.scoring.output import read_output
from musicrec.store import open_store

TIMEZONE = "Europe/Berlin"  # not the default, so the test sees MUSICREC_TIMEZONE applied
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture
def e2e(tmp_path: Path, small_sample) -> Iterator[dict[str, Any]]:
    """A real Prefect server on a free loopback port, a temporary PREFECT_HOME, and the env for children."""
    sample, _ = small_sample
    logs = tmp_path / "logs"
    logs.mkdir()
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = server_env(tmp_path / "prefect_home", api_url, ui=False)
    env.update(
        {
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "MUSICREC_REVIEWS": str(sample / "reviews.json.gz"),
            "MUSICREC_META": str(sample / "meta.json.gz"),
            "MUSICREC_STORE_URI": (tmp_path / "store").as_uri(),
            "MUSICREC_WORK_DIR": str(tmp_path / "work"),
            "MUSICREC_TIMEZONE": TIMEZONE,
            "PWD": str(REPO),
        }
    )
    procs = Processes(logs)
    try:
        start_server(procs, env)
        yield {"api_url": api_url, "env": env, "procs": procs, "store": tmp_path / "store"}
    finally:
        procs.stop_all()


def _client(api_url: str):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url)


def _deployment(client, name: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def _runs_of(client, deployment_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )


def _state(client, run_id: UUID) -> str:
    return client.read_flow_run(run_id).state.type.value


def _run_chain(e2e: dict[str, Any], then_no_promotion: bool = False) -> None:
    """Trigger training/nightly like the UI's "Run" form, then follow the chain to the scoring output.

    then_no_promotion: afterwards run a training that does not promote (one epoch of plain gmf with the form's
    "promote" unticked: published only) and check that no second scoring run follows it.
    """
    procs = e2e["procs"]
    with _client(e2e["api_url"]) as client:
        names = ("training/nightly", "batch-scoring/nightly", "batch-scoring/on-demand", "tuning/weekly")
        deps = _wait_until(
            "the four deployments",
            lambda: all(_deployment(client, n) for n in names) and [_deployment(client, n) for n in names],
            120,
            procs,
        )
        train_dep, score_dep, on_demand, tune_dep = deps
        _check_registered(train_dep, score_dep, on_demand, e2e)
        _check_tuning_registered(tune_dep, e2e)

        _train(client, train_dep, "gmf_logistic", 2, procs)

        scoring = _wait_until(
            "a batch-scoring/nightly run", lambda: _runs_of(client, score_dep.id), 90, procs
        )
        assert len(scoring) == 1, [r.name for r in scoring]
        _wait_until("the scoring run", lambda: _state(client, scoring[0].id) in TERMINAL, 180, procs, every=2)
        assert _state(client, scoring[0].id) == "COMPLETED", procs.log_tails()
        scored = client.read_flow_run(scoring[0].id).parameters["params"]
        _check_output(e2e["store"], scored)
        if then_no_promotion:
            _train(client, train_dep, "gmf", 1, procs, promote=False)
            time.sleep(15)  # the trigger fires seconds after the promoting run; give a stray one time to show
            reports = [json.loads(p.read_text()) for p in e2e["store"].glob("runs/*/report.json")]
            assert [promotion(r)["promoted"] for r in reports].count(True) == 1, [
                promotion(r) for r in reports
            ]
            assert len(_runs_of(client, score_dep.id)) == 1


def _train(client, train_dep, model: str, epochs: int, procs: Processes, promote: bool = True) -> None:
    """Run training/nightly with one quick model; the UI posts the whole form (defaults + edits) the same way,
    because a run's parameters replace the deployment's on top-level keys only."""
    params = {
        **train_dep.parameters["params"],
        "models": [model],
        "overrides": {model: {"epochs": epochs}},
        "threads": 2,
        "promote": promote,
        "retrieval_models": [],
    }
    run = client.create_flow_run_from_deployment(train_dep.id, parameters={"params": params})
    _wait_until(
        f"the training run ({model})", lambda: _state(client, run.id) in TERMINAL, 300, procs, every=2
    )
    assert _state(client, run.id) == "COMPLETED", procs.log_tails()


def _check_tuning_registered(tune_dep, e2e: dict[str, Any]) -> None:
    """tuning/weekly: Sundays 01:00 in the configured timezone, the nightly run's data, a filled form."""
    (schedule,) = tune_dep.schedules
    assert schedule.schedule.cron == "0 1 * * 0" and schedule.schedule.timezone == TIMEZONE
    assert tune_dep.parameters["params"]["reviews"] == [e2e["env"]["MUSICREC_REVIEWS"]]
    assert tune_dep.parameters["params"]["trials"] == 30
    assert "TuningParams" in json.dumps(tune_dep.parameter_openapi_schema["definitions"])
    assert _unfilled(tune_dep.parameter_openapi_schema, tune_dep.parameters) == []


def _check_registered(train_dep, score_dep, on_demand, e2e: dict[str, Any]) -> None:
    """Cron + timezone from the environment, typed forms with defaults, the champion trigger's automation."""
    (schedule,) = train_dep.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == TIMEZONE
    assert train_dep.parameters["params"]["reviews"] == [e2e["env"]["MUSICREC_REVIEWS"]]
    assert train_dep.parameters["params"]["store_uri"] == e2e["env"]["MUSICREC_STORE_URI"]
    assert "params" in train_dep.parameter_openapi_schema["properties"]
    assert "TrainingParams" in json.dumps(train_dep.parameter_openapi_schema["definitions"])
    assert train_dep.parameters["params"]["models"] == list(MODELS)  # the form shows all six selected
    assert _unfilled(train_dep.parameter_openapi_schema, train_dep.parameters) == []
    for dep in (score_dep, on_demand):
        assert dep.parameters["params"]["job"] == "all_users" and dep.parameters["params"]["top_n"] == 10
        assert "ScoringParams" in json.dumps(dep.parameter_openapi_schema["definitions"])
        assert _unfilled(dep.parameter_openapi_schema, dep.parameters) == []
        assert not dep.schedules


def _check_output(store_dir: Path, scored: dict[str, Any]) -> None:
    """The scoring run scored the promoted version, and its manifest and Parquet parts are in the store."""
    store_uri = store_dir.as_uri()
    pointer = json.loads(open_store(store_uri).get_bytes("models/champion.json"))
    assert scored["version"] == pointer["version"] and scored["store_uri"] == store_uri
    (manifest,) = store_dir.glob("scores/*/topn/_manifest.json")
    parts = json.loads(manifest.read_text())["parts"]
    assert parts and all((manifest.parent / p).is_file() for p in parts)
    assert all(p.endswith(".parquet") for p in parts)
    recs = read_output(open_store(store_uri), str(manifest.parent.relative_to(store_dir)))
    assert len(recs) > 0 and recs.groupby("user_id").size().max() == 10


@pytest.mark.e2e
@pytest.mark.slow
def test_serve_process_runs_training_then_scoring(e2e):
    """Serve-style: one `python deployments/serve.py` process, no worker."""
    e2e["procs"].start("serve", [sys.executable, "deployments/serve.py"], e2e["env"])
    _run_chain(e2e, then_no_promotion=True)


@pytest.mark.e2e
@pytest.mark.slow
def test_process_work_pool_runs_training_then_scoring(e2e):
    """Team-server style: `prefect deploy --all` from deployments/prefect.yaml and a process worker."""
    env, prefect = e2e["env"], str(BIN / "prefect")
    for cmd in (
        [prefect, "work-pool", "create", "musicrec", "--type", "process"],
        [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
    ):
        done = subprocess.run(
            cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"{' '.join(cmd[1:4])}\n{done.stdout}\n{done.stderr}"
    e2e["procs"].start("worker", [prefect, "worker", "start", "--pool", "musicrec", "--limit", "2"], env)
    _run_chain(e2e)


def _fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The properties of the `params` model in a flow's parameter schema (what the UI renders as the form)."""
    ref = schema["properties"]["params"]["$ref"].rsplit("/", 1)[1]
    return schema["definitions"][ref]["properties"]


def _unfilled(schema: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
    """List and object fields with neither a schema default nor a deployment value: the UI shows them empty
    ("Models: 0 selected") and posts them empty."""
    values = parameters.get("params", {})
    return [
        name
        for name, prop in _fields(schema).items()
        if "default" not in prop
        and name not in values
        and (prop.get("type") in ("array", "object") or "$ref" in prop or "allOf" in prop)
    ]


def test_serve_deployments_fill_every_field_of_their_forms():
    from deployments.serve import build_deployments

    deps = build_deployments()
    for dep in deps:
        assert set(_fields(dep._parameter_openapi_schema.model_dump())) <= set(dep.parameters["params"]), (
            dep.name
        )
    assert deps[0].parameters["params"]["models"] == list(MODELS)
    assert deps[0].parameters["params"]["split"] == {
        "method": "random",
        "train": 0.8,
        "validation": 0.1,
        "test": 0.1,
    }
    assert all(d.parameters["params"]["job"] == "all_users" for d in deps[1:3])
    assert deps[3].name == "weekly" and deps[3].parameters["params"]["trials"] == 30
    (trigger,) = deps[1].triggers
    assert trigger.parameters["params"]["version"] == "{{ event.payload.version }}"
    assert set(_fields(deps[1]._parameter_openapi_schema.model_dump())) <= set(trigger.parameters["params"])


def test_prefect_yaml_fills_every_list_and_object_field_and_names_all_models():
    import yaml
    from prefect.utilities.callables import parameter_schema

    from flows.scoring import batch_scoring
    from flows.training import training
    from flows.tuning import tuning

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    schemas = {
        "flows/training.py:training": parameter_schema(training).model_dump(),
        "flows/scoring.py:batch_scoring": parameter_schema(batch_scoring).model_dump(),
        "flows/tuning.py:tuning": parameter_schema(tuning).model_dump(),
    }
    for dep in spec["deployments"]:
        schema = schemas[dep["entrypoint"]]
        assert _unfilled(schema, dep["parameters"]) == [], dep["name"]
        for trigger in dep.get("triggers", []):
            assert _unfilled(schema, trigger["parameters"]) == [], trigger["name"]
    training_params = spec["deployments"][0]["parameters"]["params"]
    assert training_params["models"] == list(
        MODELS
    )  # the yaml's lists are the registry's (musicrec.registry)
    assert training_params["retrieval_models"] == _names("retrieval")
    weekly = next(d for d in spec["deployments"] if d["name"] == "weekly")["parameters"]["params"]
    assert weekly["retrieval_models"] == [m for m in _names("retrieval") if search_space(m)]
