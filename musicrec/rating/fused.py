"""The fused training kernel of the dot-product family (models whose step is
DotProductGradients.manual_gradients: gmf, nnmf): the torch path's update, batch by batch, in two numba
kernels instead of ~30 torch calls per batch.

The torch path per batch: gather the rows, err = mu + b_u + b_i + p.q - r, gradients of the summed batch loss
(scale 2, penalties lam * w * row with w the rows' inverse training counts), duplicate rows summed
(coalesce_rows), then one RowWiseAdagrad step per distinct row: G[r] += mean(g_r^2); w[r] -= lr g_r /
sqrt(G[r]), biases with bias_lr, factors with lr; then the model's factor floor (nnmf). Here the same batches
(the same torch.randperm and id-dropout draws, made in Python exactly as the torch path does) go through:

  accumulate(t): for each batch row whose user or item thread t owns (id % threads == t), err from the batch's
      old parameters, and that row's gradient added to its owner's per-row sum (in batch order);
  apply(t):      one AdaGrad step per distinct row thread t owns.

Threads meet at a barrier between the two (every gradient is taken from the batch's old parameters) and after
apply. A row is summed and stepped by its one owner in batch order whatever the thread count, so 1 and 2
threads give bit-identical weights. No numba parallel/prange: the flow trains several models at once in Python
threads, which numba's default threading layer does not allow; these are nogil kernels run from a thread pool.

The tables stay the model's torch tensors, updated in place through .numpy() views; the AdaGrad accumulators
are the optimisers' own state (RowWiseAdagrad.accumulator), so either path can continue the other's training.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from numba import njit

from musicrec.fit.adagrad import EPS, RowWiseAdagrad
from musicrec.fit.kernels import AHEAD, FASTMATH, prefetch, prefetch_row
from musicrec.rating.base import DotProductGradients, RatingModel
from musicrec.rating.data import Part


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def accumulate(
    t: int,
    threads: int,
    start: int,
    end: int,
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    inv_u: np.ndarray,
    inv_i: np.ndarray,
    mu: float,
    user_bias: np.ndarray,
    item_bias: np.ndarray,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    lam: np.ndarray,
    err: np.ndarray,
    slot_u: np.ndarray,
    slot_i: np.ndarray,
    rows_u: np.ndarray,
    rows_i: np.ndarray,
    grad_u: np.ndarray,
    grad_i: np.ndarray,
) -> tuple[int, int]:
    """Rows start..end of the epoch's batch order: the summed gradient of every distinct user / item row that
    thread t owns, [bias, factors...] per row in grad_u / grad_i (row ids in rows_u / rows_i, slot_* maps a
    row id to its place, -1 when absent). err[j] is written by row j's user owner. Returns the counts."""
    k = user_factors.shape[1]
    two = np.float32(2.0)
    lam_bu, lam_bi, lam_p, lam_q = lam[0], lam[1], lam[2], lam[3]
    n_u = 0
    n_i = 0
    for j in range(start, end):
        if j + AHEAD < end:
            a, b = users[j + AHEAD], items[j + AHEAD]
            prefetch_row(user_factors, a)
            prefetch_row(item_factors, b)
            prefetch(user_bias, a, 0)
            prefetch(item_bias, b, 0)
            prefetch(slot_u, a, 0)
            prefetch(slot_i, b, 0)
            prefetch(inv_u, a, 0)
            prefetch(inv_i, b, 0)
        a = users[j]
        b = items[j]
        own_u = threads == 1 or a % threads == t
        own_i = threads == 1 or b % threads == t
        if not (own_u or own_i):
            continue
        p = user_factors[a]
        q = item_factors[b]
        dot = np.float32(0.0)
        for f in range(k):
            dot += p[f] * q[f]
        bu = user_bias[a, 0]
        bi = item_bias[b, 0]
        e = mu + bu + bi + dot - ratings[j]
        ge = two * e
        if own_u:
            err[j] = e
            s, n_u = _slot(a, slot_u, rows_u, grad_u, n_u)
            g, w = grad_u[s], inv_u[a]
            g[0] += two * (e + lam_bu * bu * w)
            for f in range(k):
                g[f + 1] += ge * q[f] + (two * lam_p * w) * p[f]
        if own_i:
            s, n_i = _slot(b, slot_i, rows_i, grad_i, n_i)
            g, w = grad_i[s], inv_i[b]
            g[0] += two * (e + lam_bi * bi * w)
            for f in range(k):
                g[f + 1] += ge * p[f] + (two * lam_q * w) * q[f]
    return n_u, n_i


