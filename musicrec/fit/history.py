"""Each user's history, the items they interacted with in training, as CSR: what both families' history
models (the implicit family's FISM term, the rating family's SVD++) describe a user by."""

from __future__ import annotations

import numpy as np
import torch

from musicrec.metrics.topn import interaction_matrix


def user_histories(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indptr, items): each user's distinct interacted items as CSR, the model's history."""
    csr = interaction_matrix(users, items, n_users, n_items)
    return torch.as_tensor(csr.indptr.astype(np.int64)), torch.as_tensor(csr.indices.astype(np.int64))


def segments(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment, offset) of a flat concatenation of runs of the given lengths: the run each position belongs
    to and its position inside that run."""
    segment = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    offset = torch.arange(len(segment)) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
    return segment, offset


def history_norm(count: torch.Tensor, alpha: float) -> torch.Tensor:
    """count^-alpha, 0 where count is 0 (a user without history has h_u = 0)."""
    c = count.to(torch.float32)
    return torch.where(c > 0, c.clamp(min=1).pow(-alpha), torch.zeros_like(c))
