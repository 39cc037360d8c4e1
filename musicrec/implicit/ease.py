"""ease: EASE (Steck 2019), a closed-form item x item model. B = I - P diag(1/diag P) with
P = (X^T X + l2 I)^-1 (so B's diagonal is 0) and score(u, .) = x_u B, x_u the user's 0/1 items (interaction
weights are not read). l2 is chosen inside fit on validation NDCG@10 from a log grid scaled to the mean
diagonal of X^T X (the mean interactions per item), never on test.

Large catalogues: B is fitted on the max_items items with the most training interactions (ties to the
smaller index) and is zero elsewhere, so an item outside them neither scores nor is scored: it ranks on the
popularity bias alone (musicrec.implicit.itemitem.popularity_bias), below every item B scores positively.
On Last.fm (17,632 artists) validation NDCG@10 is the same with 2,000 to 5,000 items kept, so max_items is
3,000 (benchmarks/RESULTS.md, "Lists: EASE past max_items"); at the seed's 457K items the fit costs what
3,000 items cost.
P is one Cholesky factorisation and inverse per l2 of the grid, in float32 (LAPACK potrf + potri), a third
of the flops of the eigendecomposition of X^T X that the grid shared before, whose products per l2 then cost
as much again.

Served through musicrec.implicit.itemitem: B itself when the kept items fit the served width (`factors`, less
on catalogues past MAX_CELLS), else its truncated SVD B ~ U_r S_r V_r^T, query(u) = x_u U_r S_r and item rows
V_r, the rows of the other items zero. (Keeping instead the largest eigenvalues of X^T X,
K = Q_r diag(e_r/(e_r + l2)) Q_r^T, B's off-diagonal part being K diag(1/(l2 diag P)), kept fewer of the exact
top-10 on the contract's clusters fixture: 0.75 against 0.86 at half rank, l2 = 30, and a lower validation
NDCG@10.)"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import torch

from musicrec.fit.loop import EpochCallback
from musicrec.fit.threads import cpu_threads
from musicrec.implicit.base import ImplicitResult, Interactions, RetrievalModel
from musicrec.implicit.configs import EASEConfig
from musicrec.implicit.itemitem import (
    ItemItemTables,
    choose_setting,
    popularity_bias,
    served_width,
    truncated_svd,
)
from musicrec.metrics.topn import interaction_matrix


class Gram:
    """X^T X over the kept items (module docstring), from which EASE at any l2 is one inverse."""

    def __init__(self, data: Interactions, cfg: EASEConfig) -> None:
        self.x = interaction_matrix(data.users, data.items, data.n_users, data.n_items)
        self.keep = kept_items(np.asarray(self.x.sum(0)).ravel(), cfg.max_items)
        xk = self.x[:, self.keep]
        self.gram = np.asarray((xk.T @ xk).toarray(), np.float32)
        self.mean_diag = max(1.0, float(np.diag(self.gram).mean())) if len(self.keep) else 1.0
        self.cfg, self.bias = cfg, popularity_bias(data)

    def model(self, l2: float) -> ItemItemTables:
        """EASE at this l2, served exactly or at the served width (module docstring)."""
        n, k = self.x.shape[1], len(self.keep)
        p = spd_inverse(self.gram + np.float32(l2) * np.eye(k, dtype=np.float32))
        b = p / -np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        width = served_width(self.cfg.factors, n)
        left, right = np.zeros((n, min(k, width)), np.float32), np.zeros((n, min(k, width)), np.float32)
        if k <= width:
            left[self.keep, np.arange(k)], right[self.keep] = 1.0, b.T
        else:
            u, s, v = truncated_svd(b, width, self.cfg.seed)
            left[self.keep], right[self.keep] = u * s[None, :], v
        return ItemItemTables(self.x, left, right, self.bias)

    def note(self) -> str:
        """The leaderboard's note when B covers part of the catalogue, else ""."""
        items, kept = self.x.shape[1] - 1, len(self.keep)
        if kept >= items:
            return ""
        share = self.x[:, self.keep].nnz / max(1, self.x.nnz)
        return (
            f"fitted on the {kept:,} items with the most interactions of {items:,} (max_items; "
            f"{share:.0%} of the interactions), the others ranked by popularity"
        )

    def grid(self) -> list[dict[str, Any]]:
        """The l2 values fit tries: cfg.l2 alone when set, else the grid times the mean diagonal."""
        if self.cfg.l2 is not None:
            return [{"l2": self.cfg.l2}]
        return [{"l2": f * self.mean_diag} for f in self.cfg.l2_grid]


def kept_items(counts: np.ndarray, max_items: int) -> np.ndarray:
    """The indices, ascending, of the max_items items with the largest counts (ties to the smaller index);
    index 0, the unknown item, never."""
    order = np.argsort(-counts[1:], kind="stable")[:max_items] + 1
    return np.sort(order)


def spd_inverse(a: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix (both triangles), by Cholesky (LAPACK potrf,
    potri): a third of the flops of a general inverse."""
    potrf, potri = scipy.linalg.get_lapack_funcs(("potrf", "potri"), (a,))
    factor, info = potrf(a, lower=True, overwrite_a=True)
    if info == 0:
        inverse, info = potri(factor, lower=True, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"X^T X + l2 I is not positive definite (LAPACK info {info})")
    lower = np.tril(inverse)
    return lower + np.tril(lower, -1).T


class EASE(RetrievalModel):
    """The contract's three class methods for EASE (no epochs: fit tries the l2 grid, refit builds one)."""

    @classmethod
    def fit(
        cls,
        name: str,
        cfg: EASEConfig,
        data: Interactions,
        *,
        threads: int = 1,
        on_epoch: EpochCallback | None = None,
    ) -> ImplicitResult:
        with cpu_threads(threads):
            gram = Gram(data, cfg)
            result = choose_setting(name, cfg, data, gram.grid(), lambda s: gram.model(s["l2"]), on_epoch)
        result.note = gram.note()
        return result

    @classmethod
    def refit(
        cls, name: str, cfg: EASEConfig, data: Interactions, epochs: int, *, threads: int = 1
    ) -> ItemItemTables:
        """EASE on every interaction at the chosen l2 (the grid's middle when none was chosen)."""
        with cpu_threads(threads):
            gram = Gram(data, cfg)
            middle = sorted(cfg.l2_grid)[len(cfg.l2_grid) // 2] * gram.mean_diag
            return gram.model(cfg.l2 if cfg.l2 is not None else middle)

    @classmethod
    def rebuild(
        cls,
        cfg: EASEConfig,
        n_users: int,
        n_items: int,
        state: dict[str, torch.Tensor],
        text: torch.Tensor | None,
    ) -> ItemItemTables:
        return ItemItemTables.from_state(state)
