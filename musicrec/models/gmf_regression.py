"""Generalized MF: the element-wise product of user and item vectors into a learned linear layer, MSE."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from musicrec.models.base import ModelConfig, RatingModel, factor_tables


class GMFRegression(RatingModel):
    name = "gmf_regression"
    defaults: ClassVar[dict[str, Any]] = {"factors": 32, "epochs": 20, "lr": 0.005, "weight_decay": 1.0}

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: ModelConfig,
                 item_text: np.ndarray | None = None) -> None:
        super().__init__(n_users, n_items, global_mean, cfg)
        self.user_factors, self.item_factors = factor_tables(n_users, n_items, cfg.factors, cfg.init_std)
        self.combine = nn.Linear(cfg.factors, 1, bias=False)
        nn.init.ones_(self.combine.weight)  # starts as a plain dot product

    def interaction(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.combine(self.user_factors(user_idx) * self.item_factors(item_idx)).squeeze(-1)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.biases(user_idx, item_idx) + self.interaction(user_idx, item_idx)
