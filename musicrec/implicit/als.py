"""als: weighted alternating least squares for implicit feedback (Hu, Koren, Volinsky 2008), each row's
least-squares problem solved by a few conjugate-gradient steps from its previous value (Takacs, Pilaszy,
Tikk 2011), so an iteration costs O(interactions x factors + rows x factors^2) and scales to 457K items.

Every (user, item) cell has a target, 1 for an interaction and 0 otherwise, and a confidence: 1 + alpha x w
for an interaction, w its weight in Interactions.weights (the run's confidence weight of a play count, 1 for
a rating; duplicate pairs average theirs) over the mean weight of the interactions, 1 for every other cell.
The mean-1 scale makes one alpha fit ratings and play counts alike: with w itself, play counts (a mean
weight near 6.6 on Last.fm) needed alpha near 1 where ratings need 5 (validation NDCG@10 on Last.fm 0.116 at
alpha 5, 0.137 at 0.5-1; on MI ratings 0.054 at 5, 0.052 at 1). One iteration solves every user's row with
the items fixed, then every item's row with the users fixed, minimising the confidence-weighted squared error
plus regularization x the squared norms. Natively an inner product (musicrec.implicit.model.ImplicitMF with
free user rows), plus a tiny popularity bias that ranks the unknown user's items. Early stopping per
iteration on validation NDCG@10 (musicrec.fit.loop); a refit runs the best iteration count.

The kernel is compiled (numba, no GIL held) and run on a small thread pool over row ranges, as the fused
SGD steps are: no numba prange, which the flow's side-by-side fits in Python threads do not allow."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch
from numba import njit

from musicrec import registry
from musicrec.fit.kernels import FASTMATH
from musicrec.fit.loop import EpochCallback, Stopping, early_stopping
from musicrec.fit.threads import cpu_threads
from musicrec.implicit.base import ImplicitResult, Interactions, RetrievalModel
from musicrec.implicit.configs import ALSConfig
from musicrec.implicit.itemitem import popularity_bias
from musicrec.implicit.model import ImplicitMF
from musicrec.implicit.train import validate
from musicrec.metrics.full import sample_users


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def solve_rows(lo, hi, indptr, indices, conf, fixed, gram, reg, rows, cg_steps):  # pragma: no cover
    """rows[lo:hi] <- a few CG steps on (gram + reg I + sum_i (c_i - 1) y_i y_i^T) x = sum_i c_i y_i, the
    sums over row u's cells indices[indptr[u]:indptr[u + 1]] with confidences conf, y_i = fixed[i]."""
    f = fixed.shape[1]
    r = np.empty(f, np.float32)
    p = np.empty(f, np.float32)
    ap = np.empty(f, np.float32)
    for u in range(lo, hi):
        x = rows[u]
        for a in range(f):  # r = b - A x
            s = 0.0
            for b in range(f):
                s += gram[a, b] * x[b]
            r[a] = -s - reg * x[a]
        for k in range(indptr[u], indptr[u + 1]):
            y, c = fixed[indices[k]], conf[k]
            yx = 0.0
            for a in range(f):
                yx += y[a] * x[a]
            scale = c - (c - 1.0) * yx
            for a in range(f):
                r[a] += scale * y[a]
        rs = 0.0
        for a in range(f):
            p[a] = r[a]
            rs += r[a] * r[a]
        for _ in range(cg_steps):
            if rs < 1e-20:
                break
            for a in range(f):  # ap = A p
                s = 0.0
                for b in range(f):
                    s += gram[a, b] * p[b]
                ap[a] = s + reg * p[a]
            for k in range(indptr[u], indptr[u + 1]):
                y, c = fixed[indices[k]], conf[k]
                yp = 0.0
                for a in range(f):
                    yp += y[a] * p[a]
                for a in range(f):
                    ap[a] += (c - 1.0) * yp * y[a]
            pap = 0.0
            for a in range(f):
                pap += p[a] * ap[a]
            step = rs / pap
            new = 0.0
            for a in range(f):
                x[a] += step * p[a]
                r[a] -= step * ap[a]
                new += r[a] * r[a]
            for a in range(f):
                p[a] = r[a] + (new / rs) * p[a]
            rs = new


