"""Non-negative MF: user and item factors are projected onto >= 0 after every optimiser step."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from musicrec.models.base import DotProductGradients, ModelConfig, RatingModel, factor_tables


class NNMF(DotProductGradients, RatingModel):
    name = "nnmf"
    defaults: ClassVar[dict[str, Any]] = {"factors": 32, "epochs": 80, "lr": 0.005, "weight_decay": 1.0}

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: ModelConfig,
                 item_text: np.ndarray | None = None) -> None:
        super().__init__(n_users, n_items, global_mean, cfg)
        self.user_factors, self.item_factors = factor_tables(n_users, n_items, cfg.factors, cfg.init_std)
        with torch.no_grad():
            self.user_factors.weight.abs_()
            self.item_factors.weight.abs_()

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        dot = (self.user_factors(user_idx) * self.item_factors(item_idx)).sum(-1)
        return self.biases(user_idx, item_idx) + dot

    @torch.no_grad()
    def after_step(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> None:
        _project(self.user_factors, user_idx)
        _project(self.item_factors, item_idx)


def _project(table: nn.Embedding, idx: torch.Tensor) -> None:
    rows = torch.unique(idx)
    table.weight.index_copy_(0, rows, table.weight.index_select(0, rows).clamp_(min=0.0))
