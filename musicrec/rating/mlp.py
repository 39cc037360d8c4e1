"""The seed's MLP: concatenated user (8) and item (5) embeddings through a multi-layer perceptron.

Beside the MLP, a learnt bilinear term u . W i (W: user_dim x item_dim; cfg.interaction): an MLP over
concatenated embeddings learns a dot product poorly (Rendle et al. 2020, "Neural Collaborative Filtering vs.
Matrix Factorization Revisited"), and without the term the MLP stayed at its start (best epoch 0) on CM100k
and on the tests' low-rank sample. W starts as the rectangular identity, a dot product of the first
min(user_dim, item_dim) factors: with W at zero the embeddings get almost no gradient and the per-row decay
shrinks them to zero before W grows. The factors start small (init_std), so the first predictions are
still the bias model's to within a few thousandths.
"""

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
        # the item factor mapped into the user's space; a dot product with the user factor makes u . W i
        self.interaction = nn.Linear(cfg.item_dim, cfg.user_dim, bias=False) if cfg.interaction else None
        if self.interaction is not None:
            nn.init.eye_(self.interaction.weight)

    def extra_dim(self) -> int:
        return 0

    def features(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.user_factors(user_idx), self.item_factors(item_idx)], dim=-1)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        out = self.biases(user_idx, item_idx) + self.net(self.features(user_idx, item_idx)).squeeze(-1)
        if self.interaction is None:
            return out
        mapped = self.interaction(self.item_factors(item_idx))
        return out + (self.user_factors(user_idx) * mapped).sum(-1)

    def user_tables(self) -> list[nn.Embedding]:
        return [*super().user_tables(), self.user_factors]

    def item_tables(self) -> list[nn.Embedding]:
        return [*super().item_tables(), self.item_factors]

    def factor_penalties(self) -> list[Penalty]:
        lam = self.cfg.weight_decay
        return [Penalty(self.user_factors, "user", lam), Penalty(self.item_factors, "item", lam)]
