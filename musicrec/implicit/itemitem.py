"""What the item x item kinds (ease, transitions) share: their served tables, the low-rank factorisation
that keeps those tables small, and the choice of their few settings on validation.

Such a kind scores score(u, i) = h_u . M[:, i] + b_i for a sparse user row h_u over items (the user's items,
or their latest ones weighted by recency) and an item x item matrix M. Served as an inner product that is
query(u) = h_u L and item rows R with M ~ L R^T: exactly (L = I, R = M^T) when the catalogue has at most
`factors` items, else a rank-`factors` factorisation, so the user tower and the item table stay small."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from musicrec.fit.loop import EpochCallback
from musicrec.implicit.base import ImplicitResult, Interactions
from musicrec.implicit.model import InnerProductTables
from musicrec.implicit.train import validate
from musicrec.metrics.full import sample_users

# items x served width above which the width shrinks below cfg.factors (the ensemble's serving budget, see
# musicrec.pipeline.champion_retrieval.ENSEMBLE_CELLS): a 457K-item catalogue gets 109 dimensions
MAX_CELLS = 50_000_000
TIE_WEIGHT = 1e-3  # the popularity bias's largest value: it orders items the user's rows leave equal


class ItemItemTables(InnerProductTables, nn.Module):
    """score(u, i) = <h_u L, R_i> + b_i: h_u the user's sparse item row (CSR buffers), L and R the factors."""

    def __init__(self, rows: sp.csr_matrix, left: np.ndarray, right: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("row_ptr", torch.as_tensor(rows.indptr.astype(np.int64)))
        self.register_buffer("row_items", torch.as_tensor(rows.indices.astype(np.int64)))
        self.register_buffer("row_values", torch.as_tensor(rows.data.astype(np.float32)))
        self.register_buffer("left", torch.as_tensor(np.ascontiguousarray(left, np.float32)))
        self.register_buffer("right", torch.as_tensor(np.ascontiguousarray(right, np.float32)))
        self.register_buffer("item_bias", torch.as_tensor(np.asarray(bias, np.float32)))

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> ItemItemTables:
        """The saved model (shapes from the state itself)."""
        parts = (state[k].numpy() for k in ("row_values", "row_items", "row_ptr"))
        rows = sp.csr_matrix(tuple(parts), shape=(len(state["row_ptr"]) - 1, len(state["item_bias"])))
        model = cls(rows, state["left"].numpy(), state["right"].numpy(), state["item_bias"].numpy())
        model.load_state_dict(state)
        return model

    def query(self, users: torch.Tensor) -> torch.Tensor:
        """h_u L for each user (zero for a user without items)."""
        start, count = self.row_ptr[users], self.row_ptr[users + 1] - self.row_ptr[users]
        segment = torch.repeat_interleave(torch.arange(len(users)), count)
        offset = torch.arange(len(segment)) - torch.repeat_interleave(count.cumsum(0) - count, count)
        at = start.index_select(0, segment) + offset
        rows = self.left.index_select(0, self.row_items[at]) * self.row_values[at, None]
        return torch.zeros(len(users), self.left.shape[1]).index_add_(0, segment, rows)

    def item_vectors(self) -> torch.Tensor:
        return self.right

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.query(user_idx) * self.right[item_idx]).sum(-1) + self.item_bias[item_idx]


