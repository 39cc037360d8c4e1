"""transitions: a sequence-aware baseline. In everyone's training sequences (each user's items in time order,
Interactions.order), item j follows item a when it comes 1..window steps later, counted 1/step: T[a, j].
A user is scored by the items that followed their `last` latest items, the latest weighing 1 and the k-th
before it decay^k: score(u, .) = h_u T, plus a tiny popularity bias that orders what the transitions leave
equal. window and decay are chosen inside fit on validation NDCG@10 from a small grid (the held-out item of
the temporal leave-last-out is the one that follows a user's training sequence, which is what this predicts).

Served through musicrec.implicit.itemitem as ease is: T itself up to `factors` items, else a truncated SVD
T ~ U S V^T with query(u) = h_u U S and item rows V. Without times (Interactions.order None) there is no order
to follow: fit raises Skipped (a leaderboard note)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from musicrec.fit.loop import EpochCallback
from musicrec.fit.threads import cpu_threads
from musicrec.implicit.base import ImplicitResult, Interactions, RetrievalModel, Skipped
from musicrec.implicit.configs import TransitionsConfig
from musicrec.implicit.itemitem import (
    ItemItemTables,
    choose_setting,
    exact,
    popularity_bias,
    served_width,
    truncated_svd,
)


class Sequences:
    """Every user's items in time order, and the transition matrices and recency rows built from them."""

    def __init__(self, data: Interactions, cfg: TransitionsConfig) -> None:
        if data.order is None:
            raise Skipped("skipped: the input has no times, so there is no order to follow")
        sort = np.lexsort((np.asarray(data.order), np.asarray(data.users)))  # stable: ties keep pair order
        self.users, self.items = np.asarray(data.users)[sort], np.asarray(data.items)[sort]
        self.n_users, self.n_items, self.cfg = data.n_users, data.n_items, cfg
        self.bias = popularity_bias(data)
        self._served: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def transitions(self, window: int) -> sp.csr_matrix:
        """T[a, j]: the sum of 1/s over every user's item a followed s <= window steps later by item j."""
        rows, cols, vals = [], [], []
        for s in range(1, window + 1):
            same = self.users[:-s] == self.users[s:]
            rows.append(self.items[:-s][same])
            cols.append(self.items[s:][same])
            vals.append(np.full(int(same.sum()), 1.0 / s, np.float32))
        n = self.n_items
        t = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        t.setdiag(0.0)  # an item following itself: the user has it, it is never ranked
        t.eliminate_zeros()
        return t

    def recent(self, decay: float) -> sp.csr_matrix:
        """h_u: each user's `last` latest items, the latest weighing 1 and the k-th before it decay^k."""
        starts = np.searchsorted(self.users, np.arange(self.n_users + 1))
        from_end = starts[self.users + 1] - 1 - np.arange(len(self.users))
        keep = from_end < self.cfg.last
        values = (decay ** from_end[keep]).astype(np.float32)
        shape = (self.n_users, self.n_items)
        return sp.csr_matrix((values, (self.users[keep], self.items[keep])), shape=shape)

    def served(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """(L, R) with T = L R^T exactly, or at rank served_width: one factorisation per window, only the
        latest kept (the grid goes window by window; the best model so far holds its own)."""
        if window not in self._served:
            self._served.clear()
            t = self.transitions(window)
            if exact(self.n_items, self.cfg.factors):
                self._served[window] = (np.eye(self.n_items, dtype=np.float32), t.T.toarray())
            else:
                u, s, v = truncated_svd(t, served_width(self.cfg.factors, self.n_items), self.cfg.seed)
                self._served[window] = (u * s[None, :], v)
        return self._served[window]

    def model(self, setting: dict[str, Any]) -> ItemItemTables:
        left, right = self.served(setting["window"])
        return ItemItemTables(self.recent(setting["decay"]), left, right, self.bias)

    def grid(self) -> list[dict[str, Any]]:
        """Every (window, decay) of the config's grids (an empty grid: the config's value alone)."""
        windows = self.cfg.window_grid or (self.cfg.window,)
        decays = self.cfg.decay_grid or (self.cfg.decay,)
        return [{"window": w, "decay": d} for w, d in itertools.product(windows, decays)]


class Transitions(RetrievalModel):
    """The contract's three class methods (no epochs: fit tries the grid, refit builds the chosen one)."""

    @classmethod
    def fit(
        cls,
        name: str,
        cfg: TransitionsConfig,
        data: Interactions,
        *,
        threads: int = 1,
        on_epoch: EpochCallback | None = None,
    ) -> ImplicitResult:
        with cpu_threads(threads):
            seqs = Sequences(data, cfg)
            return choose_setting(name, cfg, data, seqs.grid(), seqs.model, on_epoch)

    @classmethod
    def refit(
        cls, name: str, cfg: TransitionsConfig, data: Interactions, epochs: int, *, threads: int = 1
    ) -> ItemItemTables:
        """The transitions of every interaction at the config's window and decay (the fit's choice)."""
        with cpu_threads(threads):
            return Sequences(data, cfg).model({"window": cfg.window, "decay": cfg.decay})

    @classmethod
    def rebuild(
        cls,
        cfg: TransitionsConfig,
        n_users: int,
        n_items: int,
        state: dict[str, torch.Tensor],
        text: torch.Tensor | None,
    ) -> ItemItemTables:
        return ItemItemTables.from_state(state)
