"""HR@k, NDCG@k, Recall@r and coverage@k of an inner-product scorer (score = <query_u, x_i> + b_i) without
every user's full score row: what musicrec.metrics.full.evaluate_scorer measures on full rows.

Every item's score is at most |query| |x_j| + b_j (Cauchy-Schwarz). The items are visited in blocks, in
descending order of that bound for a typical user (the median query norm), each block scored for the users
not yet settled. A user is settled after a prefix of that order when
- their held-out item is placed: either cap = max(k, r) non-excluded items already score surely above it
  (its rank is cap or more, a miss for all three metrics), or no item after the prefix can reach its score;
- and, with coverage, no item after the prefix can reach their k-th best score so far (their top-k list is
  within the prefix).
"Can reach" takes the largest g |x_j| + b_j over the items after the prefix, for g the smallest of 32 query
norm levels at or above the user's. A settled user's ranks and list are then computed exactly over their
prefix alone (the same tie rule: the prefix's items in index order); a user still unsettled when the blocks
stop paying is ranked over every item, as evaluate_scorer does, and so are users with several held-out items.

Safety margin: every comparison between scores from different matrix products needs a gap of more than four
times the float32 rounding bound of a dot product of that length (gamma_{f+2} (|query| max|x| + max|b|),
any summation order), so the exact computation agrees with the decision. Timings against full rows:
benchmarks/bounded_eval.py and benchmarks/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np
import scipy.sparse as sp
import torch

from musicrec.metrics.full import SCORE_BUDGET, evaluated_rows, summarize
from musicrec.metrics.topn import cells, scan, top_k, user_metrics

FIRST_BLOCK = 4096  # items in the first block; each next one doubles, up to LAST_BLOCK
LAST_BLOCK = 65536
_UNIT = 2.0**-24  # float32 unit roundoff


def evaluate_inner_product(
    query_fn: Callable[[np.ndarray], np.ndarray],
    item_rows: np.ndarray,
    item_bias: np.ndarray,
    users: np.ndarray | None,
    heldout: sp.csr_matrix,
    exclude: sp.csr_matrix,
    k: int = 10,
    recall_k: int = 50,
    max_users: int | None = None,
    seed: int = 0,
    coverage: bool = False,
) -> dict[str, float]:
    """evaluate_scorer for scores query_fn(users) @ item_rows.T + item_bias (float32), each user ranked over
    the prefix of the items that can matter to them (module docstring). query_fn: user rows -> (b, f)."""
    rows = evaluated_rows(heldout, users, max_users, seed)
    held, excl = heldout[rows], exclude[rows]
    x = torch.as_tensor(np.ascontiguousarray(item_rows, dtype=np.float32))
    b = torch.as_tensor(np.ascontiguousarray(item_bias, dtype=np.float32))
    n_items = x.shape[0]
    q = (
        np.ascontiguousarray(query_fn(rows), dtype=np.float32)
        if len(rows)
        else np.zeros((0, x.shape[1]), np.float32)
    )
    cap = max(k, recall_k)
    ranks = np.full(held.nnz, cap, np.int64)  # cap or more: a miss for every metric
    seen = np.zeros(n_items, bool) if coverage else None
    order, prefix, needs_scan = _prefixes(q, x, b, held, excl, cap, k if coverage else 0)
    hrows, _ = cells(held)
    for p in np.unique(prefix):
        group = np.flatnonzero((prefix == p) & needs_scan)
        if not len(group):
            continue
        cols = np.sort(order[:p]) if p < n_items else np.arange(n_items)
        found, lists = _ranks_over(q[group], x, b, cols, held[group], excl[group], k if coverage else 0)
        at = np.flatnonzero(np.isin(hrows, group))  # CSR order: the group's cells, in the same order
        ranks[at] = np.where(found >= 0, found, cap)
        if seen is not None:
            seen[lists[lists >= 0]] = True
    return summarize(user_metrics(ranks, held, k, recall_k), len(rows), seen, k)


def _prefixes(
    q: np.ndarray,
    x: torch.Tensor,
    b: torch.Tensor,
    held: sp.csr_matrix,
    excl: sp.csr_matrix,
    cap: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The item order, and per row the length of the prefix of it that the row is ranked over (n_items: all of
    them) and whether it needs that ranking (not when its item is surely past cap and no list is wanted)."""
    n_rows, n_items, f = len(q), x.shape[0], x.shape[1]
    xn, bias = x.numpy(), b.numpy()
    norms = torch.linalg.vector_norm(x, dim=1, dtype=torch.float64).numpy()  # no float64 copy of the table
    q64 = q.astype(np.float64)
    qnorm_all = np.linalg.norm(q64, axis=1)
    typical = float(np.median(qnorm_all)) if n_rows else 0.0
    order = np.lexsort((np.arange(n_items), -(bias + typical * norms)))  # best bound for a typical user first
    prefix = np.full(n_rows, n_items, np.int64)
    needs = np.ones(n_rows, bool)
    single = np.flatnonzero(np.diff(held.indptr) == 1)
    if not len(single) or not n_items:
        return order, prefix, needs
    target = held.indices[held.indptr[single]].astype(np.int64)
    q64, qnorm = q64[single], qnorm_all[single]
    t = np.einsum("ij,ij->i", q64, xn[target].astype(np.float64)) + bias[target]
    ends = _block_ends(n_items)
    grid, reach_at = _reach(qnorm, norms[order], bias[order].astype(np.float64), ends)
    g_row = np.minimum(np.searchsorted(grid, qnorm), len(grid) - 1)  # grid[g_row] >= the row's |query|
    gamma = (f + 2) * _UNIT / (1 - (f + 2) * _UNIT)
    eps = 4 * gamma * (qnorm * norms.max() + float(np.abs(bias).max()))
    above_thr = t + eps  # NaN stays NaN: nothing exceeds it, the row is ranked over every item
    # each single row's excluded items by position in the order: (local row, position), sorted by position
    pos = np.empty(n_items, np.int64)
    pos[order] = np.arange(n_items)
    erow, eitem = cells(excl[single])
    epos = pos[eitem]
    by_pos = np.argsort(epos, kind="stable")
    erow, epos = erow[by_pos], epos[by_pos]
    counts = np.zeros(len(single), np.int64)
    top = np.full((len(single), max(k, 1)), -np.inf, np.float32)
    active = np.arange(len(single))
    local = np.full(len(single), -1, np.int64)
    for e, (lo, hi) in enumerate(pairwise(ends)):
        if not len(active):
            break
        block = torch.as_tensor(order[lo:hi])
        xb, bb = x.index_select(0, block).T, b.index_select(0, block)
        a, z = np.searchsorted(epos, [lo, hi])
        step = max(1, SCORE_BUDGET // (hi - lo))
        for c in range(0, len(active), step):  # at most SCORE_BUDGET score cells at a time
            part = active[c : c + step]
            scores = torch.addmm(bb, torch.from_numpy(q[single[part]]), xb).numpy()
            local[part] = np.arange(len(part))
            er, ep = local[erow[a:z]], epos[a:z]
            keep = er >= 0
            scores[er[keep], ep[keep] - lo] = -np.inf  # excluded: never above anything, never listed
            local[part] = -1
            counts[part] += (scores > above_thr[part][:, None]).sum(1)
            if k:
                width = min(k, hi - lo)
                none = sp.csr_matrix(scores.shape, dtype=np.float32)
                idx = top_k(scores, none, width, inplace=True)  # compiled
                best = np.where(idx >= 0, np.take_along_axis(scores, np.maximum(idx, 0), 1), -np.inf)
                top[part] = -np.partition(-np.concatenate([top[part], best], axis=1), k - 1, axis=1)[:, :k]
        reach = reach_at[g_row[active], e + 1]  # the best score any item after the prefix can have
        placed = (counts[active] >= cap) | (reach + eps[active] < t[active])
        listed = (reach + eps[active] < top[active, k - 1]) if k else True  # top: the k best so far
        done = placed & listed
        settled = active[done]
        prefix[single[settled]] = hi
        needs[single[settled]] = (counts[settled] < cap) | bool(k)
        before = len(active)
        active = active[~done]
        if len(active) and done.sum() * 4 < before and hi >= n_items // 8:  # rank the rest over every item
            break
    return order, prefix, needs


def _block_ends(n_items: int) -> np.ndarray:
    """0, then the end of each block: FIRST_BLOCK items, each next one twice the last, up to LAST_BLOCK."""
    ends, size = [0], FIRST_BLOCK
    while ends[-1] < n_items:
        ends.append(min(n_items, ends[-1] + size))
        size = min(2 * size, LAST_BLOCK)
    return np.asarray(ends, np.int64)


def _reach(
    qnorm: np.ndarray, norms: np.ndarray, bias: np.ndarray, ends: np.ndarray, levels: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(grid, reach): grid, ascending query norms covering qnorm; reach[g, e] = the largest g |x_j| + b_j over
    the items from ends[e] on (in the order given), -inf past the last: with grid[g] >= |q|, a bound on
    <q, x_j> + b_j (Cauchy-Schwarz)."""
    grid = np.unique(np.append(np.quantile(qnorm, np.linspace(0, 1, levels)), qnorm.max()))
    reach = np.full((len(grid), len(ends)), -np.inf)
    for e in range(len(ends) - 2, -1, -1):  # block maxima, then the running maximum from the end
        a, z = ends[e], ends[e + 1]
        reach[:, e] = np.maximum(reach[:, e + 1], (grid[:, None] * norms[None, a:z] + bias[None, a:z]).max(1))
    return grid, reach


def _ranks_over(
    q: np.ndarray,
    x: torch.Tensor,
    b: torch.Tensor,
    cols: np.ndarray,
    held: sp.csr_matrix,
    excl: sp.csr_matrix,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact held-out ranks (-1 for an item outside cols) and top-k lists (items, -1 padded) of these rows
    over the items cols (sorted), from their score rows in batches (musicrec.metrics.topn's tie rule)."""
    full = len(cols) == x.shape[0]
    xs, bs = (
        (x, b)
        if full
        else (x.index_select(0, torch.from_numpy(cols)), b.index_select(0, torch.from_numpy(cols)))
    )
    hs, es = (held, excl) if full else (held[:, cols], excl[:, cols])  # columns renumbered in cols' order
    inside = np.ones(held.nnz, bool) if full else _member(held, cols)
    step = max(1, SCORE_BUDGET // max(1, len(cols)))
    ranks, lists = [], []
    for a in range(0, len(q), step):
        scores = torch.addmm(bs, torch.from_numpy(q[a : a + step]), xs.T).numpy()
        r, top = scan(scores, hs[a : a + step], es[a : a + step], k, inplace=True)
        ranks.append(r)
        lists.append(np.where(top >= 0, cols[np.maximum(top, 0)], -1))
    found = np.full(held.nnz, -1, np.int64)
    found[inside] = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    return found, (np.concatenate(lists) if lists else np.zeros((0, k), np.int64))


def _member(m: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
    """Whether each stored cell's column is among cols (sorted)."""
    at = np.minimum(np.searchsorted(cols, m.indices), len(cols) - 1)
    return cols[at] == m.indices
