"""One tuning trial: fit a model with the proposed hyperparameters on the run's prepared data, report each
epoch's best-so-far validation value of its family's metric to the study (the pruner decides from it), never
look at test. Rating models are judged on validation RMSE, retrieval models on validation NDCG@10."""

from __future__ import annotations

import time
from typing import Any

import optuna

from musicrec import registry
from musicrec.fit.loop import EpochCallback
from musicrec.implicit.base import Skipped
from musicrec.pipeline.workspace import Workspace
from musicrec.tuning.search import TrialSpec, load_trial


class _Stop(Exception):
    """Raised from the epoch callback: the pruner said stop, or the budget ran out."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def run_trial(
    ws: Workspace,
    spec: TrialSpec,
    threads: int = 1,
    seed: int = 0,
    data: Any = None,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train spec.model with spec.params; return the outcome (state complete | pruned | failed, the best
    validation value reached, epochs run, best epoch, seconds). A pruned trial is an outcome, not an error."""
    family = registry.family_of(spec.model)
    judge = registry.FAMILIES[family]
    key, bigger = judge.epoch_metric, judge.bigger_is_better
    trial, start = load_trial(spec), time.perf_counter()
    seen: dict[str, Any] = {"best": -float("inf") if bigger else float("inf"), "epochs": 0, "best_epoch": 0}

    def report(e: dict[str, Any]) -> None:
        seen["epochs"] = e["epoch"]
        if (e[key] > seen["best"]) if bigger else (e[key] < seen["best"]):
            seen["best"], seen["best_epoch"] = e[key], e["epoch"]
        trial.report(seen["best"], e["epoch"])
        if on_epoch:
            on_epoch(e)
        if trial.should_prune():
            raise _Stop("pruned")
        if time.time() > spec.deadline:
            raise _Stop("budget")

    out = {
        "model": spec.model,
        "number": spec.number,
        "params": spec.params,
        "stopped": None,
        "metric": registry.FAMILIES[family].metric,
    }
    try:
        fit = _fit_rating if family == "rating" else _fit_retrieval
        history, best_epoch = fit(ws, spec.model, {**spec.params, "seed": seed}, threads, report, data)
        out.update(
            state="complete",
            value=float(history[best_epoch][key]),
            epochs=len(history) - 1,
            best_epoch=best_epoch,
        )
    except _Stop as stop:
        # the budget's last trial still counts when it had trained at least one epoch: its best is real
        state = "pruned" if stop.why == "pruned" or seen["epochs"] == 0 else "complete"
        out.update(
            state=state,
            value=seen["best"],
            epochs=seen["epochs"],
            best_epoch=seen["best_epoch"],
            stopped=stop.why,
        )
    # e.g. a diverging fit (NaN loss), or a kind that does not apply to the data (Skipped: its note)
    except (ValueError, RuntimeError, Skipped, optuna.exceptions.OptunaError) as e:
        out.update(
            state="failed",
            value=float("nan"),
            epochs=seen["epochs"],
            best_epoch=seen["best_epoch"],
            stopped=f"{type(e).__name__}: {e}",
            **({"skipped": str(e)} if isinstance(e, Skipped) else {}),
        )
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def _fit_rating(
    ws: Workspace, name: str, params: dict[str, Any], threads: int, report: EpochCallback, data: Any
) -> tuple[list[dict[str, Any]], int]:
    from musicrec.pipeline.prepare import load_train_data
    from musicrec.rating.train import fit_model

    result = fit_model(name, data or load_train_data(ws), params, threads=threads, on_epoch=report)
    return result.history, result.best_epoch


def _fit_retrieval(
    ws: Workspace, name: str, params: dict[str, Any], threads: int, report: EpochCallback, data: Any
) -> tuple[list[dict[str, Any]], int]:
    """The leave-last-out training part, judged on the validation part as `musicrec train` judges it."""
    from musicrec.implicit.train import fit_implicit
    from musicrec.pipeline.retrieval import model_text, ranking_data, validation_users

    ranking = data or ranking_data(ws)
    params = {"val_users": validation_users(ranking.items.size), **params}
    text = model_text(ws, registry.parse_config(name, params))
    result = fit_implicit(
        name,
        ranking.train,
        ranking.users.size,
        ranking.items.size,
        ranking.validation,
        ranking.seen_train,
        params,
        threads=threads,
        on_epoch=report,
        text=text,
        weights=ranking.weights_of(*ranking.train),  # implicit feedback: the confidences train uses
        order=ranking.train_order,
    )
    return result.history, result.best_epoch
