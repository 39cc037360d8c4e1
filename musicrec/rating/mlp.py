"""The seed's MLP: concatenated user (8) and item (5) embeddings through a multi-layer perceptron."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from musicrec.rating.base import Penalty, RatingModel, embedding, mlp
from musicrec.rating.configs import MLPConfig


class MLP(RatingModel):
    name = "mlp"
    config_class = MLPConfig

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: MLPConfig, **kw: Any) -> None:
        super().__init__(n_users, n_items, global_mean, cfg, **kw)
        self.user_factors = embedding(n_users, cfg.user_dim, cfg.init_std, zero_unknown=True)
        self.item_factors = embedding(n_items, cfg.item_dim, cfg.init_std, zero_unknown=True)
        self.net = mlp([cfg.user_dim + cfg.item_dim + self.extra_dim(), *cfg.hidden])

    def extra_dim(self) -> int:
        return 0

    def features(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.user_factors(user_idx), self.item_factors(item_idx)], dim=-1)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.biases(user_idx, item_idx) + self.net(self.features(user_idx, item_idx)).squeeze(-1)

    def user_tables(self) -> list[nn.Embedding]:
        return [*super().user_tables(), self.user_factors]

    def item_tables(self) -> list[nn.Embedding]:
        return [*super().item_tables(), self.item_factors]

    def factor_penalties(self) -> list[Penalty]:
        lam = self.cfg.weight_decay
        return [Penalty(self.user_factors, "user", lam), Penalty(self.item_factors, "item", lam)]
