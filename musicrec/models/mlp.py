"""The seed's MLP: concatenated user (8) and item (5) embeddings through a multi-layer perceptron."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from musicrec.models.base import ModelConfig, RatingModel, embedding, mlp

USER_DIM, ITEM_DIM = 8, 5


class MLP(RatingModel):
    name = "mlp"
    defaults: ClassVar[dict[str, Any]] = {"epochs": 10, "lr": 0.003, "weight_decay": 1.0, "hidden": [64, 32]}

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: ModelConfig,
                 item_text: np.ndarray | None = None) -> None:
        super().__init__(n_users, n_items, global_mean, cfg)
        self.user_factors = embedding(n_users, USER_DIM, cfg.init_std, zero_unknown=True)
        self.item_factors = embedding(n_items, ITEM_DIM, cfg.init_std, zero_unknown=True)
        self.net = mlp([USER_DIM + ITEM_DIM + self.extra_dim(item_text), *cfg.hidden])

    def extra_dim(self, item_text: np.ndarray | None) -> int:
        return 0

    def features(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.user_factors(user_idx), self.item_factors(item_idx)], dim=-1)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.biases(user_idx, item_idx) + self.net(self.features(user_idx, item_idx)).squeeze(-1)
