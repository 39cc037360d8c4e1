"""Generalized MF trained with logistic loss on ratings rescaled to [0, 1], mapped back to stars."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from musicrec.data.schema import RATING_MAX, RATING_MIN
from musicrec.models.base import ModelConfig, logit
from musicrec.models.gmf_regression import GMFRegression

SPAN = RATING_MAX - RATING_MIN


class GMFLogistic(GMFRegression):
    name = "gmf_logistic"

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: ModelConfig,
                 item_text: np.ndarray | None = None) -> None:
        super().__init__(n_users, n_items, global_mean, cfg)
        # The global term lives in logit space so an untrained model predicts the global mean.
        self.global_mean.fill_(logit((global_mean - RATING_MIN) / SPAN))

    def init_biases(self, user_bias: np.ndarray, item_bias: np.ndarray) -> None:
        """Biases in star units mapped to logit units by the sigmoid's slope at the global mean."""
        p = torch.sigmoid(self.global_mean).item()
        scale = 1.0 / (SPAN * p * (1 - p))
        super().init_biases(user_bias * scale, item_bias * scale)

    def to_rating(self, score: torch.Tensor) -> torch.Tensor:
        return RATING_MIN + SPAN * torch.sigmoid(score)

    def loss(self, score: torch.Tensor, rating: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(score, (rating - RATING_MIN) / SPAN)
