"""Generalized MF trained with logistic loss on ratings rescaled to [0, 1], mapped back to stars.

It starts exactly where the bias baseline ends: the baseline's prediction, rescaled to [0, 1], enters as a
fixed logit offset (buffers, exported with the graph), and the model learns logit-space bias corrections
and the interaction on top. Mapping star biases to logit biases one by one does not work: logits do not
add up like stars, and that start was worse than the baseline it came from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musicrec.rating.base import Penalty
from musicrec.rating.configs import LogisticConfig
from musicrec.rating.gmf_regression import GMFRegression

EDGE = 0.01  # the baseline offset is clipped to [EDGE, 1 - EDGE] of the scale, so 1 and 5 stars stay finite


class GMFLogistic(GMFRegression):
    name = "gmf_logistic"
    config_class = LogisticConfig

    def __init__(
        self, n_users: int, n_items: int, global_mean: float, cfg: LogisticConfig, **kw: Any
    ) -> None:
        super().__init__(n_users, n_items, global_mean, cfg, **kw)
        lo, hi = self.rating_range
        self.span = hi - lo
        self.register_buffer("base_user", torch.zeros(n_users))
        self.register_buffer("base_item", torch.zeros(n_items))

    def start_from(self, data: Any, user_bias: np.ndarray, item_bias: np.ndarray) -> None:
        """The bias baseline becomes the fixed offset; the learned logit biases start at zero."""
        with torch.no_grad():
            self.base_user.copy_(torch.as_tensor(user_bias, dtype=torch.float32))
            self.base_item.copy_(torch.as_tensor(item_bias, dtype=torch.float32))
        self.init_biases(np.zeros_like(user_bias), np.zeros_like(item_bias))

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        star = (
            self.global_mean
            + self.base_user.index_select(0, user_idx)
            + self.base_item.index_select(0, item_idx)
        )
        p = ((star - self.rating_range[0]) / self.span).clamp(EDGE, 1 - EDGE)
        offset = torch.log(p) - torch.log1p(-p)
        return (
            offset
            + self.user_bias(user_idx).squeeze(-1)
            + self.item_bias(item_idx).squeeze(-1)
            + self.interaction(user_idx, item_idx)
        )

    def _slope(self) -> float:
        """Stars per logit unit at the global mean: c = span * p(1 - p)."""
        p = (float(self.global_mean) - self.rating_range[0]) / self.span
        p = min(max(p, EDGE), 1 - EDGE)
        return self.span * p * (1 - p)

    def penalties(self) -> list[Penalty]:
        """The run's penalties in logit units: with loss() in squared-star units near the mean, a bias weight
        becomes lam * c^2 and a factor weight (one of a product of two rows) lam * c."""
        c = self._slope()
        return [
            Penalty(q.table, q.side, q.lam * (c * c if q.table in self.bias_tables() else c))
            for q in super().penalties()
        ]

    def dense_penalty(self) -> torch.Tensor:
        return super().dense_penalty() * self._slope()

    def to_rating(self, score: torch.Tensor) -> torch.Tensor:
        return self.rating_range[0] + self.span * torch.sigmoid(score)

    def loss(self, score: torch.Tensor, rating: torch.Tensor) -> torch.Tensor:
        """Logistic loss scaled to squared-star units near the mean (2 c^2 / (p(1-p)) = 2 span^2 p(1-p)), so
        the penalties keep the meaning they have in the other families."""
        c = self._slope()
        bce = F.binary_cross_entropy_with_logits(score, (rating - self.rating_range[0]) / self.span)
        return bce * 2 * c * self.span
