"""A ranking blend of retrieval models, fitted on validation: sum_m w_m * score_m(u, i) / s_m.

s_m puts each member on a common scale: the root mean square over sampled validation users of the standard
deviation of the user's scores over the catalogue (a ranking is unchanged by adding a constant to a user's
scores, so only the spread within a user's row matters). The weights w_m are then fitted on validation NDCG@10
by coordinate search over WEIGHT_GRID, starting from the best of equal weights and each member alone, on one
half of the validation users, and checked on the other half: if the fitted weights do worse there than equal
weights, equal weights are kept.
The test split is never read. Since every member is an inner product, the blend is one too
(musicrec.implicit.model.ImplicitEnsemble with coefficients w_m / s_m).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from musicrec.implicit.model import ImplicitEnsemble
from musicrec.implicit.train import evaluate_model

WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # each member's weight; only the ratios matter
PASSES = 3  # coordinate passes at most (the search stops at the first pass that changes nothing)
TOLERANCE = 0.005  # relative NDCG@10: a change must gain more; a zero weight (one member fewer) may lose less
SCALE_USERS = 256  # validation users whose score rows measure a member's scale
SCALE_ITEMS = 20_000  # items of those rows (a seeded sample on larger catalogues)


@dataclass
class Blend:
    """The fitted blend: each member's scale and weight (weights sum to 1; 0: the member drops out), and
    validation NDCG@10 of the fitted and the equal weights on the fit half and the check half."""

    names: list[str]
    scales: dict[str, float]
    weights: dict[str, float]
    check: dict[str, Any] = field(default_factory=dict)

    def coefficients(self) -> list[float]:
        """w_m / s_m per member, in `names` order: the factor on the member's query and item bias."""
        return [self.weights[n] / self.scales[n] for n in self.names]

    def kept(self) -> list[str]:
        """The members with a positive weight."""
        return [n for n in self.names if self.weights[n] > 0]

    def to_json(self) -> dict[str, Any]:
        return {"members": self.names, "scales": self.scales, "weights": self.weights, "check": self.check}


def score_scale(model: Any, users: np.ndarray, n_items: int, seed: int = 0) -> float:
    """sqrt(mean over users of the variance of the user's scores over items), on at most SCALE_USERS users
    and SCALE_ITEMS items (item index 0, the unknown row, is never scored). 1.0 if the scores are constant."""
    rng = np.random.default_rng(seed)
    users = users if len(users) <= SCALE_USERS else np.sort(rng.choice(users, SCALE_USERS, replace=False))
    items = np.arange(1, n_items)
    if len(items) > SCALE_ITEMS:
        items = np.sort(rng.choice(items, SCALE_ITEMS, replace=False))
    idx = torch.as_tensor(items)
    with torch.no_grad():
        rows = model.item_vectors().index_select(0, idx)
        scores = model.query(torch.as_tensor(users, dtype=torch.int64)) @ rows.T + model.item_bias[idx]
    spread = float(scores.double().var(1, unbiased=False).mean().sqrt())
    return spread if spread > 0 and np.isfinite(spread) else 1.0


def fit_blend(
    models: dict[str, Any],
    users: np.ndarray,
    validation: sp.csr_matrix,
    exclude: sp.csr_matrix,
    seed: int = 0,
) -> Blend:
    """Scales and weights of a blend of `models` (name -> inner-product model) on the validation users
    (validation: each user's held-out items; exclude: what validation does not rank)."""
    names = list(models)
    scales = {n: score_scale(m, users, validation.shape[1], seed) for n, m in models.items()}
    order = np.random.default_rng(seed).permutation(np.asarray(users, np.int64))
    halves = {"fit": np.sort(order[: len(order) // 2]), "check": np.sort(order[len(order) // 2 :])}
    seen: dict[tuple[tuple[float, ...], str], float] = {}

    def ndcg(weights: tuple[float, ...], half: str) -> float:
        key = (tuple(w / max(weights) for w in weights), half)  # weights in proportion rank alike
        if key not in seen:
            coefficients = [w / scales[n] for n, w in zip(names, weights, strict=True)]
            blend = ImplicitEnsemble([models[n] for n in names], coefficients)
            seen[key] = evaluate_model(blend, halves[half], validation, exclude)["ndcg@10"]
        return seen[key]

    equal = tuple(1.0 for _ in names)
    alone = [tuple(float(j == k) for j in range(len(names))) for k in range(len(names))]
    start = max([equal, *alone], key=lambda w: ndcg(w, "fit"))  # the first of equals: equal weights
    fitted, _ = coordinate_search(lambda w: ndcg(w, "fit"), start)
    check: dict[str, Any] = {"fit_users": len(halves["fit"]), "check_users": len(halves["check"])}
    for half in halves:
        check[f"{half}_ndcg_at_10"] = {"fitted": ndcg(fitted, half), "equal": ndcg(equal, half)}
    check["fitted_weights"] = dict(zip(names, fitted, strict=True))
    check["evaluations"] = len(seen)
    on_check = check["check_ndcg_at_10"]
    check["kept"] = "fitted" if on_check["fitted"] >= on_check["equal"] else "equal"
    chosen = fitted if check["kept"] == "fitted" else equal
    total = sum(chosen)
    return Blend(names, scales, {n: w / total for n, w in zip(names, chosen, strict=True)}, check)


def coordinate_search(
    objective: Any, start: tuple[float, ...], grid: tuple[float, ...] = WEIGHT_GRID
) -> tuple[tuple[float, ...], float]:
    """(weights, objective) maximised one coordinate at a time over `grid`, from `start`: each pass tries
    every grid value of each weight in turn, keeping a change if it improves by more than TOLERANCE (relative;
    a zero weight, which drops a member from serving, if it loses less than that); at least one weight stays
    positive. Stops after a pass without a change, or PASSES passes."""
    best, best_value = start, objective(start)
    for _ in range(PASSES):
        changed = False
        for k in range(len(start)):
            for value in grid:
                trial = (*best[:k], value, *best[k + 1 :])
                if value == best[k] or not any(trial):
                    continue
                got = objective(trial)
                if got > best_value * (1 - TOLERANCE if value == 0 else 1 + TOLERANCE):
                    best, best_value, changed = trial, got, True
        if not changed:
            break
    return best, best_value
