"""HR@k, NDCG@k and Recall@r of an inner-product scorer (score = <query_u, x_i> + b_i) without every user's full
score row, the same numbers as musicrec.ranking.metrics.evaluate_scorer.

These metrics need a held-out item's rank only below cap = max(k, r): a rank of cap or more counts as a miss
for all three. So a user is settled as soon as cap candidates are known to score above the held-out item.
The items are visited in blocks of descending bias (the scores' common part, where most users' higher items
are), each block scored for the users not yet settled; a user still unsettled when the blocks stop paying
(fewer than a quarter of the remaining users settled by the last block), and any user with several held-out
items, is ranked exactly over the whole catalogue as evaluate_scorer does.

Exactness: a candidate counts only if its block score exceeds the held-out item's score (taken in float64)
by more than four times the float32 rounding bound of a dot product of that length (gamma_{f+2} times
|query| max|x| + max|b|, whatever the summation order). The exact ranking's own float32 scores then also put
it strictly above, so a settled user's exact rank is at least cap: undercounting only sends a user to the
exact path. At the seed's size (1,094 validation users, 457K items) the exact path scored every user: about
2 s a validation alone, 4-5 s beside the flow's other fits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from musicrec.ranking.metrics import SCORE_BUDGET, _eval_rows, _summary, cells, scan, user_metrics

FIRST_BLOCK = 4096  # items in the first block; each next one doubles, up to LAST_BLOCK
LAST_BLOCK = 65536
_UNIT = 2.0 ** -24  # float32 unit roundoff


def evaluate_inner_product(query_fn: Callable[[np.ndarray], np.ndarray], item_rows: np.ndarray, item_bias: np.ndarray,
                           users: np.ndarray | None, heldout: sp.csr_matrix, exclude: sp.csr_matrix, k: int = 10,
                           recall_k: int = 50) -> dict[str, float]:
    """evaluate_scorer(coverage=False) for scores query_fn(users) @ item_rows.T + item_bias (float32), with
    ranks computed exactly only below max(k, recall_k) (module docstring). query_fn: user rows -> (b, f)."""
    rows = _eval_rows(heldout, users, None, 0)
    held, excl = heldout[rows], exclude[rows]
    x = torch.as_tensor(np.ascontiguousarray(item_rows, dtype=np.float32))
    b = torch.as_tensor(np.ascontiguousarray(item_bias, dtype=np.float32))
    q = np.ascontiguousarray(query_fn(rows), dtype=np.float32) if len(rows) else np.zeros((0, x.shape[1]), np.float32)
    cap = max(k, recall_k)
    ranks = np.full(held.nnz, cap, np.int64)  # cap or more: a miss for every metric
    settled = _settle(q, x, b, held, excl, cap)
    exact = np.flatnonzero(~settled)
    if len(exact):
        sub_held, sub_excl = held[exact], excl[exact]
        found = _exact_ranks(q[exact], x, b, sub_held, sub_excl)
        hrows, _ = cells(held)
        at = np.flatnonzero(np.isin(hrows, exact))  # CSR order: the exact rows' cells, in the same order
        ranks[at] = found
    per_row = user_metrics(ranks, held, k, recall_k)
    return _summary(per_row, len(rows), None, k)


def _settle(q: np.ndarray, x: torch.Tensor, b: torch.Tensor, held: sp.csr_matrix, excl: sp.csr_matrix,
            cap: int) -> np.ndarray:
    """Which rows have at least cap non-excluded items scoring surely above their one held-out item."""
    n_rows, n_items, f = len(q), x.shape[0], x.shape[1]
    settled = np.zeros(n_rows, bool)
    single = np.flatnonzero(np.diff(held.indptr) == 1)
    if not len(single) or not n_items:
        return settled
    target = held.indices[held.indptr[single]].astype(np.int64)
    xt = x.numpy()[target].astype(np.float64)
    bias = b.numpy()
    t = np.einsum("ij,ij->i", q[single].astype(np.float64), xt) + bias[target]
    gamma = (f + 2) * _UNIT / (1 - (f + 2) * _UNIT)
    bound = gamma * (np.linalg.norm(q[single].astype(np.float64), axis=1) * float(torch.linalg.norm(x, dim=1).max())
                     + float(np.abs(bias).max()))
    threshold = t + 4 * bound  # NaN stays NaN: nothing exceeds it, the row goes to the exact path
    order = np.lexsort((np.arange(n_items), -bias))  # highest bias first
    pos = np.empty(n_items, np.int64)
    pos[order] = np.arange(n_items)
    # each single row's excluded items by position in the order: (local row, position), sorted by position
    erow, eitem = cells(excl[single])
    epos = pos[eitem]
    by_pos = np.argsort(epos, kind="stable")
    erow, epos = erow[by_pos], epos[by_pos]
    counts = np.zeros(len(single), np.int64)
    active = np.arange(len(single))
    lo, size = 0, FIRST_BLOCK
    while lo < n_items and len(active):
        hi = min(n_items, lo + size)
        block = torch.as_tensor(order[lo:hi])
        scores = torch.addmm(b.index_select(0, block), torch.from_numpy(q[single[active]]),
                             x.index_select(0, block).T).numpy()
        thr = threshold[active]
        above = (scores > thr[:, None]).sum(1)
        a, z = np.searchsorted(epos, [lo, hi])
        local = np.full(len(single), -1, np.int64)
        local[active] = np.arange(len(active))
        er, ep = local[erow[a:z]], epos[a:z]
        keep = er >= 0
        er, ep = er[keep], ep[keep]
        wrong = scores[er, ep - lo] > thr[er]  # excluded items counted above: taken back
        above -= np.bincount(er[wrong], minlength=len(active))
        counts[active] += above
        done = counts[active] >= cap
        before = len(active)
        active = active[~done]
        lo, size = hi, min(2 * size, LAST_BLOCK)
        if len(active) and done.sum() * 4 < before:  # the blocks no longer settle many: rank the rest exactly
            break
    settled[single] = counts >= cap
    return settled


def _exact_ranks(q: np.ndarray, x: torch.Tensor, b: torch.Tensor, held: sp.csr_matrix,
                 excl: sp.csr_matrix) -> np.ndarray:
    """Exact held-out ranks (metrics.scan's tie rule) of these rows, from their full score rows in batches."""
    step = max(1, SCORE_BUDGET // max(1, x.shape[0]))
    out = []
    for a in range(0, len(q), step):
        scores = torch.addmm(b, torch.from_numpy(q[a:a + step]), x.T).numpy()
        out.append(scan(scores, held[a:a + step], excl[a:a + step], 0, inplace=True)[0])
    return np.concatenate(out) if out else np.zeros(0, np.int64)
