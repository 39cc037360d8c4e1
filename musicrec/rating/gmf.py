"""GMF(1) of the seed: dot product of user and item vectors plus user bias, item bias and global mean."""

from __future__ import annotations

from typing import Any

import torch

from musicrec.rating.base import DotProductGradients, FactorTables, RatingModel, factor_tables
from musicrec.rating.configs import FactorConfig


class GMF(DotProductGradients, FactorTables, RatingModel):
    name = "gmf"
    config_class = FactorConfig

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: FactorConfig, **kw: Any) -> None:
        super().__init__(n_users, n_items, global_mean, cfg, **kw)
        self.user_factors, self.item_factors = factor_tables(n_users, n_items, cfg.factors, cfg.init_std)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        dot = (self.user_factors(user_idx) * self.item_factors(item_idx)).sum(-1)
        return self.biases(user_idx, item_idx) + dot
