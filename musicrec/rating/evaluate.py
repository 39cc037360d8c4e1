"""A rating model's metrics per split and cold slice (the champion rule is musicrec.registry's)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from musicrec.metrics.rating import mae, rmse
from musicrec.rating.data import TrainData
from musicrec.rating.train import predict


def evaluate(model: nn.Module, data: TrainData) -> dict[str, Any]:
    """RMSE/MAE on train, validation and test, and test RMSE on rows with an unseen user or item."""
    out: dict[str, Any] = {}
    for name, key in (("train", "train"), ("validation", "val"), ("test", "test")):
        part = data.parts[name]
        pred = predict(model, part)
        truth = part.rating.numpy()
        out[f"{key}_rmse"] = rmse(truth, pred)
        out[f"{key}_mae"] = mae(truth, pred)
        if name == "test":
            out.update(_cold_slices(truth, pred, part.unseen_user, part.unseen_item))
    return out


def _cold_slices(
    truth: np.ndarray, pred: np.ndarray, unseen_user: np.ndarray, unseen_item: np.ndarray
) -> dict[str, Any]:
    known = ~unseen_user & ~unseen_item
    slices = {"cold_user": unseen_user, "cold_item": unseen_item, "warm": known}
    out: dict[str, Any] = {}
    for name, mask in slices.items():
        out[f"test_{name}_rmse"] = rmse(truth[mask], pred[mask]) if mask.any() else None
        out[f"test_{name}_rows"] = int(mask.sum())
    return out
