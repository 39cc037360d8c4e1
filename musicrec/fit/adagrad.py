"""Row-wise AdaGrad for sparse embedding gradients: the usual optimiser for very large embedding tables.

torch.optim.SparseAdam keeps two full-size state tables and coalesces through a generic sparse path; on
840K users it spent 70% of each step there. Row-wise AdaGrad keeps one scalar per row. Duplicate rows of a
batch are summed first (one sort of the batch's row ids), so a row seen k times in a batch gets exactly the
step AdaGrad gives its summed gradient; adding each occurrence to the accumulator separately would make that
step up to sqrt(k) larger for popular items.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

EPS = 1e-12  # added to G under the square root
ACC_START = 1.0  # accumulator start: small gradients take plain SGD steps of rate lr


class RowWiseAdagrad(torch.optim.Optimizer):
    """For each touched row r with summed gradient g_r: G[r] += mean(g_r^2); w[r] -= lr * g_r / sqrt(G[r]).

    G starts at `initial` (torch.optim.Adagrad's initial_accumulator_value), not 0: from 0 the very first step
    of every row is lr * sign(g), a full-size step even for a row whose gradient is nearly zero (a bias
    already at its closed-form optimum), which made every model worse than its start after one epoch. With
    gradients of the summed loss (the trainer's convention), initial = 1 makes small gradients take plain
    SGD steps of rate lr and large ones AdaGrad's normalised steps."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 0.05, initial: float = ACC_START) -> None:
        super().__init__(params, {"lr": lr, "initial": initial})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._update(p, self.accumulator(p, group), group["lr"], EPS)

    def accumulator(self, p: torch.Tensor, group: dict | None = None) -> torch.Tensor:
        """The row accumulator G of parameter p, created at `initial` on first use (the fused kernel of
        musicrec.rating.fused updates the same tensor in place, so both paths share the optimiser's state)."""
        group = group or next(g for g in self.param_groups if any(q is p for q in g["params"]))
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.full((p.shape[0],), float(group["initial"]), dtype=p.dtype)
        return state["sum"]

    @staticmethod
    def _update(p: torch.Tensor, acc: torch.Tensor, lr: float, eps: float) -> None:
        rows, values = p.grad._indices()[0], p.grad._values()  # sparse embedding gradients only
        if not p.grad.is_coalesced():  # (manual gradients arrive coalesced)
            rows, values = coalesce_rows(rows, values)
        adagrad_rows(p, acc, rows, values, lr, eps)


class RowAdagrad:
    """The same row-wise step for tables addressed by name, gradients handed in by the caller (the implicit
    family's trainer computes them itself): one accumulator per row, duplicates coalesced first."""

    def __init__(self, tables: dict[str, torch.Tensor], lr: float) -> None:
        self.lr = lr
        self.acc = {name: torch.full((t.shape[0],), ACC_START) for name, t in tables.items()}

    @torch.no_grad()
    def update(
        self,
        name: str,
        table: torch.Tensor,
        rows: torch.Tensor,
        grad: torch.Tensor,
        unique: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """unique: (unique rows, inverse) of `rows` when the caller already has them (tables indexed alike)."""
        rows, g = coalesce_rows(rows, grad.reshape(len(rows), -1), unique)
        adagrad_rows(table.view(table.shape[0], -1), self.acc[name], rows, g, self.lr)


def adagrad_rows(
    table: torch.Tensor,
    acc: torch.Tensor,
    rows: torch.Tensor,
    grad: torch.Tensor,
    lr: float,
    eps: float = EPS,
) -> None:
    """One AdaGrad step of distinct `rows` of a 2-D table with their summed gradients: G[r] += mean(g_r^2);
    w[r] -= lr * g_r / sqrt(G[r] + eps). (G starts at ACC_START, so eps never changes a float32 value.)"""
    acc.index_add_(0, rows, grad.pow(2).mean(1))
    step = grad * (acc.index_select(0, rows) + eps).rsqrt_().unsqueeze(1) * -lr
    table.index_add_(0, rows, step)


def coalesce_rows(
    rows: torch.Tensor, values: torch.Tensor, unique: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique row ids and the sum of each row's gradient values (what a coalesced sparse tensor holds).
    unique: torch.unique(rows, return_inverse=True) when the caller has it already (tables indexed alike)."""
    unique, inverse = unique if unique is not None else torch.unique(rows, return_inverse=True)
    if len(unique) == len(rows):
        return rows, values
    summed = torch.zeros((len(unique), values.shape[1]), dtype=values.dtype)
    summed.index_add_(0, inverse, values)
    return unique, summed
