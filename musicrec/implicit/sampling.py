"""Vectorised negative sampling: uniform, or popularity-smoothed (p(item) ~ count^exponent) by binary search on
a cumulative table; negatives that are positives of their user can be re-drawn once. Seeded by a Generator."""

from __future__ import annotations

import numpy as np
import torch


class NegativeSampler:
    """Draws (b, m) item indices for b users; the same generator state gives the same draws."""

    def __init__(self, n_items: int, generator: torch.Generator, counts: np.ndarray | None = None,
                 exponent: float = 0.75, positives: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.n_items, self.generator = n_items, generator
        self.cdf: torch.Tensor | None = None
        if counts is not None:
            weights = torch.as_tensor(np.asarray(counts, np.float64)).clamp(min=0) ** exponent
            if weights.sum() <= 0:
                raise ValueError("popularity sampling needs at least one item with a positive count")
            self.cdf = torch.cumsum(weights, 0) / weights.sum()
        self.keys: torch.Tensor | None = None
        if positives is not None:
            users, items = (torch.as_tensor(np.asarray(a, np.int64)) for a in positives)
            self.keys = torch.unique(users * n_items + items)  # sorted

    def draw(self, size: tuple[int, ...]) -> torch.Tensor:
        """Item indices of the given shape, from the sampler's distribution."""
        if self.cdf is None:
            return torch.randint(self.n_items, size, generator=self.generator)
        u = torch.rand(size, generator=self.generator, dtype=torch.float64)
        return torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.n_items - 1)

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) pair (users broadcast over items' columns) is a known positive."""
        if self.keys is None or len(self.keys) == 0:
            return torch.zeros(items.shape, dtype=torch.bool)
        q = users.reshape(-1, *([1] * (items.dim() - 1))) * self.n_items + items
        at = torch.searchsorted(self.keys, q).clamp_(max=len(self.keys) - 1)
        return self.keys[at] == q

    def sample(self, users: torch.Tensor, m: int) -> torch.Tensor:
        """(len(users), m) negatives; those that hit a positive of their user are re-drawn once."""
        neg = self.draw((len(users), m))
        if self.keys is not None:
            hit = self.is_positive(users, neg)
            if hit.any():
                neg[hit] = self.draw((int(hit.sum()),))
        return neg
