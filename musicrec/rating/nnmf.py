"""Non-negative MF: user and item factors are projected onto >= 0 after every optimiser step."""

from __future__ import annotations

from typing import Any

import torch

from musicrec.rating.configs import NNMFConfig
from musicrec.rating.gmf import GMF


class NNMF(GMF):
    """GMF's dot product (and closed-form gradients), with factors that start and stay non-negative."""

    name = "nnmf"
    config_class = NNMFConfig
    factor_floor = 0.0  # factors projected onto >= 0 after every step (DotProductGradients.after_step)

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: NNMFConfig, **kw: Any) -> None:
        super().__init__(n_users, n_items, global_mean, cfg, **kw)
        # |N(0, s)|: an all-positive start (dot product about k * 0.64 s^2: 0.05 stars at the defaults, which
        # the biases absorb)
        with torch.no_grad():
            self.user_factors.weight.abs_()
            self.item_factors.weight.abs_()
