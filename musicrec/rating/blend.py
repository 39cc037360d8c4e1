"""A rating blend fitted on validation: intercept + sum_m w_m * prediction_m(u, i), clamped to the range.

The candidates are the run's trained rating models and the bias baseline; their validation predictions are the
features of a ridge regression with a free intercept and non-negative weights (Breiman's stacked regression:
without the sign constraint the members, which predict nearly alike, got weights such as -24.8, +13.5 and
+8.0 on the tiny test data, which would amplify every difference between a held-out member and its refit).
The members and the ridge penalty are chosen by K-fold cross-validation on the validation rows only: forward
selection adds, one at a time, the candidate that lowers the cross-validated RMSE most (each set at its best
ALPHAS value), and stops when no candidate gains more than MIN_GAIN (relative). A member that adds nothing (or
ends with weight 0) is left out, so the refit and the bundle carry only the members that help.

The blend's reported validation RMSE is out of fold (cross-fitted): each of FOLDS outer folds is predicted by
the whole procedure (selection, penalty and weights) run on the other folds, so it is compared honestly with
the single models' validation RMSE. (Each member's own best epoch and settings were chosen on the same
validation rows, which flatters the members as much as the blend.) The final members and weights come from
the procedure on every validation row. The test split is never read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn

ENSEMBLE = "rating_ensemble"  # the blend's leaderboard row and model folder
BLEND_FILE = "blend.json"  # in models/rating_ensemble/: members, weights, intercept (JSON, never a pickle)
ALPHAS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # ridge penalty per validation row: alpha * rows * ||w||^2
FOLDS = 5
MIN_GAIN = 1e-4  # a member joins only if the cross-validated RMSE falls by more than this share


@dataclass
class RidgeBlend:
    """The fitted blend (weights of the kept members only) and how it was chosen."""

    candidates: list[str]
    weights: dict[str, float]
    intercept: float
    alpha: float
    rating_range: tuple[float, float]
    oof_rmse: float  # out of fold: the blend's validation RMSE on the leaderboard
    oof_mae: float
    in_sample_rmse: float  # the final weights on the rows they were fitted on (lower; reported only)
    folds: list[dict[str, Any]] = field(default_factory=list)  # what each outer fold chose

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """The blend of the members' predictions (name -> one value per row), clamped."""
        out = np.full(len(next(iter(columns.values()))), self.intercept)
        for name, w in self.weights.items():
            out = out + w * np.asarray(columns[name], np.float64)
        return np.clip(out, *self.rating_range)

    def to_json(self) -> dict[str, Any]:
        return {
            "members": list(self.weights),
            "weights": self.weights,
            "intercept": self.intercept,
            "alpha": self.alpha,
            "rating_range": list(self.rating_range),
            "candidates": self.candidates,
            "val_rmse_out_of_fold": self.oof_rmse,
            "val_rmse_in_sample": self.in_sample_rmse,
            "folds": self.folds,
        }


def fit_ridge_blend(
    x: np.ndarray,
    y: np.ndarray,
    names: list[str],
    rating_range: tuple[float, float],
    folds: int = FOLDS,
    seed: int = 0,
) -> RidgeBlend:
    """Members, ridge penalty and weights of a blend of the columns of x (validation predictions, one column
    per name) for the ratings y, with its out-of-fold RMSE (nested: every outer fold is predicted by the
    procedure run on the other folds alone)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    z = np.column_stack([np.ones(len(y)), x])
    fold = _fold_ids(len(y), folds, seed)
    oof = np.empty(len(y))
    chosen = []
    for k in range(folds):
        train = fold != k
        cols, alpha = _select(z[train], y[train], folds, seed + 1 + k, rating_range)
        beta = _solve(z[train][:, cols], y[train], alpha)
        oof[~train] = np.clip(z[~train][:, cols] @ beta, *rating_range)
        kept = [names[c - 1] for c, w in zip(cols[1:], beta[1:], strict=True) if w > 0]
        chosen.append({"members": kept, "alpha": alpha})
    cols, alpha = _select(z, y, folds, seed, rating_range)
    beta = _solve(z[:, cols], y, alpha)
    fitted = np.clip(z[:, cols] @ beta, *rating_range)
    return RidgeBlend(
        candidates=list(names),
        weights={names[c - 1]: float(w) for c, w in zip(cols[1:], beta[1:], strict=True) if w > 0},
        intercept=float(beta[0]),
        alpha=alpha,
        rating_range=(float(rating_range[0]), float(rating_range[1])),
        oof_rmse=_rmse(y, oof),
        oof_mae=float(np.mean(np.abs(y - oof))),
        in_sample_rmse=_rmse(y, fitted),
        folds=chosen,
    )


def _fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """A seeded fold number per row, folds as equal as possible."""
    return np.random.default_rng(seed).permutation(np.arange(n) % folds)


def _solve(z: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge weights for design z (first column the intercept, unpenalised)."""
    return _solve_gram(z.T @ z, z.T @ y, len(y), alpha)


