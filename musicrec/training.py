"""The one trainer all six models share: shuffled index batches, row-wise sparse AdaGrad, early stopping."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from musicrec.checkpoint import BestState
from musicrec.dataset import Part, TrainData
from musicrec.metrics.rating import rmse
from musicrec.models.base import DotProductGradients, RatingModel
from musicrec.models.baselines import bias_regs, fit_biases
from musicrec.models.configs import TrainConfig
from musicrec.models.registry import build_model, model_config
from musicrec.optim import RowWiseAdagrad

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class FitResult:
    """The trained model (best validation epoch restored) and how training went."""

    name: str
    model: RatingModel
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0  # 0: no epoch beat the starting point (the bias baseline's solution)
    initial_val_rmse: float = float("nan")
    fit_seconds: float = 0.0
    ratings_per_second: float = 0.0


def batch_size_for(cfg: TrainConfig, n_train: int) -> int:
    """Explicit batch size, or about 64 steps per epoch clamped to [256, 16384]."""
    return cfg.batch_size if cfg.batch_size > 0 else int(np.clip(n_train // 64, 256, 16384))


def fit_model(name: str, data: TrainData, overrides: dict[str, Any] | None = None, *, threads: int = 1,
              on_epoch: EpochCallback | None = None, fixed_epochs: int | None = None) -> FitResult:
    """Train one registered model; stop early when validation RMSE stops improving. With fixed_epochs
    (a refit on all data, which has no validation rows) run exactly that many epochs and keep the last."""
    torch.set_num_threads(max(1, threads))
    cfg = model_config(name, overrides)
    model = build_model(name, data.users.size, data.items.size, data.global_mean, cfg, data.item_text,
                        data.rating_range)
    model.bias_regs = bias_regs(data)
    regs = model.bias_regs if cfg.bias_decay is None else (cfg.bias_decay, cfg.bias_decay)
    model.start_from(data, *fit_biases(data, regs))
    optimizers = _optimizers(model, cfg)
    if fixed_epochs is not None:
        return _fit_fixed(name, model, cfg, data, optimizers, fixed_epochs, on_epoch, threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    result = FitResult(name, model, cfg)
    train, start = data.parts["train"], time.perf_counter()
    row_weights = _row_weights(model, cfg, train)
    best = rmse(data.parts["validation"].rating.numpy(), predict(model, data.parts["validation"]))
    result.initial_val_rmse, waited = best, 0
    with BestState(model) as kept:  # on disk at the seed's size: one copy of the tables in memory, not two
        kept.keep()
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            loss = _run_epoch(model, train, optimizers, batch_size_for(cfg, len(train)), gen, row_weights, threads)
            val = rmse(data.parts["validation"].rating.numpy(), predict(model, data.parts["validation"]))
            row = {"epoch": epoch, "train_loss": loss, "val_rmse": val, "seconds": time.perf_counter() - t0}
            result.history.append(row)
            if on_epoch:
                on_epoch({"model": name, "epochs": cfg.epochs, **row})
            if val < best - 1e-5:
                best, waited, result.best_epoch = val, 0, epoch
                kept.keep()
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        kept.restore()
    return _finish(result, data, start)


def _fit_fixed(name: str, model: RatingModel, cfg: TrainConfig, data: TrainData,
               optimizers: list[torch.optim.Optimizer], epochs: int, on_epoch: EpochCallback | None,
               threads: int = 1) -> FitResult:
    """Exactly `epochs` epochs on the training part, no validation: the refit of a chosen model on all data."""
    gen = torch.Generator().manual_seed(cfg.seed)
    result, train, start = FitResult(name, model, cfg, best_epoch=epochs), data.parts["train"], time.perf_counter()
    row_weights = _row_weights(model, cfg, train)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        loss = _run_epoch(model, train, optimizers, batch_size_for(cfg, len(train)), gen, row_weights, threads)
        row = {"epoch": epoch, "train_loss": loss, "seconds": time.perf_counter() - t0}
        result.history.append(row)
        if on_epoch:
            on_epoch({"model": name, "epochs": epochs, "val_rmse": float("nan"), **row})
    return _finish(result, data, start)


def _finish(result: FitResult, data: TrainData, start: float) -> FitResult:
    _reset_untrained_items(result.model, data.trained_items)
    result.fit_seconds = time.perf_counter() - start
    n = len(data.parts["train"])
    result.ratings_per_second = n * len(result.history) / max(result.fit_seconds, 1e-9)
    return result


def _row_weights(model: RatingModel, cfg: TrainConfig, train: Part) -> tuple[torch.Tensor, torch.Tensor]:
    dropped = cfg.id_dropout * len(train)  # the same for every epoch: computed once
    return (_inverse_counts(train.user_idx, model.user_bias.num_embeddings, dropped),
            _inverse_counts(train.item_idx, model.item_bias.num_embeddings, dropped))


def _optimizers(model: RatingModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Bias tables start at the tuned closed-form solution and get their own step (bias_lr; 0 freezes
    them). Other embedding tables: row-wise AdaGrad on the rows a batch touches. Dense layers (MLPs,
    GMF's combine layer): Adam, with the family's dense decay where it has one."""
    biases = [t.weight for t in model.bias_tables()]
    tables = [t.weight for t in (*model.user_tables(), *model.item_tables()) if t not in model.bias_tables()]
    taken = {id(p) for p in (*biases, *tables)}
    dense = [p for p in model.parameters() if id(p) not in taken]
    opts: list[torch.optim.Optimizer] = []
    if cfg.bias_lr > 0:
        opts.append(RowWiseAdagrad(biases, lr=cfg.bias_lr))
    else:
        for p in biases:
            p.requires_grad_(False)
    if tables:
        opts.append(RowWiseAdagrad(tables, lr=cfg.lr))
    if dense:
        opts.append(torch.optim.Adam(dense, lr=cfg.dense_lr, weight_decay=cfg.dense_decay))
    return opts


