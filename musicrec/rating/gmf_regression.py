"""Generalized MF: the element-wise product of user and item vectors into a learned linear layer, MSE.

The combine weights are penalised with the factors (weight_decay): without it, scaling them up and the
factors down would shrink the factor penalty at no cost, and the model would escape its regularisation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from musicrec.rating.base import FactorTables, RatingModel, factor_tables
from musicrec.rating.configs import FactorConfig


class GMFRegression(FactorTables, RatingModel):
    name = "gmf_regression"
    config_class = FactorConfig

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: FactorConfig, **kw: Any) -> None:
        super().__init__(n_users, n_items, global_mean, cfg, **kw)
        self.user_factors, self.item_factors = factor_tables(n_users, n_items, cfg.factors, cfg.init_std)
        self.combine = nn.Linear(cfg.factors, 1, bias=False)
        nn.init.ones_(self.combine.weight)  # starts as a plain dot product

    def interaction(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.combine(self.user_factors(user_idx) * self.item_factors(item_idx)).squeeze(-1)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.biases(user_idx, item_idx) + self.interaction(user_idx, item_idx)

    def dense_penalty(self) -> torch.Tensor:
        return self.cfg.weight_decay * self.combine.weight.pow(2).sum()