def _solve_gram(gram: np.ndarray, zy: np.ndarray, rows: int, alpha: float) -> np.ndarray:
    """Ridge weights, each >= 0, and the free intercept, from z'z and z'y (z's first column the intercept):
    non-negative least squares on the centred problem through its Cholesky factor. A tiny jitter copes with
    members that predict alike (an untrained model is the bias baseline)."""
    n, sx, sy = gram[0, 0], gram[0, 1:], zy[0]
    k = len(sx)
    if k == 0:
        return np.array([sy / n])
    g = gram[1:, 1:] - np.outer(sx, sx) / n + np.eye(k) * alpha * rows
    g += np.eye(k) * 1e-10 * max(float(np.trace(g)), 1e-12)
    factor = np.linalg.cholesky(g)
    w = nnls(factor.T, np.linalg.solve(factor, zy[1:] - sx * sy / n))[0]
    return np.concatenate([[(sy - sx @ w) / n], w])


def _select(
    z: np.ndarray, y: np.ndarray, folds: int, seed: int, rating_range: tuple[float, float]
) -> tuple[list[int], float]:
    """Forward selection of the columns of z (0, the intercept, always in) on K-fold RMSE, each set at its
    best penalty; stops when no column lowers the RMSE by more than MIN_GAIN. Returns (columns, alpha)."""
    fold = _fold_ids(len(y), folds, seed)
    held = [(z[fold == k], y[fold == k]) for k in range(folds)]
    gram, zy = z.T @ z, z.T @ y
    # each fold's training Gram matrix is the whole one minus the fold's: one pass over the rows
    train = [(gram - zk.T @ zk, zy - zk.T @ yk, len(y) - len(yk)) for zk, yk in held]

    def cv(cols: list[int], alpha: float) -> float:
        err = 0.0
        for (g, b, rows), (zk, yk) in zip(train, held, strict=True):
            beta = _solve_gram(g[np.ix_(cols, cols)], b[cols], rows, alpha)
            err += float(np.sum((np.clip(zk[:, cols] @ beta, *rating_range) - yk) ** 2))
        return float(np.sqrt(err / len(y)))

    chosen, alpha, best = [0], 0.0, cv([0], 0.0)
    while len(chosen) < z.shape[1]:
        trials = [
            (cv([*chosen, c], a), c, a) for c in range(1, z.shape[1]) if c not in chosen for a in ALPHAS
        ]
        score, col, a = min(trials)
        if not score < best * (1 - MIN_GAIN):
            break
        chosen, alpha, best = [*chosen, col], a, score
    return chosen, alpha


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - pred) ** 2)))


class RatingBlend(nn.Module):
    """forward(user_idx, item_idx) -> intercept + sum_m w_m * member_m(user_idx, item_idx), clamped to the
    rating range (each member clamps its own prediction, as it is served alone). export_module() is the same
    blend over the members' export modules: one ONNX graph."""

    def __init__(
        self,
        members: Mapping[str, nn.Module],
        weights: Mapping[str, float],
        intercept: float,
        rating_range: tuple[float, float],
    ) -> None:
        super().__init__()
        self.members = nn.ModuleDict(dict(members))
        self.weights = {n: float(weights[n]) for n in self.members}
        self.intercept = float(intercept)
        self.rating_range = (float(rating_range[0]), float(rating_range[1]))

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        terms = [self.weights[n] * member(user_idx, item_idx) for n, member in self.members.items()]
        return (torch.stack(terms).sum(0) + self.intercept).clamp(*self.rating_range)

    def export_module(self) -> nn.Module:
        graphs = {n: getattr(m, "export_module", lambda m=m: m)() for n, m in self.members.items()}
        return RatingBlend(graphs, self.weights, self.intercept, self.rating_range).eval()
