"""The contract every rating model follows, and the pieces the families share.

A model declares, explicitly: its typed config (musicrec.rating.configs), the rating range it predicts in,
which tables hold user rows and which item rows (cold-start handling resets item rows), and what it
penalises (`penalties()`: each table with its side and L2 weight, plus dense weights). The trainer reads
these declarations; it never finds tables by attribute name.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from musicrec.data.schema import RATING_MAX, RATING_MIN
from musicrec.fit.adagrad import coalesce_rows
from musicrec.rating.configs import TrainConfig

RatingRange = tuple[float, float]


@dataclass(frozen=True)
class Penalty:
    """lam * sum of squared rows of `table`, each row counted once per epoch (occurrences weighted by
    1 / its ratings on `side`): the objective is sum of squared errors + lam * ||table||^2, as in ALS."""

    table: nn.Embedding
    side: Literal["user", "item"]
    lam: float


class RatingModel(nn.Module):
    """forward(user_idx, item_idx) -> rating in the run's range. Index 0 is the unknown user / item.

    Subclasses implement score() (the quantity the loss sees) and may override loss(), to_rating(),
    factor_penalties(), dense_penalty() and after_step()."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[TrainConfig]] = TrainConfig
    uses_text: ClassVar[bool] = False  # True: built with the run's item text table (item_text=...)
    # True: built with each user's training items (history=..., see musicrec.rating.build.build_model)
    uses_history: ClassVar[bool] = False

    def __init__(
        self,
        n_users: int,
        n_items: int,
        global_mean: float,
        cfg: TrainConfig,
        rating_range: RatingRange = (RATING_MIN, RATING_MAX),
        **_: Any,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.rating_range = (float(rating_range[0]), float(rating_range[1]))
        self.register_buffer("global_mean", torch.tensor(float(global_mean), dtype=torch.float32))
        self.user_bias = embedding(n_users, 1, 0.0)
        self.item_bias = embedding(n_items, 1, 0.0)
        self.bias_regs = (5.0, 5.0)  # set by the trainer from the run's tuned bias baseline

    # --- what the model computes ---
    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_rating(self, score: torch.Tensor) -> torch.Tensor:
        return score

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.to_rating(self.score(user_idx, item_idx)).clamp(*self.rating_range)

    def loss(self, score: torch.Tensor, rating: torch.Tensor) -> torch.Tensor:
        return torch.mean((score - rating) ** 2)

    def fit_epoch(self, part: Any) -> float | None:
        """A model fitted in closed form takes its epoch here and returns the part's training loss
        (knn_baseline: epoch 1 adds its neighbourhood term); None: the shared SGD epoch."""
        return None

    def export_module(self) -> nn.Module:
        """The module the ONNX export traces: forward()'s predictions for index inputs. The model itself,
        unless a plainer module computes the same (svdpp folds its history term into a user table)."""
        return self

    def biases(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.global_mean + self.user_bias(user_idx).squeeze(-1) + self.item_bias(item_idx).squeeze(-1)

    # --- the explicit contract the trainer reads ---
    def user_tables(self) -> list[nn.Embedding]:
        return [self.user_bias]

    def item_tables(self) -> list[nn.Embedding]:
        return [self.item_bias]

    def bias_tables(self) -> list[nn.Embedding]:
        return [self.user_bias, self.item_bias]

    def penalties(self) -> list[Penalty]:
        """Biases with the run's tuned bias regularisation, then the family's factor tables."""
        reg_u, reg_i = self.bias_regs if self.cfg.bias_decay is None else (self.cfg.bias_decay,) * 2
        return [
            Penalty(self.user_bias, "user", reg_u),
            Penalty(self.item_bias, "item", reg_i),
            *self.factor_penalties(),
        ]

    def factor_penalties(self) -> list[Penalty]:
        return []

    def table_lr(self, table: nn.Embedding) -> float:
        """The AdaGrad step of a non-bias table: cfg.lr, unless the family gives a table its own."""
        return self.cfg.lr

    def dense_penalty(self) -> torch.Tensor:
        """L2 over dense weights, counted once per epoch (the trainer scales it by the batch's share)."""
        return torch.zeros(())

    def regularization(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        user_weight: torch.Tensor,
        item_weight: torch.Tensor,
        epoch_share: float,
    ) -> torch.Tensor:
        """The batch's share of the penalty, in the same units as the mean data loss of the batch."""
        total = torch.zeros(())
        for pen in self.penalties():
            idx, w = (user_idx, user_weight) if pen.side == "user" else (item_idx, item_weight)
            total = total + pen.lam * (pen.table(idx).pow(2).sum(-1) * w).sum()
        return total / max(len(user_idx), 1) + self.dense_penalty() * epoch_share / max(len(user_idx), 1)

    @torch.no_grad()
    def init_biases(self, user_bias: np.ndarray, item_bias: np.ndarray) -> None:
        """Start from the closed-form bias baseline, so training begins where the baseline ends."""
        self.user_bias.weight.copy_(torch.as_tensor(user_bias, dtype=torch.float32)[:, None])
        self.item_bias.weight.copy_(torch.as_tensor(item_bias, dtype=torch.float32)[:, None])

    def start_from(self, data: Any, user_bias: np.ndarray, item_bias: np.ndarray) -> None:
        """Start training from the run's tuned closed-form biases (families with another link refine them)."""
        self.init_biases(user_bias, item_bias)

    def manual_gradients(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        rating: torch.Tensor,
        user_weight: torch.Tensor,
        item_weight: torch.Tensor,
    ) -> float | None:
        """Families with a closed-form gradient set .grad themselves (faster than autograd on huge sparse
        tables) and return the batch's data loss; None means: use autograd."""
        return None

    def after_step(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> None:
        """Hook for constraints applied after each optimiser step (nnmf)."""


class FactorTables:
    """Mixin for families with user_factors / item_factors tables penalised by cfg.weight_decay."""

    user_factors: nn.Embedding
    item_factors: nn.Embedding

    def user_tables(self) -> list[nn.Embedding]:
        return [*super().user_tables(), self.user_factors]  # type: ignore[misc]

    def item_tables(self) -> list[nn.Embedding]:
        return [*super().item_tables(), self.item_factors]  # type: ignore[misc]

    def factor_penalties(self) -> list[Penalty]:
        lam = self.cfg.weight_decay  # type: ignore[attr-defined]
        return [Penalty(self.user_factors, "user", lam), Penalty(self.item_factors, "item", lam)]


class DotProductGradients:
    """Closed-form gradients for mu + b_u + b_i + p_u . q_i under MSE and the penalties() above. Autograd's
    sparse embedding backward and the second lookup the penalty needs were a large share of every step;
    this computes the same gradients from one lookup and hands them to the optimiser as sparse tensors.
    The fused numba kernel (musicrec.rating.fused) trains these models too: it computes the same update."""

    # after each step, factor rows the batch touched are clamped to at least this (nnmf: 0.0); None: no floor.
    # Declared as data, not code, so the fused kernel applies the same projection as after_step below.
    factor_floor: ClassVar[float | None] = None

    @torch.no_grad()
    def manual_gradients(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        rating: torch.Tensor,
        user_weight: torch.Tensor,
        item_weight: torch.Tensor,
    ) -> float | None:
        m: Any = self
        (lam_bu, lam_bi, lam_p, lam_q) = (pen.lam for pen in m.penalties())
        # index_select copies rows faster than [] on CPU; a side's bias and factors share one gather of ids
        bu, bi = m.user_bias.weight.index_select(0, user_idx), m.item_bias.weight.index_select(0, item_idx)
        p, q = (
            m.user_factors.weight.index_select(0, user_idx),
            m.item_factors.weight.index_select(0, item_idx),
        )
        err = m.global_mean + bu.squeeze(1) + bi.squeeze(1) + (p * q).sum(1) - rating
        scale = 2.0  # gradients of the summed batch loss (the trainer's convention, see RowWiseAdagrad)
        e, wu, wi = err.unsqueeze(1), user_weight.unsqueeze(1), item_weight.unsqueeze(1)
        _set_side_grads(
            m.user_bias.weight,
            m.user_factors.weight,
            user_idx,
            scale * (e + lam_bu * bu * wu),
            scale * (e * q + lam_p * p * wu),
        )
        _set_side_grads(
            m.item_bias.weight,
            m.item_factors.weight,
            item_idx,
            scale * (e + lam_bi * bi * wi),
            scale * (e * p + lam_q * q * wi),
        )
        return float(err.pow(2).mean())

    @torch.no_grad()
    def after_step(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> None:
        m: Any = self
        if self.factor_floor is None:
            return
        for table, idx in ((m.user_factors, user_idx), (m.item_factors, item_idx)):
            rows = torch.unique(idx)
            table.weight.index_copy_(
                0, rows, table.weight.index_select(0, rows).clamp_(min=self.factor_floor)
            )


def _set_side_grads(
    bias: torch.Tensor,
    factors: torch.Tensor,
    rows: torch.Tensor,
    bias_grad: torch.Tensor,
    factor_grad: torch.Tensor,
) -> None:
    """Sparse gradients of one side's bias and factor tables, coalesced once for both (one sort of the ids,
    one summing pass): RowWiseAdagrad then skips its own coalescing."""
    unique, summed = coalesce_rows(rows, torch.cat([bias_grad, factor_grad], 1))
    for weight, values in ((bias, summed[:, :1]), (factors, summed[:, 1:])):
        if weight.requires_grad:
            weight.grad = torch.sparse_coo_tensor(
                unique.unsqueeze(0),
                values.contiguous(),
                weight.shape,
                is_coalesced=True,
                check_invariants=False,
            )


_CONSTRUCTION = threading.Lock()


@contextmanager
def seeded_construction(seed: int) -> Iterator[None]:
    """Build modules inside this. nn.Embedding and nn.Linear draw their first weights from torch's global
    generator, so construction is serialised and seeded: a model built while another thread builds a model
    or a baseline (the threads task runner does both at once) gets exactly the weights it gets alone."""
    with _CONSTRUCTION:
        torch.manual_seed(seed)
        yield


def embedding(rows: int, dim: int, std: float, zero_unknown: bool = False) -> nn.Embedding:
    """A sparse embedding table (sparse gradients keep big tables cheap to update)."""
    emb = nn.Embedding(rows, dim, sparse=True)
    with torch.no_grad():
        emb.weight.normal_(0.0, std) if std > 0 else emb.weight.zero_()
        if zero_unknown:
            emb.weight[0].zero_()
    return emb


def factor_tables(n_users: int, n_items: int, dim: int, std: float) -> tuple[nn.Embedding, nn.Embedding]:
    """User and item latent tables, small random init (the unknown row starts at zero)."""
    return embedding(n_users, dim, std, zero_unknown=True), embedding(n_items, dim, std, zero_unknown=True)


def mlp(sizes: list[int]) -> nn.Sequential:
    """ReLU MLP ending in one output with small weights, so training starts close to the bias model
    (exactly zero would leave the hidden layers without gradient and stall the first epochs). Hidden layers:
    He-initialised weights and zero biases, so the small embeddings, not torch's default random biases,
    decide which units are active (with the default biases most units were constant over the inputs)."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        hidden = nn.Linear(a, b)
        nn.init.kaiming_normal_(hidden.weight, nonlinearity="relu")
        nn.init.zeros_(hidden.bias)
        layers += [hidden, nn.ReLU()]
    out = nn.Linear(sizes[-1], 1)
    nn.init.normal_(out.weight, 0.0, 0.01)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*layers, out)


def logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))
