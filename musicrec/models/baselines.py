"""The two references every model must beat: the global mean and user + item biases."""

from __future__ import annotations

import threading

import numpy as np
import torch

from musicrec.dataset import TrainData
from musicrec.models.base import ModelConfig, RatingModel, seeded_construction


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
        return GlobalMean(data.users.size, data.items.size, data.global_mean, ModelConfig())


def fit_bias_baseline(data: TrainData, reg_user: float = 5.0, reg_item: float = 5.0,
                      iterations: int = 10) -> BiasBaseline:
    """mu + b_u + b_i as a model; the biases come from fit_biases."""
    b_u, b_i = fit_biases(data, reg_user, reg_item, iterations)
    with seeded_construction(0):
        model = BiasBaseline(data.users.size, data.items.size, data.global_mean, ModelConfig())
    model.init_biases(b_u, b_i)
    return model


_BIAS_LOCK = threading.Lock()


def fit_biases(data: TrainData, reg_user: float = 5.0, reg_item: float = 5.0,
               iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Alternate b_i = sum(r - mu - b_u) / (n_i + reg) and b_u likewise; vectorised with bincount.

    Every model of a run and the bias baseline start from the same fit: it is computed once per TrainData
    and shared (callers copy before changing it)."""
    key = ("biases", reg_user, reg_item, iterations)
    with _BIAS_LOCK:
        if key not in data.derived:
            data.derived[key] = _fit_biases(data, reg_user, reg_item, iterations)
        return data.derived[key]


def _fit_biases(data: TrainData, reg_user: float, reg_item: float, iterations: int) -> tuple[np.ndarray, np.ndarray]:
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
