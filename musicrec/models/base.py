"""The contract every rating model follows, and the pieces the families share."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from musicrec.data.schema import RATING_MAX, RATING_MIN


@dataclass
class ModelConfig:
    """Hyperparameters of one model; each family overrides some defaults, users override any of them."""

    factors: int = 32
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    epochs: int = 20
    lr: float = 0.01
    bias_lr: float = 0.003
    sparse_optimizer: str = "adagrad"  # "adagrad" (row-wise, fast on huge tables) or "adam" (SparseAdam)
    adagrad_lr_scale: float = 10.0
    weight_decay: float = 1.0
    bias_decay: float = 5.0
    batch_size: int = 0
    patience: int = 5
    id_dropout: float = 0.03
    init_std: float = 0.05
    seed: int = 0

    @classmethod
    def build(cls, defaults: dict[str, Any], overrides: dict[str, Any] | None, model: str) -> ModelConfig:
        """Family defaults, then user overrides; an unknown name is an error that lists the valid ones."""
        known = {f.name for f in fields(cls)}
        merged = {**defaults, **(overrides or {})}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"model {model!r}: unknown hyperparameter(s) {unknown}; valid: {sorted(known)}")
        return cls(**merged)


class RatingModel(nn.Module):
    """forward(user_idx, item_idx) -> rating in [1, 5]. Index 0 is the unknown user / item.

    Subclasses implement score() (the quantity the loss sees) and may override loss(), to_rating()
    and after_step(). Embedding tables are sparse and named user_* / item_* so the trainer and
    cold-start handling can find them.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: ModelConfig,
                 item_text: np.ndarray | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("global_mean", torch.tensor(float(global_mean), dtype=torch.float32))
        self.user_bias = embedding(n_users, 1, 0.0)
        self.item_bias = embedding(n_items, 1, 0.0)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_rating(self, score: torch.Tensor) -> torch.Tensor:
        return score

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.to_rating(self.score(user_idx, item_idx)).clamp(RATING_MIN, RATING_MAX)

    def loss(self, score: torch.Tensor, rating: torch.Tensor) -> torch.Tensor:
        return torch.mean((score - rating) ** 2)

    def biases(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.global_mean + self.user_bias(user_idx).squeeze(-1) + self.item_bias(item_idx).squeeze(-1)

    def regularization(self, user_idx: torch.Tensor, item_idx: torch.Tensor, user_weight: torch.Tensor,
                       item_weight: torch.Tensor) -> torch.Tensor:
        """lambda * sum of squared rows, counted once per row per epoch: each occurrence is weighted by
        1 / (ratings of that user or item). Rare users are shrunk as hard as ALS would shrink them;
        per-occurrence decay would leave a one-rating user's vector almost free to memorise its rating."""
        total = torch.zeros(())
        for name, emb in self.named_children():
            if isinstance(emb, nn.Embedding):
                idx, w = (user_idx, user_weight) if name.startswith("user") else (item_idx, item_weight)
                lam = self.cfg.bias_decay if name.endswith("bias") else self.cfg.weight_decay
                total = total + lam * (emb(idx).pow(2).sum(-1) * w).sum()
        return total / max(len(user_idx), 1)

    @torch.no_grad()
    def init_biases(self, user_bias: np.ndarray, item_bias: np.ndarray) -> None:
        """Start from the closed-form bias baseline, so training begins where the baseline ends."""
        self.user_bias.weight.copy_(torch.as_tensor(user_bias, dtype=torch.float32)[:, None])
        self.item_bias.weight.copy_(torch.as_tensor(item_bias, dtype=torch.float32)[:, None])

    def manual_gradients(self, user_idx: torch.Tensor, item_idx: torch.Tensor, rating: torch.Tensor,
                         user_weight: torch.Tensor, item_weight: torch.Tensor) -> float | None:
        """Families with a closed-form gradient set .grad themselves (faster than autograd on huge sparse
        tables) and return the batch's data loss; None means: use autograd."""
        return None

    def after_step(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> None:
        """Hook for constraints applied after each optimiser step (nnmf)."""

    def item_tables(self) -> list[nn.Embedding]:
        return [m for n, m in self.named_children() if isinstance(m, nn.Embedding) and n.startswith("item")]


class DotProductGradients:
    """Closed-form gradients for mu + b_u + b_i + p_u . q_i under MSE and the frequency-weighted L2 of
    RatingModel.regularization. Autograd's sparse embedding backward and the second lookup the penalty
    needs were half of every step at seed size; this computes the same gradients from one lookup and
    hands them to the optimiser as uncoalesced sparse tensors."""

    @torch.no_grad()
    def manual_gradients(self, user_idx: torch.Tensor, item_idx: torch.Tensor, rating: torch.Tensor,
                         user_weight: torch.Tensor, item_weight: torch.Tensor) -> float | None:
        m: Any = self
        bu, bi = m.user_bias.weight[user_idx], m.item_bias.weight[item_idx]
        p, q = m.user_factors.weight[user_idx], m.item_factors.weight[item_idx]
        err = m.global_mean + bu.squeeze(1) + bi.squeeze(1) + (p * q).sum(1) - rating
        scale = 2.0 / max(len(rating), 1)
        e, wu, wi = err.unsqueeze(1), user_weight.unsqueeze(1), item_weight.unsqueeze(1)
        lam, lam_b = m.cfg.weight_decay, m.cfg.bias_decay
        _set_sparse_grad(m.user_bias.weight, user_idx, scale * (e + lam_b * bu * wu))
        _set_sparse_grad(m.item_bias.weight, item_idx, scale * (e + lam_b * bi * wi))
        _set_sparse_grad(m.user_factors.weight, user_idx, scale * (e * q + lam * p * wu))
        _set_sparse_grad(m.item_factors.weight, item_idx, scale * (e * p + lam * q * wi))
        return float(err.pow(2).mean())


def _set_sparse_grad(weight: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    if weight.requires_grad:
        weight.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, weight.shape, check_invariants=False)


_CONSTRUCTION = threading.Lock()


@contextmanager
def seeded_construction(seed: int) -> Iterator[None]:
    """Build modules inside this. nn.Embedding and nn.Linear draw their first weights from torch's global
    generator, so construction is serialised and seeded: a model built while another thread builds a model
    or a baseline (the threads task runner does both at once) gets exactly the weights it gets alone.
    Without it, the flow's evaluate-baselines task shifted gmf's draws and seed-size results moved by 1e-4."""
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
    (exactly zero would leave the hidden layers without gradient and stall the first epochs)."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    out = nn.Linear(sizes[-1], 1)
    nn.init.normal_(out.weight, 0.0, 0.01)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*layers, out)


def logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))
