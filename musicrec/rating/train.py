"""The one trainer all six models share: shuffled index batches, row-wise sparse AdaGrad, early stopping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from musicrec import registry
from musicrec.fit import loop
from musicrec.fit.adagrad import RowWiseAdagrad
from musicrec.fit.loop import EpochCallback
from musicrec.metrics.rating import rmse
from musicrec.rating.base import DotProductGradients, RatingModel
from musicrec.rating.baselines import bias_regs, fit_biases
from musicrec.rating.build import build_for, model_config
from musicrec.rating.configs import TrainConfig
from musicrec.rating.data import Part, TrainData


@dataclass
class FitResult:
    """The trained model (best validation epoch restored) and how training went."""

    name: str
    model: RatingModel
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)  # musicrec.fit.loop's rows, epoch 0 first
    best_epoch: int = 0  # 0: no epoch beat the starting point (the bias baseline's solution)
    fit_seconds: float = 0.0
    ratings_per_second: float = 0.0

    @property
    def epochs(self) -> int:
        """Epochs trained."""
        return max(0, len(self.history) - 1)

    @property
    def initial_val_rmse(self) -> float:
        """Validation RMSE of the starting point (NaN for a refit, which has no validation)."""
        return float(self.history[0].get("val_rmse", float("nan"))) if self.history else float("nan")


def batch_size_for(cfg: TrainConfig, n_train: int) -> int:
    """Explicit batch size, or about 64 steps per epoch clamped to [256, 16384]."""
    return cfg.batch_size if cfg.batch_size > 0 else int(np.clip(n_train // 64, 256, 16384))


def fit_model(
    name: str,
    data: TrainData,
    overrides: dict[str, Any] | None = None,
    *,
    threads: int = 1,
    on_epoch: EpochCallback | None = None,
    fixed_epochs: int | None = None,
) -> FitResult:
    """Train one registered model; stop early when validation RMSE stops improving. With fixed_epochs
    (a refit on all data, which has no validation rows) run exactly that many epochs and keep the last."""
    torch.set_num_threads(max(1, threads))
    cfg = model_config(name, overrides)
    model = build_for(name, data, cfg)
    model.bias_regs = bias_regs(data)
    regs = model.bias_regs if cfg.bias_decay is None else (cfg.bias_decay, cfg.bias_decay)
    model.start_from(data, *fit_biases(data, regs))
    optimizers = _optimizers(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    train = data.parts["train"]
    row_weights = _row_weights(model, cfg, train)

    def train_epoch() -> float:
        return _run_epoch(
            model, train, optimizers, batch_size_for(cfg, len(train)), gen, row_weights, threads
        )

    if fixed_epochs is not None:
        fitted = loop.fixed_epochs(name, train_epoch, fixed_epochs, on_epoch)
    else:
        validation = data.parts["validation"]

        def evaluate() -> dict[str, float]:
            return {"val_rmse": rmse(validation.rating.numpy(), predict(model, validation))}

        rule = loop.Stopping.of(registry.FAMILIES["rating"], patience=cfg.patience, min_delta=1e-5)
        fitted = loop.early_stopping(name, model, train_epoch, evaluate, cfg.epochs, rule, on_epoch)
    return _finish(FitResult(name, model, cfg, fitted.history, fitted.best_epoch), data, fitted.seconds)


def _finish(result: FitResult, data: TrainData, seconds: float) -> FitResult:
    _reset_untrained_items(result.model, data.trained_items)
    result.fit_seconds = seconds
    result.ratings_per_second = len(data.parts["train"]) * result.epochs / max(seconds, 1e-9)
    return result


def _row_weights(model: RatingModel, cfg: TrainConfig, train: Part) -> tuple[torch.Tensor, torch.Tensor]:
    dropped = cfg.id_dropout * len(train)  # the same for every epoch: computed once
    return (
        _inverse_counts(train.user_idx, model.user_bias.num_embeddings, dropped),
        _inverse_counts(train.item_idx, model.item_bias.num_embeddings, dropped),
    )


def _optimizers(model: RatingModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Bias tables start at the tuned closed-form solution and get their own step (bias_lr; 0 freezes
    them). Other embedding tables: row-wise AdaGrad on the rows a batch touches, each at the step the model
    gives it (model.table_lr: cfg.lr unless a family says otherwise). Dense layers (MLPs, GMF's combine
    layer): Adam, with the family's dense decay where it has one."""
    biases = [t.weight for t in model.bias_tables()]
    steps: dict[float, list[torch.Tensor]] = {}
    for t in (*model.user_tables(), *model.item_tables()):
        if t not in model.bias_tables():
            steps.setdefault(model.table_lr(t), []).append(t.weight)
    tables = [p for group in steps.values() for p in group]
    taken = {id(p) for p in (*biases, *tables)}
    dense = [p for p in model.parameters() if id(p) not in taken]
    opts: list[torch.optim.Optimizer] = []
    if cfg.bias_lr > 0:
        opts.append(RowWiseAdagrad(biases, lr=cfg.bias_lr))
    else:
        for p in biases:
            p.requires_grad_(False)
    if tables:
        opts.append(RowWiseAdagrad([{"params": ps, "lr": lr} for lr, ps in steps.items()], lr=cfg.lr))
    if dense:
        opts.append(torch.optim.Adam(dense, lr=cfg.dense_lr, weight_decay=cfg.dense_decay))
    return opts


