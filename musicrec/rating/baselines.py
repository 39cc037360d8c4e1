"""The two references every model must beat: the global mean and user + item biases.

The bias baseline's two regularisation weights are chosen on the validation split (a small grid, closed
form each time). How hard biases should be shrunk differs by an order of magnitude between data sets: on
the small generated sample the best user weight is 0.5, on the real Musical Instruments 5-core set 10+.
A fixed 5 made the baseline weak on one and every model "beat" it by learning better biases, not
interactions. Every model starts from this tuned solution and keeps its weights for its bias penalty."""

from __future__ import annotations

import threading

import numpy as np
import torch

from musicrec.metrics.rating import rmse
from musicrec.rating.base import RatingModel, seeded_construction
from musicrec.rating.configs import TrainConfig
from musicrec.rating.data import TrainData

REG_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


class GlobalMean(RatingModel):
    """Predicts the training mean for everyone."""

    name = "global_mean"

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.global_mean.expand(user_idx.shape[0])


class BiasBaseline(RatingModel):
    """mu + b_u + b_i with regularised biases fitted in closed form (alternating least squares)."""

    name = "bias"

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.biases(user_idx, item_idx)


def fit_global_mean(data: TrainData) -> GlobalMean:
    with seeded_construction(0):  # its tables draw from torch's global generator, like any model's
        return GlobalMean(
            data.users.size, data.items.size, data.global_mean, TrainConfig(), rating_range=data.rating_range
        )


def fit_bias_baseline(data: TrainData) -> BiasBaseline:
    """mu + b_u + b_i as a model, with the regularisation chosen on validation (see bias_regs)."""
    b_u, b_i = fit_biases(data)
    with seeded_construction(0):
        model = BiasBaseline(
            data.users.size, data.items.size, data.global_mean, TrainConfig(), rating_range=data.rating_range
        )
    model.bias_regs = bias_regs(data)
    model.init_biases(b_u, b_i)
    return model


_BIAS_LOCK = threading.Lock()


def bias_regs(data: TrainData) -> tuple[float, float]:
    """(user, item) L2 weights of the bias baseline, chosen by coordinate search over REG_GRID on validation
    RMSE (ties: the stronger shrinkage). Computed once per TrainData; with no validation rows, (5, 5)."""
    with _BIAS_LOCK:
        if "bias_regs" not in data.derived:
            data.derived["bias_regs"] = _search_regs(data)
        return data.derived["bias_regs"]


def _search_regs(data: TrainData) -> tuple[float, float]:
    val = data.parts.get("validation")
    if val is None or len(val) == 0:
        return 5.0, 5.0
    u, i, r = val.user_idx.numpy(), val.item_idx.numpy(), val.rating.numpy().astype(np.float64)

    def score(ru: float, ri: float) -> float:
        b_u, b_i = _fit_biases(data, ru, ri)
        return rmse(r, np.clip(data.global_mean + b_u[u] + b_i[i], *data.rating_range))

    regs = [5.0, 5.0]
    for side in (0, 1, 0):
        best = min(
            REG_GRID, key=lambda g: (round(score(*(g, regs[1]) if side == 0 else (regs[0], g)), 6), -g)
        )
        regs[side] = best
    return regs[0], regs[1]


def fit_biases(
    data: TrainData, regs: tuple[float, float] | None = None, iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form biases with the given (or the tuned) regularisation; computed once per TrainData and
    shared (callers copy before changing it)."""
    regs = regs or bias_regs(data)
    key = ("biases", *regs, iterations)
    with _BIAS_LOCK:
        if key not in data.derived:
            data.derived[key] = _fit_biases(data, regs[0], regs[1], iterations)
        return data.derived[key]


def _fit_biases(
    data: TrainData, reg_user: float, reg_item: float, iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Alternate b_i = sum(r - mu - b_u) / (n_i + reg) and b_u likewise; vectorised with bincount."""
    train = data.parts["train"]
    u, i = train.user_idx.numpy(), train.item_idx.numpy()
    resid = train.rating.numpy().astype(np.float64) - data.global_mean
    n_u = np.bincount(u, minlength=data.users.size)
    n_i = np.bincount(i, minlength=data.items.size)
    b_u = np.zeros(data.users.size)
    b_i = np.zeros(data.items.size)
    for _ in range(iterations):
        b_i = np.bincount(i, resid - b_u[u], minlength=data.items.size) / (n_i + reg_item)
        b_u = np.bincount(u, resid - b_i[i], minlength=data.users.size) / (n_u + reg_user)
    return b_u, b_i


BASELINES = {"global_mean": fit_global_mean, "bias": fit_bias_baseline}