class Alternation:
    """One model's confidence matrices (users x items and its transpose) and one ALS iteration over them."""

    def __init__(self, cfg: ALSConfig, model: ImplicitMF, data: Interactions, threads: int) -> None:
        w = np.ones(len(data.users), np.float32) if data.weights is None else data.weights
        shape = (data.n_users, data.n_items)
        summed = sp.csr_matrix((np.asarray(w, np.float64), (data.users, data.items)), shape=shape)
        counts = sp.csr_matrix((np.ones(len(w)), (data.users, data.items)), shape=shape)
        summed.sum_duplicates()
        counts.sum_duplicates()  # the same pattern as summed: duplicates average their weights
        weight = summed.data / counts.data
        weight = weight / max(float(weight.mean()), 1e-12)  # a mean of 1: alpha means the same on any scale
        summed.data = (1.0 + cfg.alpha * weight).astype(np.float32)
        self.by_user, self.by_item = summed, summed.T.tocsr()
        self.cfg, self.model, self.threads = cfg, model, max(1, threads)

    def iteration(self) -> float:
        """Users with the items fixed, then items with the users fixed; NaN (no loss is computed)."""
        m = self.model
        self._solve(self.by_user, m.item.detach().numpy(), m.user.detach().numpy())
        self._solve(self.by_item, m.user.detach().numpy(), m.item.detach().numpy())
        return math.nan

    def _solve(self, conf: sp.csr_matrix, fixed: np.ndarray, rows: np.ndarray) -> None:
        gram = (fixed.T @ fixed).astype(np.float32)
        args = (conf.indptr, conf.indices, conf.data, fixed, gram, np.float32(self.cfg.regularization), rows)
        n = rows.shape[0]
        bounds = np.linspace(0, n, self.threads + 1).astype(np.int64)
        if self.threads == 1:
            solve_rows(0, n, *args, self.cfg.cg_steps)
            return
        with ThreadPoolExecutor(self.threads, "musicrec-als") as pool:
            jobs = [
                pool.submit(solve_rows, lo, hi, *args, self.cfg.cg_steps)
                for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
            ]
            for job in jobs:
                job.result()


def new_model(cfg: ALSConfig, data: Interactions) -> ImplicitMF:
    """Small seeded random rows, the popularity tie-break as item bias."""
    model = ImplicitMF(data.n_users, data.n_items, cfg.factors, cfg.init_std, cfg.seed)
    model.item_bias.copy_(torch.from_numpy(popularity_bias(data)))
    return model


class ALS(RetrievalModel):
    """The contract's three class methods for ALS: an epoch is one iteration (users, then items)."""

    @classmethod
    def fit(
        cls,
        name: str,
        cfg: ALSConfig,
        data: Interactions,
        *,
        threads: int = 1,
        on_epoch: EpochCallback | None = None,
    ) -> ImplicitResult:
        with cpu_threads(threads):
            model = new_model(cfg, data)
            step = Alternation(cfg, model, data, threads)
            users = sample_users(np.flatnonzero(np.diff(data.validation.indptr)), cfg.val_users, cfg.seed)
            fitted = early_stopping(
                name,
                model,
                step.iteration,
                lambda: validate(model, users, data.validation, data.exclude),
                cfg.epochs,
                Stopping.of(registry.FAMILIES["retrieval"], patience=cfg.patience),
                on_epoch,
            )
        return ImplicitResult(
            name, cfg, model, fitted.best_epoch, fitted.best, fitted.history, fitted.seconds
        )

    @classmethod
    def refit(
        cls, name: str, cfg: ALSConfig, data: Interactions, epochs: int, *, threads: int = 1
    ) -> ImplicitMF:
        with cpu_threads(threads):
            model = new_model(cfg, data)
            step = Alternation(cfg, model, data, threads)
            for _ in range(epochs):
                step.iteration()
        return model

    @classmethod
    def rebuild(
        cls,
        cfg: ALSConfig,
        n_users: int,
        n_items: int,
        state: dict[str, torch.Tensor],
        text: torch.Tensor | None,
    ) -> ImplicitMF:
        model = ImplicitMF(n_users, n_items, cfg.factors, cfg.init_std, cfg.seed)
        model.load_state_dict(state)
        return model