def _inverse_counts(idx: torch.Tensor, size: int, unknown: float) -> torch.Tensor:
    """1 / (occurrences of each index in training); the unknown row counts as the id-dropout draws."""
    counts = torch.bincount(idx, minlength=size).float()
    counts[0] = max(unknown, 1.0)
    return 1.0 / counts.clamp(min=1.0)


def _run_epoch(
    model: RatingModel,
    part: Part,
    optimizers: list[torch.optim.Optimizer],
    batch: int,
    gen: torch.Generator,
    row_weights: tuple[torch.Tensor, torch.Tensor],
    threads: int = 1,
) -> float:
    closed_form = model.fit_epoch(part)
    if closed_form is not None:
        return closed_form
    if model.cfg.fused and isinstance(model, DotProductGradients):
        from musicrec.rating import fused  # numba: imported only by the models it trains

        if fused.applies(model, optimizers):  # the same updates as below, on `threads` threads
            return fused.run_epoch(model, part, optimizers, batch, gen, row_weights, threads)
    model.train()
    n = len(part)
    inv_u, inv_i = row_weights
    perm = torch.randperm(n, generator=gen)
    total = 0.0
    p_drop = model.cfg.id_dropout
    for start in range(0, n, batch):
        idx = perm[start : start + batch]
        u, i, r = (
            part.user_idx.index_select(0, idx),
            part.item_idx.index_select(0, idx),
            part.rating.index_select(0, idx),
        )
        if p_drop > 0:  # teach the reserved unknown rows what an unseen user / item looks like
            u = u.masked_fill(torch.rand(len(u), generator=gen) < p_drop, 0)
            i = i.masked_fill(torch.rand(len(i), generator=gen) < p_drop, 0)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss = model.manual_gradients(u, i, r, inv_u[u], inv_i[i])
        if loss is None:  # the general path: autograd through score, loss and regularisation
            data_loss = model.loss(model.score(u, i), r)
            # summed over the batch (mean * rows), so a row's gradient does not shrink with the batch size
            ((data_loss + model.regularization(u, i, inv_u[u], inv_i[i], len(idx) / n)) * len(idx)).backward()
            loss = data_loss.item()
        for opt in optimizers:
            opt.step()
        model.after_step(u, i)
        total += loss * len(idx)
    return total / max(n, 1)


@torch.no_grad()
def predict(model: nn.Module, part: Part, batch: int = 262144) -> np.ndarray:
    """Predicted ratings for a part, in row order."""
    model.eval()
    out = [
        model(part.user_idx[s : s + batch], part.item_idx[s : s + batch]) for s in range(0, len(part), batch)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


@torch.no_grad()
def _reset_untrained_items(model: RatingModel, trained: np.ndarray) -> None:
    """Items known only from their text get the learned unknown-item row (w2v_mlp still sees their text)."""
    cold = torch.from_numpy(np.flatnonzero(~trained[1:]) + 1)
    if len(cold) == 0:
        return
    for table in model.item_tables():
        table.weight[cold] = table.weight[0].clone()
