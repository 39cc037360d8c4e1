"""Dot-product model for implicit feedback: score(u, i) = <p_u + h_u, q_i> + b_i.

q_i may include a learnt projection of the item's text vector (an item with text but no interactions still
gets a usable row). h_u, when the model has a history, is the user's items' context vectors y_j averaged as
|N(u)|^-alpha * sum_j y_j (FISM, Kabbur et al. 2013): a user is described by what they interacted with, which
generalises better than a free row p_u learnt from a handful of interactions."""

from __future__ import annotations

import torch
from torch import nn

from musicrec.fit.history import history_norm, segments


class InnerProductTables:
    """The retrieval export of a model with query(users),
    item_vectors() and item_bias: score = [u, 1] . [q_i, b_i]."""

    item_bias: torch.Tensor

    def query(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_vectors(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def item_table(self) -> torch.Tensor:
        """(n_items, d + 1): [q_i, b_i], so that [u, 1] . row = <u, q_i> + b_i (inner-product retrieval)."""
        return torch.cat([self.item_vectors(), self.item_bias.detach()[:, None]], 1)

    @torch.no_grad()
    def user_table(self, users: torch.Tensor) -> torch.Tensor:
        """(len(users), d + 1): [u, 1], the query side of item_table."""
        q = self.query(users)
        return torch.cat([q, torch.ones(len(q), 1)], 1)


class ImplicitMF(InnerProductTables, nn.Module):
    """User and item tables plus an item bias; the trainer updates the tables itself (sparse AdaGrad).

    history: (indptr, items) CSR of each user's interactions,
    for h_u (stored as buffers, saved with the model)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int,
        init_std: float,
        seed: int,
        text: torch.Tensor | None = None,
        history: tuple[torch.Tensor, torch.Tensor] | None = None,
        history_alpha: float = 0.5,
        free_user: bool = True,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        rows = (
            torch.randn(n_users, factors, generator=g) * init_std
        )  # drawn either way: same item rows per seed
        if (
            not free_user and history is not None
        ):  # a user is only their history: no table (215 MB at seed size)
            rows = torch.empty(
                0, factors
            )  # not rows[:0], a view that would keep the drawn table's storage alive
        self.user = nn.Parameter(rows, requires_grad=False)
        self.item = nn.Parameter(torch.randn(n_items, factors, generator=g) * init_std, requires_grad=False)
        self.item_bias = nn.Parameter(torch.zeros(n_items), requires_grad=False)
        self.text_proj: nn.Parameter | None = None
        if text is not None:
            if text.shape[0] != n_items:
                raise ValueError(f"text has {text.shape[0]} rows for {n_items} items")
            # not saved with the weights: the run's text vectors are a file of their own, shared by its models
            self.register_buffer("text", text.to(torch.float32), persistent=False)
            self.text_proj = nn.Parameter(torch.zeros(factors, text.shape[1]), requires_grad=False)
        self.context: nn.Parameter | None = None
        self.history_alpha = history_alpha
        if history is not None:
            indptr, items = (torch.as_tensor(a, dtype=torch.int64) for a in history)
            if len(indptr) != n_users + 1:
                raise ValueError(f"history has {len(indptr) - 1} users for {n_users}")
            self.register_buffer("history_ptr", indptr)
            self.register_buffer("history_items", items)
            self.context = nn.Parameter(torch.zeros(n_items, factors), requires_grad=False)

    @property
    def free_user(self) -> bool:
        """Whether users have a free row p_u (else a user is h_u alone)."""
        return self.user.shape[0] > 0

    def tables(self) -> dict[str, nn.Parameter]:
        """The sparse tables the trainer updates row by row and penalises (user, item, item_bias, context)."""
        extra = {} if self.context is None else {"context": self.context}
        return {"user": self.user, "item": self.item, "item_bias": self.item_bias, **extra}

    def item_rows(
        self, items: torch.Tensor, item: torch.Tensor | None = None, proj: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Item vectors q_i; item/proj replace the stored table
        rows/projection (the trainer's gathered copies)."""
        rows = self.item[items] if item is None else item
        if self.text_proj is None:
            return rows
        return rows + self.text[items] @ (self.text_proj if proj is None else proj).T

    def history_of(
        self,
        users: torch.Tensor,
        limit: int = 0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(segment, item, weight, count): history items of the given users, the position in `users` each
        belongs to, its weight in the user's sum, and each user's history length (len(users),).

        limit > 0: a user with a longer history gets `limit` items drawn uniformly (with replacement) and
        weighted count / limit, an unbiased estimate of the sum (training cost stays bounded for heavy
        users)."""
        start, count = self.history_ptr[users], self.history_ptr[users + 1] - self.history_ptr[users]
        taken = count if limit <= 0 else count.clamp(max=limit)
        segment, offset = segments(taken)
        weight = torch.ones(len(segment))
        if limit > 0 and bool((count > limit).any()):
            n = count.index_select(0, segment)
            sampled = n > limit
            draw = torch.rand(int(sampled.sum()), generator=generator)
            offset[sampled] = (draw * n[sampled]).long().clamp_(max=n[sampled] - 1)
            weight[sampled] = n[sampled].float() / limit
        return segment, self.history_items[start.index_select(0, segment) + offset], weight, count

    def query(self, users: torch.Tensor) -> torch.Tensor:
        """p_u + h_u for each user (h_u over the whole stored history)."""
        if self.context is None:
            return self.user.index_select(0, users)
        segment, items, _, count = self.history_of(users)
        summed = torch.zeros(len(users), self.context.shape[1]).index_add_(
            0, segment, self.context.index_select(0, items)
        )
        h = summed * history_norm(count, self.history_alpha)[:, None]
        return h + self.user.index_select(0, users) if self.free_user else h

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Score of each (user, item) pair."""
        return (self.query(user_idx) * self.item_rows(item_idx)).sum(-1) + self.item_bias[item_idx]

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """(n_items, factors): every q_i; the stored table itself when there is no text (no copy)."""
        return self.item if self.text_proj is None else self.item_rows(torch.arange(self.item.shape[0]))


class ImplicitEnsemble(InnerProductTables, nn.Module):
    """A weighted blend of several retrieval models' scores: sum_m c_m * score_m(u, i). Still one inner
    product: each member's user vector times c_m, side by side, against their item vectors side by side, with
    the item biases summed times the same c_m; so the export, faiss and the runtime serve it unchanged.
    c_m is a member's weight over its score scale (musicrec.implicit.blend fits both on validation); members
    with c_m == 0 drop out. Without coefficients every c_m is 1: the plain sum of the members' scores."""

    def __init__(self, members: list[nn.Module], coefficients: list[float] | None = None) -> None:
        super().__init__()
        coefficients = [1.0] * len(members) if coefficients is None else [float(c) for c in coefficients]
        if len(coefficients) != len(members):
            raise ValueError(f"{len(coefficients)} coefficients for {len(members)} members")
        if any(c < 0 or c != c for c in coefficients):
            raise ValueError(f"coefficients must be >= 0, got {coefficients}")
        kept = [(m, c) for m, c in zip(members, coefficients, strict=True) if c > 0]
        if not kept:
            raise ValueError("an ensemble needs at least one member with a positive coefficient")
        self.members = nn.ModuleList([m for m, _ in kept])
        self.coefficients = [c for _, c in kept]
        self.item_bias = sum(
            (c * m.item_bias.detach() for m, c in kept), torch.zeros_like(kept[0][0].item_bias.detach())
        )

    def query(self, users: torch.Tensor) -> torch.Tensor:
        """The members' user vectors, each times its coefficient, side by side."""
        return torch.cat(
            [c * m.query(users) for m, c in zip(self.members, self.coefficients, strict=True)], 1
        )

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """The members' item vectors side by side."""
        return torch.cat([m.item_vectors() for m in self.members], 1)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the members' scores of each (user, item) pair."""
        return torch.stack(
            [c * m(user_idx, item_idx) for m, c in zip(self.members, self.coefficients, strict=True)]
        ).sum(0)
