"""Item kNN with baselines (Koren 2010; Surprise's KNNBaseline, item-based, pearson_baseline similarity).

    r_ui = b_ui + sum_{j in N^k(i; u)} s_ij (r_uj - b_uj) / sum_{j in N^k(i; u)} s_ij

b_ui = mu + b_u + b_i are the run's closed-form bias baseline (musicrec.rating.baselines, shrunk by the
tuned or the configured bias_decay). s_ij is the shrunk pearson-baseline similarity of items i and j over
the users who rated both: sum e_ui e_uj / sqrt(sum e_ui^2 sum e_uj^2) * (n_ij - 1) / (n_ij - 1 + shrinkage),
e = r - b, zero below min_support common users, s_ii = 1. N^k(i; u) are the k items most similar to i
among those u rated; as in Surprise only positive similarities count, and without one the prediction is the
baseline. The similarity is three sparse products of the residual matrix; the sum runs in numba.

Fitting is closed form, through the shared epoch loop: epoch 0 is the baselines alone, epoch 1 adds the
neighbourhood term (later epochs change nothing, so early stopping ends the fit). The prediction depends on
every rating of the user, so the export precomputes the correction for every known user and item as one
dense float32 table and serves a gather + add (KnnTable). Data with more users x items cells than the
config's max_table_cells (50M cells, 200 MB in the graph) is skipped: a leaderboard note, not a failure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from numba import njit
from torch import nn

from musicrec.errors import Skipped
from musicrec.rating.base import RatingModel
from musicrec.rating.configs import KNNBaselineConfig

_STATE = ("history_ptr", "history_items", "residuals", "sim_ptr", "sim_items", "sim_values")


class KNNBaseline(RatingModel):
    name = "knn_baseline"
    config_class = KNNBaselineConfig

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: KNNBaselineConfig, **kw: Any):
        super().__init__(n_users, n_items, global_mean, cfg, **kw)
        empty_ptr = {"history_ptr": n_users + 1, "sim_ptr": n_items + 1}
        for name in _STATE:  # filled by start_from, or by a saved state (sizes follow the data)
            size = empty_ptr.get(name, 0)
            dtype = torch.float32 if name in ("residuals", "sim_values") else torch.int64
            self.register_buffer(name, torch.zeros(size, dtype=dtype))
        # neighbours in effect: 0 = the baselines alone (epoch 0), cfg.k once fitted
        self.register_buffer("neighbours", torch.zeros((), dtype=torch.int64))

    def start_from(self, data: Any, user_bias: np.ndarray, item_bias: np.ndarray) -> None:
        """The baselines, each user's residuals r_uj - b_uj and the item similarities from the training
        ratings; raises Skipped when the export table would exceed the config's cap."""
        cfg: Any = self.cfg
        n_users, n_items = data.users.size, data.items.size
        if n_users * n_items > cfg.max_table_cells:
            raise Skipped(
                f"skipped: {n_users:,} users x {n_items:,} items = {n_users * n_items:,} cells > "
                f"max_table_cells {cfg.max_table_cells:,} (the export's dense kNN table)"
            )
        self.init_biases(user_bias, item_bias)
        train = data.parts["train"]
        users, items, resid = residual_rows(
            train.user_idx.numpy(), train.item_idx.numpy(), train.rating.numpy(), self._baseline_parts()
        )
        e = sp.csr_matrix((resid, (users, items)), shape=(n_users, n_items))
        e.sort_indices()
        s = similarities(e, cfg.shrinkage, cfg.min_support)
        for name, value in zip(
            _STATE, (e.indptr, e.indices, e.data, s.indptr, s.indices, s.data), strict=True
        ):
            setattr(self, name, torch.from_numpy(np.ascontiguousarray(value)).to(getattr(self, name).dtype))

    def fit_epoch(self, part: Any) -> float:
        """Turn the neighbourhood term on; the training loss (MSE on the part) with it. As in Surprise, a
        training row's own rating is its item's most similar neighbour (s_ii = 1), so this loss is far
        below any held-out error: validation, not it, judges the fit."""
        self.neighbours.fill_(self.cfg.k)  # type: ignore[attr-defined]
        with torch.no_grad():
            pred = self(part.user_idx, part.item_idx)
        return float(torch.mean((pred - part.rating) ** 2))

    def _baseline_parts(self) -> tuple[float, np.ndarray, np.ndarray]:
        return (
            float(self.global_mean),
            self.user_bias.weight.detach()[:, 0].double().numpy(),
            self.item_bias.weight.detach()[:, 0].double().numpy(),
        )

    def correction(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """The neighbourhood term for each (user, item) row; zero before fitting or without a neighbour."""
        k = int(self.neighbours)
        if k == 0 or len(user_idx) == 0:
            return torch.zeros(len(user_idx))
        out = _rows(user_idx.numpy().astype(np.int64), item_idx.numpy().astype(np.int64), *self._arrays(), k)
        return torch.from_numpy(out.astype(np.float32))

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, name).numpy() for name in _STATE)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.biases(user_idx, item_idx) + self.correction(user_idx, item_idx)

    @torch.no_grad()
    def export_module(self) -> nn.Module:
        """The same predictions for every known (user, item) from one precomputed correction table."""
        n_users, n_items = self.user_bias.num_embeddings, self.item_bias.num_embeddings
        k = int(self.neighbours)
        table = _table(*self._arrays(), k, n_items) if k else np.zeros((n_users, n_items), np.float32)
        return KnnTable(self, torch.from_numpy(table))

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kw: Any) -> None:
        """A saved state's similarity and history sizes follow its data: take them before loading."""
        for name in _STATE:
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)


