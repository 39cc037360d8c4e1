"""SVD++ (Koren 2008): a user is a free row plus what they rated.

    r_ui = mu + b_u + b_i + q_i . (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j)

N(u) is the set of items u rated in the training part (the builder hands the model the training pairs, see
musicrec.rating.build). A user with few ratings has a weak p_u; the history term describes them by items
that many users rated. The sum is one embedding bag per distinct user of a batch, so y gets sparse
gradients and the model trains in the shared torch loop. The export folds p_u + the history term into one
user table: the ONNX graph is a plain biased dot product with the same predictions (FoldedDot).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from musicrec.fit.history import history_norm, segments
from musicrec.rating.base import FactorTables, Penalty, RatingModel, embedding, factor_tables
from musicrec.rating.configs import SVDppConfig

History = tuple[torch.Tensor, torch.Tensor]  # (indptr, items): each user's distinct training items as CSR


class SVDpp(FactorTables, RatingModel):
    name = "svdpp"
    config_class = SVDppConfig
    uses_history = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        global_mean: float,
        cfg: SVDppConfig,
        history: History | None = None,
        **kw: Any,
    ) -> None:
        """history: from musicrec.rating.build; without it every history term is zero (a biased MF)."""
        super().__init__(n_users, n_items, global_mean, cfg, **kw)
        self.user_factors, self.item_factors = factor_tables(n_users, n_items, cfg.factors, cfg.init_std)
        self.history_factors = embedding(n_items, cfg.factors, cfg.init_std, zero_unknown=True)
        indptr, items = history or (
            torch.zeros(n_users + 1, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int64),
        )
        if len(indptr) != n_users + 1:
            raise ValueError(f"history has {len(indptr) - 1} users for {n_users}")
        # saved with the weights: a loaded model reads the histories it was trained with
        self.register_buffer("history_ptr", torch.as_tensor(indptr, dtype=torch.int64))
        self.register_buffer("history_items", torch.as_tensor(items, dtype=torch.int64))

    def item_tables(self) -> list[nn.Embedding]:
        return [*super().item_tables(), self.history_factors]

    def factor_penalties(self) -> list[Penalty]:
        """y_j like q_i: counted once per epoch over the rows that rate item j."""
        return [*super().factor_penalties(), Penalty(self.history_factors, "item", self.cfg.weight_decay)]

    def table_lr(self, table: nn.Embedding) -> float:
        cfg: Any = self.cfg
        return cfg.history_lr if table is self.history_factors else cfg.lr

    def history_term(self, users: torch.Tensor) -> torch.Tensor:
        """|N(u)|^-1/2 sum_{j in N(u)} y_j for each of the given (distinct) users; zero without history."""
        start = self.history_ptr.index_select(0, users)
        count = self.history_ptr.index_select(0, users + 1) - start
        segment, offset = segments(count)
        items = self.history_items.index_select(0, start.index_select(0, segment) + offset)
        bags = F.embedding_bag(
            items, self.history_factors.weight, count.cumsum(0) - count, mode="sum", sparse=True
        )
        return bags * history_norm(count, 0.5)[:, None]

    def user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor:
        """p_u + the history term, computed once per distinct user of the batch."""
        users, inverse = torch.unique(user_idx, return_inverse=True)
        return self.user_factors(user_idx) + self.history_term(users).index_select(0, inverse)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        dot = (self.user_vectors(user_idx) * self.item_factors(item_idx)).sum(-1)
        return self.biases(user_idx, item_idx) + dot

    @torch.no_grad()
    def export_module(self) -> nn.Module:
        """The same predictions with every user's vector computed once: a plain biased dot product."""
        users = torch.arange(self.user_factors.num_embeddings)
        vectors = torch.cat([self.user_vectors(chunk) for chunk in users.split(65536)])
        return FoldedDot(self, vectors)


class FoldedDot(nn.Module):
    """mu + b_u + b_i + x_u . q_i, clamped to the rating range, with x_u a fixed user table: what SVD++
    exports (x_u = p_u + its history term), so the served graph needs no histories."""

    def __init__(self, model: RatingModel, user_vectors: torch.Tensor) -> None:
        super().__init__()
        m: Any = model
        self.rating_range = model.rating_range
        self.register_buffer("global_mean", model.global_mean.detach().clone())
        self.register_buffer("user_bias", m.user_bias.weight.detach()[:, 0].clone())
        self.register_buffer("item_bias", m.item_bias.weight.detach()[:, 0].clone())
        self.register_buffer("user_vectors", user_vectors.detach().clone())
        self.register_buffer("item_factors", m.item_factors.weight.detach().clone())

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        dot = (self.user_vectors.index_select(0, user_idx) * self.item_factors.index_select(0, item_idx)).sum(
            -1
        )
        score = (
            self.global_mean
            + self.user_bias.index_select(0, user_idx)
            + self.item_bias.index_select(0, item_idx)
        )
        return (score + dot).clamp(*self.rating_range)
