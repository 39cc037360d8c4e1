"""The rating blend of a run, after its rating models are trained (musicrec.pipeline.train): a leaderboard
candidate like any model, chosen by musicrec.registry.choose_champion. Its weights are fitted on the members'
validation predictions (musicrec.rating.blend); its members and weights are JSON (models/rating_ensemble/
blend.json), the bias baseline's values an .npz under models/bias/ like any model's weights."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from torch import nn

from musicrec.pipeline.prepare import load_train_data
from musicrec.pipeline.train import load_model, save_model
from musicrec.pipeline.workspace import Workspace, model_file
from musicrec.rating.baselines import fit_bias_baseline
from musicrec.rating.blend import BLEND_FILE, ENSEMBLE, RatingBlend, fit_ridge_blend
from musicrec.rating.build import model_class
from musicrec.rating.data import TrainData
from musicrec.rating.evaluate import evaluate
from musicrec.rating.train import predict

BAR = "bias"  # the baseline every candidate must beat; it is a candidate member too


def blend_candidates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a blend may use: trained rating models (some epoch beat their start), no skipped or blend."""
    return [
        r for r in rows if not r.get("skipped") and not r.get("members") and (r.get("best_epoch") or 0) >= 1
    ]


def ensemble_rating(
    ws: Workspace, rows: list[dict[str, Any]], data: TrainData | None = None
) -> dict[str, Any] | None:
    """The blend of the trained rating models and the bias baseline, fitted on validation (members, penalty
    and weights by cross-validation on the validation rows), as a leaderboard row: val_rmse out of fold, the
    other columns (test included) from the final weights. None without a trained model to blend. A blend of
    one member (where the models predict alike, as on sparse data) is that model recalibrated on validation
    (intercept and slope): still a candidate, its out-of-fold RMSE says whether that helps."""
    candidates = blend_candidates(rows)
    if not candidates:
        return None
    t0 = time.perf_counter()
    text = any(model_class(r["name"]).uses_text for r in candidates)
    data = data or load_train_data(ws, text=text)
    models: dict[str, nn.Module] = {r["name"]: load_model(ws, r["name"], data) for r in candidates}
    models[BAR] = fit_bias_baseline(data)
    val = data.parts["validation"]
    x = np.column_stack([predict(m, val) for m in models.values()])
    seed = int((candidates[0].get("hyperparameters") or {}).get("seed", 0))
    fit = fit_ridge_blend(x, val.rating.numpy(), list(models), data.rating_range, seed=seed)
    if not fit.weights:
        return None
    blend = RatingBlend({n: models[n] for n in fit.weights}, fit.weights, fit.intercept, data.rating_range)
    metrics = evaluate(blend, data)
    by_name = {r["name"]: r for r in candidates}
    row = {
        "name": ENSEMBLE,
        **metrics,
        "val_rmse": fit.oof_rmse,  # out of fold: comparable with the single models' validation RMSE
        "val_mae": fit.oof_mae,
        "val_rmse_in_sample": metrics["val_rmse"],
        "members": [
            {
                "name": n,
                "weight": w,
                **{k: by_name.get(n, {}).get(k) for k in ("hyperparameters", "best_epoch")},
            }
            for n, w in fit.weights.items()
        ],
        "blend": fit.to_json(),
        "hyperparameters": {"alpha": fit.alpha, "intercept": fit.intercept, "folds": len(fit.folds)},
        "fit_seconds": round(time.perf_counter() - t0, 2),  # the blend's own; its members' are in their rows
    }
    if BAR in fit.weights:
        save_model(ws, BAR, models[BAR], models[BAR].cfg)
    ws.write_json(model_file(ENSEMBLE, BLEND_FILE), fit.to_json())
    ws.write_json(model_file(ENSEMBLE, "history.json"), [])
    ws.write_json(model_file(ENSEMBLE, "metrics.json"), row)
    return row


def model_folders(row: dict[str, Any]) -> list[str]:
    """The workspace model folders a rating champion's bundle reads (a blend's members too)."""
    return [row["name"], *(m["name"] for m in row.get("members") or [])]
