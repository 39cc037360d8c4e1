"""Tuning: search spaces, one trial (pruned by the study), a seeded search whose best is never worse than the
default, the stored record, and the tuning flow feeding the training flow under a real Prefect server."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from musicrec.pipeline import ingest, prepare
from musicrec.pipeline.workspace import Workspace
from musicrec.registry import MODELS, parse_config, search_space
from musicrec.store import FileStore, layout, open_store
from musicrec.tuning import records as rec
from musicrec.tuning.search import TrialSpec, default_params, open_study, run_search, suggest
from musicrec.tuning.trial import run_trial


@pytest.fixture(scope="module")
def prepared(tiny, tmp_path_factory):
    """The tiny low-rank fixture through ingest and prepare, as a tuning run sees it."""
    ratings, _ = tiny
    root = tmp_path_factory.mktemp("tuning")
    amazon = ratings.rename(
        columns={
            "user_id": "reviewerID",
            "item_id": "asin",
            "rating": "overall",
            "timestamp": "unixReviewTime",
            "review_text": "reviewText",
        }
    )
    amazon.drop(columns="reviewer_name").to_json(root / "reviews.json", orient="records", lines=True)
    ws = Workspace.create(root / "work", "tune")
    run = ingest.ingest(ws, [str(root / "reviews.json")])
    prep = prepare.prepare(ws, 0)
    return ws, {**run, "split": prep["split"]}, root


@pytest.mark.parametrize("model", list(MODELS))
def test_every_suggestion_is_a_valid_config_of_its_family(model):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        params = suggest(study.ask(), search_space(model))
        cfg = parse_config(model, params)  # raises on a key the family lacks or a value out of range
        assert set(params) == set(search_space(model))
        assert {k: getattr(cfg, k) for k in params} == params
    assert parse_config(
        model, {k: json.loads(v) if isinstance(v, str) else v for k, v in default_params(model).items()}
    ) == parse_config(model)


def test_a_trial_far_behind_earlier_trials_is_pruned(prepared, tmp_path):
    ws, _, _ = prepared
    journal = tmp_path / "gmf.journal"
    study = open_study(journal, "gmf", seed=0, trials=9)
    for _ in range(3):  # three finished trials that were (impossibly) perfect at every epoch
        study.add_trial(
            optuna.trial.create_trial(
                params={}, distributions={}, value=0.01, intermediate_values={e: 0.01 for e in range(1, 31)}
            )
        )
    trial = study.ask()
    spec = TrialSpec("gmf", trial.number, trial._trial_id, {}, str(journal), deadline=1e18)
    out = run_trial(ws, spec)
    assert out["state"] == "pruned"
    assert out["epochs"] == 2  # n_warmup_steps=2: epochs 1 is never judged, epoch 2 is the first check


def test_seeded_search_is_reproducible_and_never_worse_than_the_default(prepared, tmp_path):
    ws, run, _ = prepared

    def search(folder: Path) -> list[dict]:
        return run_search(
            folder / "gmf.journal",
            "gmf",
            trials=5,
            parallel=2,
            budget_seconds=600,
            seed=3,
            run_batch=lambda specs: [run_trial(ws, s, seed=3) for s in specs],
        )

    first, second = search(tmp_path / "a"), search(tmp_path / "b")
    assert [o["params"] for o in first] == [o["params"] for o in second]
    assert [o["value"] for o in first] == pytest.approx([o["value"] for o in second])
    assert first[0]["params"] == default_params("gmf")  # trial 0 measures the default on the same split
    record = rec.build_record(
        "gmf", first, run_id="r1", run=run, seed=3, seconds=1.0, budget_seconds=600, trials_asked=5
    )
    assert record["best_value"] <= record["default_value"]
    assert record["default_value"] == first[0]["value"]
    assert record["trials"] == 5 and record["stopped_by"] == "trials"
    assert record["data"]["fingerprint"] == run["fingerprint"]
    assert set(record["search_space"]) == set(search_space("gmf"))


def test_a_search_keeps_the_defaults_unless_its_best_beats_them_by_the_minimum_gain():
    defaults = default_params("gmf")
    wider = {**defaults, "factors": 160, "batch_size": 1024}

    def outcome(number: int, params: dict, value: float) -> dict:
        return {
            "number": number,
            "model": "gmf",
            "state": "complete",
            "params": params,
            "value": value,
            "best_epoch": 2,
        }

    def record(value: float) -> dict:
        trials = [outcome(0, defaults, 0.8000), outcome(1, wider, value)]
        return rec.build_record(
            "gmf", trials, run_id="r", run={}, seed=0, seconds=1.0, budget_seconds=9, trials_asked=2
        )

    near = record(0.8000 * (1 - rec.MIN_GAIN / 3))  # better, but within noise
    assert near["best_params"] == defaults and near["best_trial"] == 0 and near["best_value"] == 0.8
    assert "trial 1" in near["note"] and "defaults are kept" in near["note"]
    clear = record(0.8000 * (1 - 3 * rec.MIN_GAIN))
    assert clear["best_params"] == wider and clear["best_trial"] == 1 and "note" not in clear


def test_a_search_out_of_budget_stops_asking(prepared, tmp_path):
    ws, _, _ = prepared
    out = run_search(
        tmp_path / "gmf.journal",
        "gmf",
        trials=50,
        parallel=1,
        budget_seconds=0.5,
        seed=0,
        run_batch=lambda specs: [run_trial(ws, s) for s in specs],
    )
    assert 1 <= len(out) < 50


def _record(model: str, best: float, fingerprint: str = "fp") -> dict:
    return {
        "model": model,
        "run_id": "r",
        "best_params": {"factors": 8, "lr": 0.1},
        "best_value": best,
        "default_value": 1.0,
        "bigger_is_better": False,
        "data": {"fingerprint": fingerprint},
        "history": [],
    }


def test_training_takes_tuned_params_under_the_users_overrides(tmp_path):
    store = FileStore(tmp_path)
    rec.write_record(store, _record("gmf", 0.9, fingerprint="old"))
    store.put_bytes(layout.tuning_record("nnmf"), b"{not json")
    store.put_bytes(
        layout.tuning_record("mlp"),
        json.dumps({**_record("mlp", 0.9), "best_params": {"factors": 8}}).encode(),
    )
    found, notes = rec.read_records(store, ["gmf", "nnmf", "mlp", "w2v_mlp"])
    assert list(found) == ["gmf"]
    assert any("nnmf" in n and "unreadable" in n for n in notes) and any("mlp" in n for n in notes)
    merged, info = rec.apply_records(found, {"gmf": {"seed": 1, "lr": 0.5}, "mlp": {"seed": 1}}, "new")
    assert merged == {"gmf": {"factors": 8, "lr": 0.5, "seed": 1}, "mlp": {"seed": 1}}
    assert info["gmf"]["params"] == {"factors": 8} and info["gmf"]["overridden"] == ["lr"]
    assert info["gmf"]["fingerprint_differs"] is True


def test_a_store_failing_mid_write_leaves_the_previous_record(tmp_path, monkeypatch):
    import musicrec.store.local as store_module

    store = FileStore(tmp_path)
    rec.write_record(store, _record("gmf", 0.9))
    real = store_module.atomic_write

    def dies_half_way(dest, write):  # the new file gets half its bytes, then the disk goes away
        def half(fh):
            write(_Half(fh))
            raise OSError("No space left on device")

        real(dest, half)

    monkeypatch.setattr(store_module, "atomic_write", dies_half_way)
    with pytest.raises(Exception, match="No space left"):
        rec.write_record(store, _record("gmf", 0.1))
    monkeypatch.undo()
    assert json.loads(store.get_bytes("tuning/gmf.json"))["best_value"] == 0.9
    assert store.list("tuning") == ["tuning/gmf.json"]  # no temporary file left behind


class _Half:
    def __init__(self, fh) -> None:
        self.fh = fh

    def write(self, data: bytes) -> int:
        return self.fh.write(data[: len(data) // 2])


@pytest.mark.slow
@pytest.mark.flow
def test_tuning_flow_writes_records_that_the_next_training_run_starts_from(
    prefect_harness, prepared, tmp_path
):
    from flows.training import TrainingParams, training
    from flows.tuning import TuningParams, tuning

    _, _, root = prepared
    store_uri = (tmp_path / "store").as_uri()
    data = {
        "reviews": [str(root / "reviews.json")],
        "store_uri": store_uri,
        "work_dir": str(tmp_path / "work"),
    }
    out = tuning(TuningParams(**data, models=["gmf", "nnmf"], trials=4, seed=0))
    store = open_store(store_uri)
    for model in ("gmf", "nnmf"):
        record = json.loads(store.get_bytes(f"tuning/{model}.json"))
        assert record["run_id"] == out["run_id"] and record["trials"] == 4
        assert record["best_value"] <= record["default_value"]
    report = training(
        TrainingParams(
            **data, models=["gmf"], overrides={"gmf": {"epochs": 3}}, refit=False, retrieval_models=[]
        )
    )
    used = report["tuning"]["gmf"]
    assert used["run_id"] == out["run_id"] and used["fingerprint_differs"] is False
    gmf = next(m for m in report["models"] if m["name"] == "gmf")
    best = json.loads(store.get_bytes("tuning/gmf.json"))["best_params"]
    assert {k: gmf["hyperparameters"][k] for k in best} == best
    assert gmf["hyperparameters"]["epochs"] == 3  # the user's override still wins


def test_a_damaged_record_is_skipped_with_a_note_and_defaults_used(tmp_path):
    """Issue 30, case 3: valid JSON of the wrong shape ended train in 'list' object is not a mapping."""
    store = FileStore(tmp_path)
    store.put_bytes(
        layout.tuning_record("gmf"), json.dumps({**_record("gmf", 0.9), "best_params": ["x"]}).encode()
    )
    store.put_bytes(layout.tuning_record("nnmf"), b'["x"]')
    store.put_bytes(
        layout.tuning_record("mlp"), json.dumps({**_record("mlp", 0.9), "best_params": "lr=1"}).encode()
    )
    found, notes = rec.read_records(store, ["gmf", "nnmf", "mlp"])
    assert found == {} and len(notes) == 3
    assert all("is damaged" in n and "starts from its defaults" in n for n in notes)
    assert (
        "best_params is a list" in notes[0]
        and "a JSON list" in notes[1]
        and "best_params is a str" in notes[2]
    )
    merged, info = rec.apply_records(found, {"gmf": {"seed": 1}}, "fp")
    assert merged == {"gmf": {"seed": 1}} and info == {}


def test_a_model_is_searched_first_without_a_record_or_when_its_data_changed_size():
    records = {
        "gmf": {**_record("gmf", 0.9), "data": {"ratings": 4000}},
        "nnmf": {**_record("nnmf", 0.9), "data": {"ratings": 20_000}},
    }
    plan = rec.to_search(["gmf", "nnmf", "mlp", "w2v_mlp", "ease"], records, 4500)
    assert "gmf" not in plan  # a record of data of about this size is reused
    assert plan["nnmf"] == "its record was searched on 20,000 rows, this data has 4,500"
    assert plan["mlp"] == "no usable tuning record"
    assert plan["w2v_mlp"] == "no usable tuning record"
    assert "ease" not in plan and not search_space("ease")  # nothing to search: chosen inside its fit
    assert rec.to_search(["nnmf"], records, 10_000) == {}  # within DRIFT of 20,000


def test_a_first_run_searches_then_trains_from_what_it_found_and_the_next_run_reuses_it(
    prefect_harness, prepared, tmp_path
):
    from flows.training import TrainingParams, training

    _, _, root = prepared
    store_uri = (tmp_path / "store").as_uri()
    params = TrainingParams(
        reviews=[str(root / "reviews.json")],
        store_uri=store_uri,
        work_dir=str(tmp_path / "work"),
        models=["gmf"],
        retrieval_models=["implicit_bpr", "ease"],
        refit=False,
        search_budget=60,
        search_trials=3,
    )
    first = training(params)
    searched = first["search"]["models"]
    assert set(searched) == {"gmf", "implicit_bpr"}  # ease chooses its setting inside its own fit
    assert all(s["reason"] == "no usable tuning record" and 1 <= s["trials"] <= 3 for s in searched.values())
    store = open_store(store_uri)
    for model in ("gmf", "implicit_bpr"):
        record = json.loads(store.get_bytes(f"tuning/{model}.json"))
        assert record["run_id"] == first["run_id"]
        assert first["tuning"][model]["run_id"] == first["run_id"]  # the final fit starts from it
        row = next(r for r in [*first["models"], *first["retrieval"]["models"]] if r["name"] == model)
        assert {k: row["hyperparameters"][k] for k in record["best_params"]} == record["best_params"]
    assert any(k.startswith("tune-") for k in first["stage_seconds"])
    second = training(params)
    assert second["search"] == {}  # the records are reused: no search
    assert second["tuning"]["gmf"]["run_id"] == first["run_id"]
    off = training(params.model_copy(update={"use_tuning": False}))
    assert off["search"] == {} and off["tuning"] == {}


def test_a_search_again_starts_from_the_last_records_best_settings(prepared, tmp_path):
    """Trial 0 is the default, trial 1 the previous record's best (a warm start); keys the space no longer
    has are dropped."""
    ws, _, _ = prepared
    last = {**default_params("gmf"), "factors": 24, "lr": 0.05, "no_such_key": 1}
    out = run_search(
        tmp_path / "gmf.journal",
        "gmf",
        trials=3,
        parallel=1,
        budget_seconds=600,
        seed=0,
        run_batch=lambda specs: [run_trial(ws, s) for s in specs],
        warm_start=last,
    )
    assert out[0]["params"] == default_params("gmf")
    assert out[1]["params"] == {k: v for k, v in last.items() if k != "no_such_key"}
    assert out[1]["state"] == "complete"


def test_a_model_that_does_not_apply_ends_its_search_and_is_not_searched_again(prepared, tmp_path):
    """knn_baseline skipped on this data (its table over the cap): one trial, not the 5 asked; the record
    says why, and the next run's plan leaves it out until the data's size drifts."""
    ws, run, _ = prepared

    def capped(specs: list[TrialSpec]) -> list[dict]:
        return [
            run_trial(ws, TrialSpec(**{**s.as_dict(), "params": {**s.params, "max_table_cells": 1}}))
            for s in specs
        ]

    out = run_search(
        tmp_path / "knn.journal",
        "knn_baseline",
        trials=5,
        parallel=1,
        budget_seconds=600,
        seed=0,
        run_batch=capped,
    )
    assert len(out) == 1 and out[0]["state"] == "failed" and "max_table_cells" in out[0]["skipped"]
    record = rec.build_record(
        "knn_baseline", out, run_id="r1", run=run, seed=0, seconds=1.0, budget_seconds=600, trials_asked=5
    )
    assert record["best_params"] is None and "max_table_cells" in record["skipped"]
    store = FileStore(tmp_path / "store")
    rec.write_record(store, record)
    found, notes = rec.read_records(store, ["knn_baseline"])
    assert found == {} and "max_table_cells" in notes[0]  # never a fit's starting point
    kept, _ = rec.read_records(store, ["knn_baseline"], keep_skipped=True)
    assert rec.to_search(["knn_baseline"], kept, run["ratings"]) == {}
    assert "knn_baseline" in rec.to_search(["knn_baseline"], kept, run["ratings"] * 3)  # drifted: again


def test_a_model_the_first_budget_does_not_reach_is_not_searched_every_night(
    prefect_harness, prepared, tmp_path
):
    """A budget spent on gmf leaves nnmf unsearched: the report says so, nnmf trains from its defaults,
    and its record of no trial keeps the next run (the nightly) from searching it again."""
    from flows.training import TrainingParams, training

    _, _, root = prepared
    params = TrainingParams(
        reviews=[str(root / "reviews.json")],
        store_uri=(tmp_path / "store").as_uri(),
        work_dir=str(tmp_path / "work"),
        models=["gmf", "nnmf"],
        retrieval_models=[],
        refit=False,
        search_budget=0.5,
        search_trials=2,
    )
    first = training(params)
    assert set(first["search"]["models"]) == {"gmf"}
    assert first["search"]["not_searched"] == {"nnmf": rec.UNREACHED}
    assert "nnmf" not in first["tuning"] and any(
        n.startswith("nnmf not searched") for n in first["tuning_notes"]
    )
    record = json.loads(open_store(params.store_uri).get_bytes("tuning/nnmf.json"))
    assert record["trials"] == 0 and record["best_params"] is None and record["skipped"] == rec.UNREACHED
    second = training(params)
    assert second["search"] == {}  # nothing searched again: gmf has its record, nnmf its note
    assert {"gmf", "nnmf"} <= {m["name"] for m in second["models"]}


def test_a_search_starts_only_when_the_budget_left_covers_a_typical_search_so_far():
    from musicrec.tuning.search import model_budget

    assert model_budget(10.0, 90.0, []) == 10.0  # the first model: its share
    assert model_budget(10.0, 4.0, []) == 4.0  # capped by what is left
    assert model_budget(10.0, 0.0, []) == 0.0 and model_budget(10.0, -3.0, []) == 0.0
    # searches so far took 12-23 s (each past its share: trials finish their epoch): 11 s left does not cover
    # the median (14 s), so the next one is not started; 15 s does
    assert model_budget(7.0, 11.0, [12.0, 23.0, 14.0]) == 0.0
    assert model_budget(7.0, 15.0, [12.0, 23.0, 14.0]) == 7.0
