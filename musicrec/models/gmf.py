"""GMF(1) of the seed: dot product of user and item vectors plus user bias, item bias and global mean."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from musicrec.models.base import DotProductGradients, ModelConfig, RatingModel, factor_tables


class GMF(DotProductGradients, RatingModel):
    name = "gmf"
    defaults: ClassVar[dict[str, Any]] = {"factors": 32, "epochs": 20, "lr": 0.005, "weight_decay": 1.0}

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: ModelConfig,
                 item_text: np.ndarray | None = None) -> None:
        super().__init__(n_users, n_items, global_mean, cfg)
        self.user_factors, self.item_factors = factor_tables(n_users, n_items, cfg.factors, cfg.init_std)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        dot = (self.user_factors(user_idx) * self.item_factors(item_idx)).sum(-1)
        return self.biases(user_idx, item_idx) + dot
