"""Dot-product model for implicit feedback: score(u, i) = <p_u, q_i> + b_i, where q_i may include a learnt
projection of the item's text vector (an item with text but no interactions still gets a usable row)."""

from __future__ import annotations

import torch
from torch import nn


class ImplicitMF(nn.Module):
    """User and item tables plus an item bias; the trainer updates the tables itself (sparse AdaGrad)."""

    def __init__(self, n_users: int, n_items: int, factors: int, init_std: float, seed: int,
                 text: torch.Tensor | None = None) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.user = nn.Parameter(torch.randn(n_users, factors, generator=g) * init_std, requires_grad=False)
        self.item = nn.Parameter(torch.randn(n_items, factors, generator=g) * init_std, requires_grad=False)
        self.item_bias = nn.Parameter(torch.zeros(n_items), requires_grad=False)
        self.text_proj: nn.Parameter | None = None
        if text is not None:
            if text.shape[0] != n_items:
                raise ValueError(f"text has {text.shape[0]} rows for {n_items} items")
            self.register_buffer("text", text.to(torch.float32))
            self.text_proj = nn.Parameter(torch.zeros(factors, text.shape[1]), requires_grad=False)

    def tables(self) -> dict[str, nn.Parameter]:
        """The sparse tables the trainer updates row by row and penalises (user, item, item_bias)."""
        return {"user": self.user, "item": self.item, "item_bias": self.item_bias}

    def item_rows(self, items: torch.Tensor, item: torch.Tensor | None = None,
                  proj: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors q_i; item/proj replace the stored table rows/projection (the trainer's gathered copies)."""
        rows = self.item[items] if item is None else item
        if self.text_proj is None:
            return rows
        return rows + self.text[items] @ (self.text_proj if proj is None else proj).T

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Score of each (user, item) pair."""
        return (self.user[user_idx] * self.item_rows(item_idx)).sum(-1) + self.item_bias[item_idx]

    @torch.no_grad()
    def item_table(self) -> torch.Tensor:
        """(n_items, factors + 1): [q_i, b_i], so that [p_u, 1] . row = score (inner-product retrieval)."""
        rows = self.item_rows(torch.arange(self.item.shape[0]))
        return torch.cat([rows, self.item_bias[:, None]], 1)

    @torch.no_grad()
    def user_table(self, users: torch.Tensor) -> torch.Tensor:
        """(len(users), factors + 1): [p_u, 1], the query side of item_table."""
        p = self.user[users]
        return torch.cat([p, torch.ones(len(users), 1)], 1)