class KnnTable(nn.Module):
    """mu + b_u + b_i + c_ui clamped to the rating range, c a fixed (users x items) table: what
    knn_baseline exports, so the served graph needs no ratings (a gather + add)."""

    def __init__(self, model: RatingModel, table: torch.Tensor) -> None:
        super().__init__()
        self.rating_range = model.rating_range
        self.n_items = int(table.shape[1])
        self.register_buffer("global_mean", model.global_mean.detach().clone())
        self.register_buffer("user_bias", model.user_bias.weight.detach()[:, 0].clone())
        self.register_buffer("item_bias", model.item_bias.weight.detach()[:, 0].clone())
        self.register_buffer("table", table.reshape(-1).to(torch.float32).clone())

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        cell = self.table.index_select(0, user_idx * self.n_items + item_idx)
        score = (
            self.global_mean
            + self.user_bias.index_select(0, user_idx)
            + self.item_bias.index_select(0, item_idx)
        )
        return (score + cell).clamp(*self.rating_range)


def residual_rows(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray, baseline: tuple[float, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, r - b) once per distinct pair (a repeated pair's ratings are averaged)."""
    mu, b_u, b_i = baseline
    pair = users.astype(np.int64) * len(b_i) + items
    keys, inverse, counts = np.unique(pair, return_inverse=True, return_counts=True)
    mean = np.bincount(inverse, ratings.astype(np.float64), minlength=len(keys)) / counts
    u, i = keys // len(b_i), keys % len(b_i)
    return u, i, mean - (mu + b_u[u] + b_i[i])


def similarities(e: sp.csr_matrix, shrinkage: float, min_support: int) -> sp.csr_matrix:
    """Positive shrunk pearson-baseline similarities (items x items, sorted CSR) from the users x items
    residual matrix e: on each pair of items rated together, products of the residuals over their common
    users, each item's squared residuals over them, and their count."""
    b = e.copy()
    b.data = np.ones_like(b.data)
    freq = (b.T @ b).tocsr()
    freq.sort_indices()
    rows, cols = freq.nonzero()
    n = freq.data
    prods = _sample((e.T @ e).tocsr(), rows, cols)
    sq = (e.multiply(e).T @ b).tocsr()
    den = np.sqrt(_sample(sq, rows, cols) * _sample(sq, cols, rows))
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where(den > 0, prods / den, 0.0) * (n - 1) / (n - 1 + shrinkage)
    sim[n < min_support] = 0.0
    sim[rows == cols] = 1.0
    keep = sim > 0
    out = sp.csr_matrix((sim[keep], (rows[keep], cols[keep])), shape=freq.shape)
    out.sort_indices()
    return out


def _sample(m: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.asarray(m[rows, cols]).ravel() if len(rows) else np.zeros(0)


@njit(nogil=True, cache=True)
def _average(sims: np.ndarray, res: np.ndarray, count: int, k: int) -> float:
    """sum s e / sum s over the k largest (positive) similarities among the first `count` candidates."""
    if count == 0:
        return 0.0
    s, r = sims[:count], res[:count]
    if count > k:
        top = np.argsort(-s, kind="mergesort")[:k]
        s, r = s[top], r[top]
    return float((s * r).sum() / s.sum())


@njit(nogil=True, cache=True)
def _rows(users, items, h_ptr, h_items, h_res, s_ptr, s_items, s_val, k):  # type: ignore[no-untyped-def]
    """The correction of each (user, item) row: the user's rated items met with the item's neighbours
    (both sorted) in one merge."""
    out = np.zeros(len(users))
    sims = np.empty(0)
    res = np.empty(0)
    for r in range(len(users)):
        u, i = users[r], items[r]
        a, a_end, b, b_end = h_ptr[u], h_ptr[u + 1], s_ptr[i], s_ptr[i + 1]
        if len(sims) < a_end - a:
            sims, res = np.empty(a_end - a), np.empty(a_end - a)
        c = 0
        while a < a_end and b < b_end:
            if h_items[a] == s_items[b]:
                sims[c], res[c] = s_val[b], h_res[a]
                c, a, b = c + 1, a + 1, b + 1
            elif h_items[a] < s_items[b]:
                a += 1
            else:
                b += 1
        out[r] = _average(sims, res, c, k)
    return out


@njit(nogil=True, cache=True)
def _table(h_ptr, h_items, h_res, s_ptr, s_items, s_val, k, n_items):  # type: ignore[no-untyped-def]
    """The correction of every (user, item) cell; row and column 0 (unknown) stay zero. Per user, the
    residuals are scattered over the items once, then each item's neighbour row is read against them."""
    n_users = len(h_ptr) - 1
    out = np.zeros((n_users, n_items), dtype=np.float32)
    rated = np.zeros(n_items, dtype=np.bool_)
    dense = np.zeros(n_items)
    sims, res = np.empty(n_items), np.empty(n_items)
    for u in range(1, n_users):
        lo, hi = h_ptr[u], h_ptr[u + 1]
        if lo == hi:
            continue
        for a in range(lo, hi):
            rated[h_items[a]], dense[h_items[a]] = True, h_res[a]
        for i in range(1, n_items):
            c = 0
            for b in range(s_ptr[i], s_ptr[i + 1]):
                j = s_items[b]
                if rated[j]:
                    sims[c], res[c] = s_val[b], dense[j]
                    c += 1
            out[u, i] = _average(sims, res, c, k)
        for a in range(lo, hi):
            rated[h_items[a]] = False
    return out