def served_width(factors: int, n_items: int) -> int:
    """The rank a catalogue of n_items is served at: cfg.factors, less where MAX_CELLS says so."""
    return max(1, min(factors, MAX_CELLS // max(1, n_items)))


def exact(n_items: int, factors: int) -> bool:
    """Whether M is served as it is (L = I): the catalogue has at most `factors` items."""
    return n_items <= factors


def truncated_svd(
    matrix: np.ndarray | sp.spmatrix, rank: int, seed: int = 0, power: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U, s, V) of the best rank-`rank` approximation U diag(s) V^T of a square matrix, dense or sparse, by
    randomised subspace iteration (Halko et al. 2011), in float32: only products with the matrix. The tall
    n x k blocks are orthonormalised and decomposed through their k x k Gram matrices (matrix products),
    not by LAPACK's QR and SVD of the tall blocks, which are far slower at n in the hundreds of thousands."""
    n = matrix.shape[0]
    k = min(n, rank + 10)
    a = matrix.astype(np.float32)
    y = a @ np.random.default_rng(seed).standard_normal((n, k), dtype=np.float32)
    # at most two n x k blocks alive at once (each dropped as soon as the next is made)
    for _ in range(power):
        q = orthonormal(np.asarray(y), passes=1)  # conditioning only: the last basis is the exact one
        del y
        t = np.asarray(a.T @ q)
        del q
        y = a @ t
        del t
    q = orthonormal(np.asarray(y), passes=1)
    del y
    q = orthonormal(q, passes=1)  # the second pass of CholeskyQR2, the first block dropped before it
    b = np.asarray(a.T @ q)  # n x k: a^T q, so a ~ q b^T
    w, u = np.linalg.eigh((b.T @ b).astype(np.float64))  # b^T b = u diag(s^2) u^T
    order = np.argsort(w)[::-1][:rank]
    s = np.sqrt(np.maximum(w[order], 0.0))
    u = u[:, order].astype(np.float32)
    v = b @ u
    del b
    v /= np.maximum(s, 1e-30).astype(np.float32)[None, :]
    return q @ u, s.astype(np.float32), v


def orthonormal(y: np.ndarray, passes: int = 2) -> np.ndarray:
    """An orthonormal basis of y's columns (n x k, n >> k) by Cholesky-QR, done twice by default
    (CholeskyQR2): per pass a k x k Gram matrix and one product, the directions of a (near) zero Gram
    eigenvalue dropped. One pass leaves columns orthonormal to about the Gram's condition x 1e-7."""
    q = y.astype(np.float32, copy=False)
    for _ in range(passes):
        w, v = np.linalg.eigh((q.T @ q).astype(np.float64))
        keep = w > w.max() * 1e-10 if w.max() > 0 else np.zeros_like(w, bool)
        q = q @ (v[:, keep] / np.sqrt(w[keep])[None, :]).astype(np.float32)
    return q


def popularity_bias(data: Interactions) -> np.ndarray:
    """TIE_WEIGHT x each item's share of the top count: orders what the item x item scores leave equal, and
    ranks by popularity a user the model does not know (the unknown row of the export)."""
    counts = np.bincount(data.items, minlength=data.n_items).astype(np.float64)
    counts[0] = 0.0
    return (TIE_WEIGHT * counts / max(1.0, counts.max())).astype(np.float32)


def choose_setting(
    name: str,
    cfg: Any,
    data: Interactions,
    settings: list[dict[str, Any]],
    build: Callable[[dict[str, Any]], ItemItemTables],
    on_epoch: EpochCallback | None = None,
) -> ImplicitResult:
    """Fit one model per setting and keep the best on validation NDCG@10 (data.validation, excluding
    data.exclude, on cfg.val_users sampled users). The history is the fit loop's (musicrec.fit.loop): epoch 0
    is the start (the popularity bias alone), epoch k the k-th setting; the result's config holds the chosen
    setting, so a refit builds that one model."""
    t0 = time.perf_counter()
    users = sample_users(np.flatnonzero(np.diff(data.validation.indptr)), cfg.val_users, cfg.seed)
    empty = sp.csr_matrix((data.n_users, data.n_items), dtype=np.float32)
    zeros = np.zeros((data.n_items, 1), np.float32)
    best_model = ItemItemTables(empty, zeros, zeros, popularity_bias(data))
    history = [_row(0, len(settings), validate(best_model, users, data.validation, data.exclude), 0.0, 0.0)]
    best, best_epoch = history[0]["ndcg@10"], 0
    for epoch, setting in enumerate(settings, 1):
        t = time.perf_counter()
        model = build(setting)
        fit_s = time.perf_counter() - t
        metrics = validate(model, users, data.validation, data.exclude)
        row = _row(epoch, len(settings), metrics, fit_s, time.perf_counter() - t - fit_s)
        history.append(row)
        if on_epoch is not None:
            on_epoch({"model": name, **row, "metric": "ndcg@10", "value": row["ndcg@10"]})
        if row["ndcg@10"] > best:
            best, best_epoch, best_model = row["ndcg@10"], epoch, model
    chosen = cfg.model_copy(update=settings[best_epoch - 1]) if best_epoch else cfg
    seconds = time.perf_counter() - t0
    return ImplicitResult(name, chosen, best_model, best_epoch, history[best_epoch], history, seconds)


def _row(epoch: int, epochs: int, metrics: dict[str, float], seconds: float, eval_s: float) -> dict[str, Any]:
    """A history row with the keys of musicrec.fit.loop's (no loss: nothing is minimised step by step)."""
    return {
        "epoch": epoch,
        "epochs": epochs,
        "loss": float("nan"),
        **metrics,
        "seconds": seconds,
        "eval_seconds": eval_s,
    }
