"""Building a rating model from the registry (musicrec.registry): its typed config and its weights' start."""

from __future__ import annotations

from typing import Any

import numpy as np

from musicrec import registry
from musicrec.rating.base import RatingModel, RatingRange, seeded_construction
from musicrec.rating.configs import TrainConfig


def model_config(
    name: str, overrides: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None
) -> TrainConfig:
    """The model's typed config: its defaults, then `defaults` (e.g. tuned values), then the user's overrides."""
    return registry.parse_config(name, overrides, defaults)


def model_class(name: str) -> type[RatingModel]:
    if registry.family_of(name) != "rating":
        raise ValueError(f"{name!r} is not a rating model")
    return registry.model_class(name)


def build_model(
    name: str,
    n_users: int,
    n_items: int,
    global_mean: float,
    cfg: TrainConfig,
    item_text: np.ndarray | None = None,
    rating_range: RatingRange | None = None,
) -> RatingModel:
    """Instantiate a registered model; its initial weights depend on cfg.seed only."""
    kw: dict[str, Any] = {"rating_range": rating_range} if rating_range else {}
    if model_class(name).uses_text:
        kw["item_text"] = item_text
    with seeded_construction(cfg.seed):
        return model_class(name)(n_users, n_items, global_mean, cfg, **kw)