@njit(nogil=True, cache=True, inline="always")
def _slot(row: int, slot: np.ndarray, rows: np.ndarray, grads: np.ndarray, n: int) -> tuple[int, int]:
    """The place of `row` in this batch's gradient sums (a new zeroed one on its first occurrence), and the
    count of rows so far."""
    s = slot[row]
    if s >= 0:
        return s, n
    slot[row] = n
    rows[n] = row
    grads[n, :] = 0.0
    return n, n + 1


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def apply(
    n: int,
    rows: np.ndarray,
    grads: np.ndarray,
    slot: np.ndarray,
    bias: np.ndarray,
    bias_acc: np.ndarray,
    bias_lr: float,
    factors: np.ndarray,
    factor_acc: np.ndarray,
    lr: float,
    clamp: bool,
    floor: float,
) -> None:
    """RowWiseAdagrad's step for the n summed rows of one side (bias_lr 0: the biases are frozen), then the
    factor floor when clamp; frees the rows' slots for the next batch."""
    k = factors.shape[1]
    for s in range(n):
        if s + AHEAD < n:
            ahead = rows[s + AHEAD]
            prefetch_row(factors, ahead)
            prefetch(factor_acc, ahead, 0)
            if bias_lr > 0:
                prefetch(bias, ahead, 0)
                prefetch(bias_acc, ahead, 0)
        a = rows[s]
        slot[a] = -1
        g = grads[s]
        if bias_lr > 0:
            bias_acc[a] += g[0] * g[0]
            bias[a, 0] -= g[0] * (bias_lr / np.sqrt(bias_acc[a] + EPS))
        sq = np.float32(0.0)
        for f in range(1, k + 1):
            sq += g[f] * g[f]
        factor_acc[a] += sq / k
        step = np.float32(lr / np.sqrt(factor_acc[a] + EPS))
        row = factors[a]
        for f in range(k):
            v = row[f] - g[f + 1] * step
            if clamp and v < floor:
                v = floor
            row[f] = v


def applies(model: RatingModel, optimizers: list[torch.optim.Optimizer]) -> bool:
    """The fused kernel trains this model exactly: cfg.fused, DotProductGradients' own gradients and
    after_step (no override the kernel would not know), only the four tables, row-wise AdaGrad only."""
    cls = type(model)
    if not (
        model.cfg.fused
        and isinstance(model, DotProductGradients)
        and cls.manual_gradients is DotProductGradients.manual_gradients
        and cls.after_step is DotProductGradients.after_step
    ):
        return False
    tables = {id(t.weight) for t in (*model.user_tables(), *model.item_tables())}
    return (
        len(tables) == 4
        and all(id(p) in tables for p in model.parameters())
        and all(isinstance(opt, RowWiseAdagrad) for opt in optimizers)
    )