def _inverse_counts(idx: torch.Tensor, size: int, unknown: float) -> torch.Tensor:
    """1 / (occurrences of each index in training); the unknown row counts as the id-dropout draws."""
    counts = torch.bincount(idx, minlength=size).float()
    counts[0] = max(unknown, 1.0)
    return 1.0 / counts.clamp(min=1.0)


def _run_epoch(model: RatingModel, part: Part, optimizers: list[torch.optim.Optimizer], batch: int,
               gen: torch.Generator, row_weights: tuple[torch.Tensor, torch.Tensor], threads: int = 1) -> float:
    if model.cfg.fused and isinstance(model, DotProductGradients):
        from musicrec import fused  # numba: imported only by the models it trains

        if fused.applies(model, optimizers):  # the same updates as below, on `threads` threads
            return fused.run_epoch(model, part, optimizers, batch, gen, row_weights, threads)
    model.train()
    n = len(part)
    inv_u, inv_i = row_weights
    perm = torch.randperm(n, generator=gen)
    total = 0.0
    p_drop = model.cfg.id_dropout
    for start in range(0, n, batch):
        idx = perm[start:start + batch]
        u, i, r = part.user_idx.index_select(0, idx), part.item_idx.index_select(0, idx), part.rating.index_select(0, idx)
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
    out = [model(part.user_idx[s:s + batch], part.item_idx[s:s + batch]) for s in range(0, len(part), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


@torch.no_grad()
def _reset_untrained_items(model: RatingModel, trained: np.ndarray) -> None:
    """Items known only from their text get the learned unknown-item row (w2v_mlp still sees their text)."""
    cold = torch.from_numpy(np.flatnonzero(~trained[1:]) + 1)
    if len(cold) == 0:
        return
    for table in model.item_tables():
        table.weight[cold] = table.weight[0].clone()
