"""Building a rating model from the registry (musicrec.registry): its typed config and its weights' start."""

from __future__ import annotations

from typing import Any

import numpy as np

from musicrec import registry
from musicrec.fit.history import user_histories
from musicrec.rating.base import RatingModel, RatingRange, seeded_construction
from musicrec.rating.configs import TrainConfig
from musicrec.rating.data import TrainData


def model_config(
    name: str, overrides: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None
) -> TrainConfig:
    """The model's typed config: its defaults, then `defaults` (e.g. tuned values), then user overrides."""
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
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> RatingModel:
    """Instantiate a registered model; its initial weights depend on cfg.seed only. pairs: the training
    (user index, item index) rows, from which a model that reads what users rated (uses_history) gets each
    user's history; other models never see them."""
    kw: dict[str, Any] = {"rating_range": rating_range} if rating_range else {}
    if model_class(name).uses_text:
        kw["item_text"] = item_text
    if model_class(name).uses_history and pairs is not None:
        kw["history"] = user_histories(*pairs, n_users, n_items)
    with seeded_construction(cfg.seed):
        return model_class(name)(n_users, n_items, global_mean, cfg, **kw)


def build_for(name: str, data: TrainData, cfg: TrainConfig) -> RatingModel:
    """build_model for a run's indexed data: its sizes, mean, text, rating range and training rows (a refit's
    data holds every rating, so a history model refit on it reads the full histories)."""
    train = data.parts["train"]
    return build_model(
        name,
        data.users.size,
        data.items.size,
        data.global_mean,
        cfg,
        data.item_text,
        data.rating_range,
        (train.user_idx.numpy(), train.item_idx.numpy()),
    )
