"""The seed's three implicit losses on a positive score and several sampled negative scores, per positive.

pointwise: -log s(pos) - log(1 - s(neg));  bpr: -log s(pos - neg);  hinge: max(0, margin - pos + neg),
with s the logistic function. Several negatives are averaged ("mean") or only the highest-scoring one is
used ("max": the adaptive hinge, WARP-like, and the same hard-negative rule for the other two).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]  # (pos (b,), neg (b, m), margin) -> (b, m)


def pointwise(pos: torch.Tensor, neg: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """-log sigmoid(pos) - log(1 - sigmoid(neg)), via softplus for stability."""
    return F.softplus(-pos)[:, None] + F.softplus(neg)


def bpr(pos: torch.Tensor, neg: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """-log sigmoid(pos - neg)."""
    return F.softplus(neg - pos[:, None])


def hinge(pos: torch.Tensor, neg: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """max(0, margin - pos + neg)."""
    return F.relu(margin - pos[:, None] + neg)


LOSSES: dict[str, Loss] = {"pointwise": pointwise, "bpr": bpr, "hinge": hinge}


def batch_loss(
    loss: Loss, pos: torch.Tensor, neg: torch.Tensor, pick: Literal["mean", "max"], margin: float
) -> torch.Tensor:
    """Per-positive loss (b,): averaged over the m negatives, or on the highest-scoring negative only."""
    if neg.dim() == 1:
        neg = neg[:, None]
    if pick == "max":
        neg = neg.max(1, keepdim=True).values
    return loss(pos, neg, margin).mean(1)
