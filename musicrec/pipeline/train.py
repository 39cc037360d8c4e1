"""Stage 3: train one model (or the baselines), evaluate it, keep its weights as .npz (never a pickle)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from musicrec.errors import Skipped
from musicrec.fit.loop import EpochCallback, format_epoch
from musicrec.pipeline.prepare import load_train_data
from musicrec.pipeline.workspace import Workspace, model_file
from musicrec.rating.base import RatingModel
from musicrec.rating.baselines import BASELINES
from musicrec.rating.blend import BLEND_FILE, ENSEMBLE, RatingBlend
from musicrec.rating.build import build_for, model_class, model_config
from musicrec.rating.configs import TrainConfig
from musicrec.rating.data import TrainData
from musicrec.rating.evaluate import evaluate
from musicrec.rating.train import fit_model


def train_one(
    ws: Workspace,
    name: str,
    overrides: dict[str, Any] | None = None,
    threads: int = 1,
    on_epoch: EpochCallback | None = None,
    data: TrainData | None = None,
) -> dict[str, Any]:
    """Fit, evaluate and save one model; return its leaderboard row. A model that uses no text needs no item
    vectors, so it can train while Word2Vec does. A model that does not apply to the data (Skipped) gets a
    row with its note and no metrics: never a champion, shown under the leaderboard."""
    data = data or load_train_data(ws, text=model_class(name).uses_text)
    try:
        result = fit_model(name, data, overrides, threads=threads, on_epoch=on_epoch)
    except Skipped as e:
        row = skipped_row(name, str(e), model_config(name, overrides))
        ws.write_json(model_file(name, "history.json"), [])
        ws.write_json(model_file(name, "metrics.json"), row)
        return row
    row = {
        "name": name,
        **evaluate(result.model, data),
        "fit_seconds": round(result.fit_seconds, 2),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "initial_val_rmse": result.initial_val_rmse,
        "ratings_per_second": round(result.ratings_per_second),
        "hyperparameters": result.config.model_dump(),
    }
    save_model(ws, name, result.model, result.config)
    ws.write_json(model_file(name, "history.json"), result.history)
    ws.write_json(model_file(name, "metrics.json"), row)
    return row


def skipped_row(name: str, note: str, cfg: TrainConfig) -> dict[str, Any]:
    """The leaderboard row of a rating model that does not apply to the run's data: its note, no metrics."""
    return {"name": name, "skipped": note, "hyperparameters": cfg.model_dump()}


def evaluate_baselines(ws: Workspace, data: TrainData | None = None) -> list[dict[str, Any]]:
    """Global mean and bias baseline rows, in the same shape as the models' rows."""
    data = data or load_train_data(ws, text=False)
    return [
        {"name": name, **evaluate(fit(data), data), "fit_seconds": 0.0, "epochs": 0}
        for name, fit in BASELINES.items()
    ]


def save_model(ws: Workspace, name: str, model: RatingModel, cfg: TrainConfig) -> None:
    d = ws.model_dir(name)
    np.savez(d / "weights.npz", **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    (d / "config.json").write_text(cfg.model_dump_json())


def load_model(ws: Workspace, name: str, data: TrainData, directory: str = "") -> nn.Module:
    """Rebuild a trained `name` model from <directory or name>/weights.npz and config.json (no pickle). The
    rating blend from its blend.json, each member from <directory>/<member> (the refit) or its own folder: the
    refit serves the weights fitted on the held-out fit's validation predictions."""
    if name == ENSEMBLE:
        blend = ws.read_json(model_file(ENSEMBLE, BLEND_FILE))
        members = {
            m: load_model(ws, m, data, f"{directory}/{m}" if directory else "") for m in blend["weights"]
        }
        return RatingBlend(members, blend["weights"], blend["intercept"], data.rating_range).eval()
    d = ws.model_dir(directory or name)
    if name in BASELINES:  # a blend's member: the closed form's shape, then the saved values
        model = BASELINES[name](data)
    else:
        model = build_for(name, data, model_config(name, json.loads((d / "config.json").read_text())))
    with np.load(d / "weights.npz", allow_pickle=False) as npz:
        model.load_state_dict({k: torch.from_numpy(npz[k]) for k in npz.files})
    return model.eval()


def progress_printer(emit: Callable[[str], None]) -> EpochCallback:
    """An epoch callback that writes one plain line per epoch."""

    def _on_epoch(e: dict[str, Any]) -> None:
        emit(format_epoch(e))

    return _on_epoch
