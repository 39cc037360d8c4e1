"""Full-ranking evaluation of a scorer: mean HR@k, NDCG@k, Recall@k and coverage@k over users, every item
ranked (musicrec.metrics.topn: the tie rule and the formulas), from score rows in batches, from one global
item order (most-popular) or from a uniformly random ranking drawn directly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from musicrec.metrics.topn import cells, scan, user_metrics

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user indices (b,) -> scores (b, n_items)
SCORE_BUDGET = 1 << 24  # score cells per batch (64 MB of float32)


def sample_users(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """All users (sorted), or a fixed seeded sample of max_users of them (sorted): same seed, same users."""
    users = np.unique(np.asarray(users, dtype=np.int64))
    if max_users is None or len(users) <= max_users:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))


def evaluate_scorer(
    score_fn: ScoreFn,
    users: np.ndarray | None,
    heldout: sp.csr_matrix,
    exclude: sp.csr_matrix,
    n_items: int,
    k: int = 10,
    recall_k: int = 50,
    batch: int | None = None,
    max_users: int | None = None,
    seed: int = 0,
    coverage: bool = True,
) -> dict[str, float]:
    """Mean hr@k, ndcg@k, recall@recall_k (and coverage@k of the top-k lists) over users, scored in batches.

    heldout and exclude are CSR matrices indexed by user (rows) and item; users defaults to every row with a
    held-out item; rows without one are skipped. batch defaults to SCORE_BUDGET // n_items users."""
    rows = evaluated_rows(heldout, users, max_users, seed)
    step = batch or max(1, SCORE_BUDGET // max(1, n_items))
    parts: list[dict[str, np.ndarray]] = []
    seen = np.zeros(n_items, bool) if coverage else None
    for a in range(0, len(rows), step):
        part = rows[a : a + step]
        scores, held, excl = score_fn(part), heldout[part], exclude[part]
        if scores.shape != (len(part), n_items):
            raise ValueError(f"score_fn returned {scores.shape}, expected {(len(part), n_items)}")
        ranks, lists = scan(scores, held, excl, k if seen is not None else 0, inplace=True)  # not used after
        parts.append(user_metrics(ranks, held, k, recall_k))
        if seen is not None:
            seen[lists[lists >= 0]] = True
    names = (f"hr@{k}", f"ndcg@{k}", f"recall@{recall_k}")
    per_row = {n: np.concatenate([p[n] for p in parts]) if parts else np.zeros(0) for n in names}
    return summarize(per_row, len(rows), seen, k)


def evaluated_rows(
    heldout: sp.csr_matrix, users: np.ndarray | None, max_users: int | None, seed: int
) -> np.ndarray:
    """The rows an evaluation covers: the given users (default: all) that have a held-out item, sampled."""
    rows = np.flatnonzero(np.diff(heldout.indptr)) if users is None else np.asarray(users, dtype=np.int64)
    return sample_users(rows[np.diff(heldout.indptr)[rows] > 0], max_users, seed)


def summarize(
    per_row: dict[str, np.ndarray], n_rows: int, seen: np.ndarray | None, k: int
) -> dict[str, float]:
    """Means over the rows of the per-row metrics, coverage@k of the listed items, the row count."""
    out = {name: float(values.sum()) / max(1, n_rows) for name, values in per_row.items()}
    if seen is not None:
        out[f"coverage@{k}"] = float(seen.sum()) / max(1, len(seen))
    out["users"] = float(n_rows)
    return out


def evaluate_static(
    item_scores: np.ndarray,
    users: np.ndarray | None,
    heldout: sp.csr_matrix,
    exclude: sp.csr_matrix,
    k: int = 10,
    recall_k: int = 50,
    max_users: int | None = None,
    seed: int = 0,
    coverage: bool = True,
) -> dict[str, float]:
    """evaluate_scorer for a scorer that gives every user the same item scores (most-popular), exactly, by
    one global order instead of a users x items score matrix: an item's rank is its position in the order
    (same tie rule) less the user's excluded items ahead of it; a top-k list is the first k of the order that
    the user did not interact with."""
    scores = np.asarray(item_scores, dtype=np.float32)
    n_items = len(scores)
    rows = evaluated_rows(heldout, users, max_users, seed)
    held, excl = heldout[rows], exclude[rows]
    _, items = cells(held)
    if not np.isfinite(scores[items]).all():
        raise ValueError("a held-out item has a NaN or infinite score: its rank is undefined")
    nan = np.isnan(scores)
    order = np.lexsort((np.arange(n_items), -np.where(nan, 0.0, scores), nan))  # NaN last, then by index
    pos = np.empty(n_items, np.int64)
    pos[order] = np.arange(n_items)
    pair_held, _, eitem = _pairs(held, excl)
    ahead = np.bincount(pair_held, pos[eitem] < pos[items[pair_held]], minlength=len(items)).astype(np.int64)
    per_row = user_metrics(pos[items] - ahead, held, k, recall_k)
    seen = None
    if coverage:
        seen = np.zeros(n_items, bool)
        # -inf and NaN are never listed
        listed = order[np.isfinite(scores[order]) | (scores[order] == np.inf)]
        per = np.diff(excl.indptr)
        for a, b in _row_batches(per + k, SCORE_BUDGET):
            head = listed[: k + int(per[a:b].max(initial=0))]
            ok = excl[a:b][:, head].toarray() == 0
            keep = ok & (np.cumsum(ok, axis=1) <= k)
            seen[head[keep.any(0)]] = True
    return summarize(per_row, len(rows), seen, k)


def evaluate_random(
    users: np.ndarray | None,
    heldout: sp.csr_matrix,
    exclude: sp.csr_matrix,
    k: int = 10,
    recall_k: int = 50,
    max_users: int | None = None,
    seed: int = 0,
    coverage: bool = True,
) -> dict[str, float]:
    """A uniformly random ranking per user, drawn directly rather than by scoring every item: a row's held-out
    items take a uniformly random set of the positions 0..C-1 (C: its candidates, every item not excluded plus
    the held-out ones) and its top-k list is k distinct candidates drawn uniformly."""
    n_items = heldout.shape[1]
    rows = evaluated_rows(heldout, users, max_users, seed)
    held, excl = heldout[rows], exclude[rows]
    rng = np.random.default_rng(seed)
    hrows, items = cells(held)
    excluded_held = _member(excl, hrows, items)
    n_held = np.diff(held.indptr)
    cands = (
        n_items
        - np.diff(excl.indptr)
        + np.bincount(hrows, excluded_held, minlength=len(rows)).astype(np.int64)
    )
    ranks = (rng.random(len(items)) * cands[hrows]).astype(np.int64)  # one held-out item: uniform position
    for r in np.flatnonzero(n_held > 1):  # several: distinct positions
        a = held.indptr[r]
        ranks[a : a + n_held[r]] = rng.choice(cands[r], n_held[r], replace=False)
    per_row = user_metrics(ranks, held, k, recall_k)
    seen = None
    if coverage:
        seen = np.zeros(n_items, bool)
        for r in range(len(rows)):
            seen[_random_list(rng, excl, r, k, n_items)] = True
    return summarize(per_row, len(rows), seen, k)


def _pairs(heldout: sp.csr_matrix, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (held-out cell, excluded cell of the same row) pair: the held-out cell's position in CSR order,
    and the excluded cell's row and item."""
    erows, eitems = cells(exclude)
    per_row = np.diff(heldout.indptr)[erows]  # pair each excluded cell with each held-out cell of its row
    pair_ex = np.repeat(np.arange(len(erows)), per_row)
    pair_held = heldout.indptr[erows[pair_ex]] + _ranges(per_row)
    return pair_held, erows[pair_ex], eitems[pair_ex]


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..l0), [0..l1), ..."""
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths)


def _random_list(rng: np.random.Generator, excl: sp.csr_matrix, r: int, k: int, n_items: int) -> np.ndarray:
    """k distinct items drawn uniformly among those row r of excl does not hold (all of them when fewer)."""
    banned = excl.indices[excl.indptr[r] : excl.indptr[r + 1]]
    if n_items - len(banned) <= 4 * k:
        return rng.permutation(np.setdiff1d(np.arange(n_items), banned))[:k]
    while True:  # rejection: uniform draws, excluded and repeated ones dropped, keep the first k
        draw = rng.integers(0, n_items, 4 * k)
        draw = draw[~np.isin(draw, banned)]
        _, first = np.unique(draw, return_index=True)
        if len(first) >= k:
            return draw[np.sort(first)[:k]]


def _member(matrix: sp.csr_matrix, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether each (row, item) pair is a stored cell of the CSR matrix (its indices sorted)."""
    r, c = cells(matrix)
    keys, probe = r * matrix.shape[1] + c, rows * matrix.shape[1] + items
    at = np.minimum(np.searchsorted(keys, probe), max(0, len(keys) - 1))
    return (keys[at] == probe) if len(keys) else np.zeros(len(probe), bool)


def _row_batches(cost: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive row ranges whose summed cost (at the widest row) stays within budget (at least one row)."""
    out, a = [], 0
    while a < len(cost):
        b, widest = a + 1, int(cost[a])
        while b < len(cost) and max(widest, int(cost[b])) * (b + 1 - a) <= budget:
            widest, b = max(widest, int(cost[b])), b + 1
        out.append((a, b))
        a = b
    return out