def run_epoch(
    model: Any,
    part: Part,
    optimizers: list[torch.optim.Optimizer],
    batch: int,
    gen: torch.Generator,
    row_weights: tuple[torch.Tensor, torch.Tensor],
    threads: int = 1,
) -> float:
    """One epoch of the torch path's updates (rating.train._run_epoch) in the fused kernels: mean loss."""
    model.train()
    n, threads = len(part), max(1, threads)
    users, items, ratings = _epoch_order(model, part, batch, gen)
    bias_u, bias_i = (
        _adagrad(model.user_bias.weight, optimizers),
        _adagrad(model.item_bias.weight, optimizers),
    )
    fac_u, fac_i = (
        _adagrad(model.user_factors.weight, optimizers),
        _adagrad(model.item_factors.weight, optimizers),
    )
    lam = np.array([pen.lam for pen in model.penalties()], dtype=np.float32)
    mu = np.float32(model.global_mean.item())
    inv_u, inv_i = (w.numpy() for w in row_weights)
    err = np.zeros(n, dtype=np.float32)
    slot_u = np.full(len(fac_u[0]), -1, dtype=np.int32)
    slot_i = np.full(len(fac_i[0]), -1, dtype=np.int32)
    width = min(batch, n), fac_u[0].shape[1] + 1
    floor = model.factor_floor
    clamp, floor = floor is not None, float(floor or 0.0)
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        rows_u, rows_i = np.empty(width[0], dtype=np.int64), np.empty(width[0], dtype=np.int64)
        grad_u, grad_i = np.empty(width, dtype=np.float32), np.empty(width, dtype=np.float32)
        try:
            for start in range(0, n, batch):
                n_u, n_i = accumulate(
                    t,
                    threads,
                    start,
                    min(start + batch, n),
                    users,
                    items,
                    ratings,
                    inv_u,
                    inv_i,
                    mu,
                    bias_u[0],
                    bias_i[0],
                    fac_u[0],
                    fac_i[0],
                    lam,
                    err,
                    slot_u,
                    slot_i,
                    rows_u,
                    rows_i,
                    grad_u,
                    grad_i,
                )
                if threads > 1:
                    barrier.wait()  # every thread has read the batch's old parameters
                apply(n_u, rows_u, grad_u, slot_u, *bias_u, *fac_u, clamp, floor)
                apply(n_i, rows_i, grad_i, slot_i, *bias_i, *fac_i, clamp, floor)
                if threads > 1:
                    barrier.wait()  # the batch's steps are all taken before the next batch reads
        except BaseException:
            barrier.abort()  # the other threads stop at their next wait instead of waiting forever
            raise

    if threads == 1:
        work(0)
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="musicrec-fused") as pool:
            futures = [pool.submit(work, t) for t in range(threads)]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:  # the original failure, not the BrokenBarrierError it caused in the other threads
            raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    return float(np.dot(err, err)) / max(n, 1)


def _epoch_order(model: Any, part: Part, batch: int, gen: torch.Generator) -> tuple[np.ndarray, ...]:
    """The epoch's rows in the torch path's order, with its id-dropout: the same draws from `gen` in the same
    sequence (the permutation, then per batch the user mask's and the item mask's uniforms)."""
    n, p_drop = len(part), model.cfg.id_dropout
    perm = torch.randperm(n, generator=gen)
    draw_u, draw_i = torch.ones(n), torch.ones(n)  # 1.0: never below p_drop
    if p_drop > 0:
        for start in range(0, n, batch):
            size = min(batch, n - start)
            torch.rand(size, generator=gen, out=draw_u[start : start + size])
            torch.rand(size, generator=gen, out=draw_i[start : start + size])
    users, items = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    ratings = np.empty(n, dtype=np.float32)
    _gather(
        perm.numpy(),
        part.user_idx.numpy(),
        part.item_idx.numpy(),
        part.rating.numpy(),
        draw_u.numpy(),
        draw_i.numpy(),
        np.float32(p_drop),
        users,
        items,
        ratings,
    )
    return users, items, ratings


@njit(nogil=True, cache=True)
def _gather(
    perm: np.ndarray,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    rating: np.ndarray,
    draw_u: np.ndarray,
    draw_i: np.ndarray,
    p_drop: np.float32,
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
) -> None:
    """users[j] = user_idx[perm[j]], or 0 (unknown) where draw_u[j] < p_drop (float32, as torch compares);
    the same for items; ratings[j] = rating[perm[j]]."""
    for j in range(len(perm)):
        if j + AHEAD < len(perm):
            prefetch(user_idx, perm[j + AHEAD], 0)
            prefetch(item_idx, perm[j + AHEAD], 0)
            prefetch(rating, perm[j + AHEAD], 0)
        k = perm[j]
        users[j] = 0 if draw_u[j] < p_drop else user_idx[k]
        items[j] = 0 if draw_i[j] < p_drop else item_idx[k]
        ratings[j] = rating[k]


def _adagrad(
    weight: torch.Tensor, optimizers: list[torch.optim.Optimizer]
) -> tuple[np.ndarray, np.ndarray, float]:
    """(table, accumulator, lr) as numpy views of the live tensors; a table no optimiser holds (frozen biases,
    bias_lr 0) gets lr 0 and is left unchanged."""
    table = weight.detach().numpy()
    for opt in optimizers:
        for group in opt.param_groups:
            if any(p is weight for p in group["params"]):
                return table, opt.accumulator(weight, group).numpy(), float(group["lr"])
    return table, np.zeros(0, dtype=np.float32), 0.0
