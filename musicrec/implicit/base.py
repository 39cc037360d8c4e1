"""The contract every retrieval model follows: one class per kind, registered in musicrec.registry.

A kind declares its typed config (on the registry line) and three class methods: fit on the leave-last-out
training interactions (judged on validation NDCG@10, best epoch kept), refit on every interaction for a given
number of epochs, and rebuild a saved model from its .npz state. Whatever the kind computes, a fitted model is
an InnerProductTables module: score(u, i) = <query(u), q_i> + b_i. So one export (a user tower in ONNX plus
an item table for faiss), one runtime and one evaluation serve every kind, and a closed-form or alternating
model fits the same contract as the SGD losses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from musicrec.errors import Skipped as Skipped  # re-exported: the implicit kinds raise it
from musicrec.fit.loop import EpochCallback


@dataclass(frozen=True)
class Interactions:
    """What a retrieval model fits on: (user index, item index) pairs (index 0 is the unknown row, never an
    interaction), the table sizes, the validation items and what validation excludes (None for a refit),
    the items' text vectors (None when the run has none or the model does not use them), each pair's
    confidence weight, its share of the loss (None: every pair weighs 1, as for ratings), and each pair's
    place in its user's time order (bigger = later, compared within a user only; None when the input has no
    times). Only the sequence-aware kinds read the order; the pairs themselves arrive in any order."""

    users: np.ndarray
    items: np.ndarray
    n_users: int
    n_items: int
    validation: sp.csr_matrix | None = None
    exclude: sp.csr_matrix | None = None
    text: np.ndarray | None = None
    weights: np.ndarray | None = None
    order: np.ndarray | None = None


@dataclass
class ImplicitResult:
    """The fitted model at its best epoch, with the per-epoch history (epoch 0 = untrained), and a note for
    the leaderboard when the fit covered less than the run's data (e.g. ease above max_items)."""

    name: str
    config: Any
    model: Any  # an InnerProductTables module
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    fit_seconds: float = 0.0
    note: str = ""


class RetrievalModel(ABC):
    """A retrieval model kind. Subclasses implement the three class methods; the pipeline does the rest
    (validation users, test metrics, saving, the ensemble, export and promotion)."""

    @classmethod
    @abstractmethod
    def fit(
        cls,
        name: str,
        cfg: Any,
        data: Interactions,
        *,
        threads: int = 1,
        on_epoch: EpochCallback | None = None,
    ) -> ImplicitResult:
        """Fit on data.users/items, choose the best epoch on data.validation (excluding data.exclude)."""

    @classmethod
    @abstractmethod
    def refit(cls, name: str, cfg: Any, data: Interactions, epochs: int, *, threads: int = 1) -> nn.Module:
        """Fit on every interaction for `epochs` epochs (the held-out fit's best), without validation."""

    @classmethod
    @abstractmethod
    def rebuild(
        cls, cfg: Any, n_users: int, n_items: int, state: dict[str, torch.Tensor], text: torch.Tensor | None
    ) -> nn.Module:
        """The saved model from its state_dict (read from .npz, never a pickle)."""
