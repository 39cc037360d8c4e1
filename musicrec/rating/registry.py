"""name -> model class. Adding a model: one file, one line here, one id in the parametrized test."""

from __future__ import annotations

from typing import Any

import numpy as np

from musicrec.rating.base import RatingModel, RatingRange, seeded_construction
from musicrec.rating.configs import FAMILY, TrainConfig, parse_config
from musicrec.rating.gmf import GMF
from musicrec.rating.gmf_logistic import GMFLogistic
from musicrec.rating.gmf_regression import GMFRegression
from musicrec.rating.mlp import MLP
from musicrec.rating.nnmf import NNMF
from musicrec.rating.w2v_mlp import W2VMLP

MODELS: dict[str, type[RatingModel]] = {
    "gmf": GMF,
    "gmf_regression": GMFRegression,
    "gmf_logistic": GMFLogistic,
    "nnmf": NNMF,
    "mlp": MLP,
    "w2v_mlp": W2VMLP,
}
assert {n: c.config_class for n, c in MODELS.items()} == FAMILY, "configs.FAMILY must follow the registry"


def model_config(name: str, overrides: dict[str, Any] | None = None,
                 defaults: dict[str, Any] | None = None) -> TrainConfig:
    """The family's typed config: its defaults, then `defaults` (e.g. tuned values), then the user's overrides."""
    return parse_config(name, overrides, defaults)


def model_class(name: str) -> type[RatingModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name]


def build_model(name: str, n_users: int, n_items: int, global_mean: float, cfg: TrainConfig,
                item_text: np.ndarray | None = None, rating_range: RatingRange | None = None) -> RatingModel:
    """Instantiate a registered model; its initial weights depend on cfg.seed only."""
    kw: dict[str, Any] = {"rating_range": rating_range} if rating_range else {}
    if model_class(name).uses_text:
        kw["item_text"] = item_text
    with seeded_construction(cfg.seed):
        return model_class(name)(n_users, n_items, global_mean, cfg, **kw)
