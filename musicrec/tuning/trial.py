"""One tuning trial: fit a model with the proposed hyperparameters on the run's prepared data, report each
epoch's best-so-far validation RMSE to the study (the pruner decides from it), never look at test."""

from __future__ import annotations

import time
from typing import Any

import optuna

from musicrec.rating.data import TrainData
from musicrec.pipeline.prepare import load_train_data
from musicrec.pipeline.workspace import Workspace
from musicrec.rating.train import EpochCallback, fit_model
from musicrec.tuning.search import TrialSpec, load_trial


class _Stop(Exception):
    """Raised from the epoch callback: the pruner said stop, or the budget ran out."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def run_trial(ws: Workspace, spec: TrialSpec, threads: int = 1, seed: int = 0,
              data: TrainData | None = None, on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """Train spec.model with spec.params; return the outcome (state complete | pruned | failed, the best
    validation RMSE reached, epochs run, best epoch, seconds). A pruned trial is an outcome, not an error."""
    data = data or load_train_data(ws)
    trial, start = load_trial(spec), time.perf_counter()
    seen: dict[str, Any] = {"best": float("inf"), "epochs": 0, "best_epoch": 0}

    def report(e: dict[str, Any]) -> None:
        seen["epochs"] = e["epoch"]
        if e["val_rmse"] < seen["best"]:
            seen["best"], seen["best_epoch"] = e["val_rmse"], e["epoch"]
        trial.report(seen["best"], e["epoch"])
        if on_epoch:
            on_epoch(e)
        if trial.should_prune():
            raise _Stop("pruned")
        if time.time() > spec.deadline:
            raise _Stop("budget")

    out = {"model": spec.model, "number": spec.number, "params": spec.params, "stopped": None}
    try:
        result = fit_model(spec.model, data, {**spec.params, "seed": seed}, threads=threads, on_epoch=report)
        out.update(state="complete", val_rmse=_val(result), epochs=result.epochs, best_epoch=result.best_epoch)
    except _Stop as stop:
        # the budget's last trial still counts when it had trained at least one epoch: its best is real
        state = "pruned" if stop.why == "pruned" or seen["epochs"] == 0 else "complete"
        out.update(state=state, val_rmse=seen["best"], epochs=seen["epochs"], best_epoch=seen["best_epoch"],
                   stopped=stop.why)
    except (ValueError, RuntimeError, optuna.exceptions.OptunaError) as e:  # e.g. a diverging fit (NaN loss)
        out.update(state="failed", val_rmse=float("nan"), epochs=seen["epochs"], best_epoch=seen["best_epoch"],
                   stopped=f"{type(e).__name__}: {e}")
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def _val(result: Any) -> float:
    """The restored best epoch's validation RMSE (the starting point's when no epoch beat it)."""
    return float(result.history[result.best_epoch]["val_rmse"])
