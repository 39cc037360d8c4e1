"""Full-ranking top-N metrics over score matrices: HR@k, NDCG@k, Recall@k and catalogue coverage.

Every item a user has not interacted with is a candidate; excluded items (the user's training, and for test
also validation, interactions) are removed before ranking. Ties are broken by item index, smaller first,
whatever order the scores came in: an item's 0-based rank is the number of candidates with a higher score
plus the number with an equal score and a smaller index. The held-out items themselves are always ranked,
even if also listed in the exclusion mask. NaN scores rank below every number; a NaN held-out score is an
error. A held-out item at 1-based rank r contributes 1/log2(r + 1) to DCG.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user indices (b,) -> scores (b, n_items)
SCORE_BUDGET = 1 << 24  # score cells per batch (64 MB of float32)


def heldout_ranks(scores: np.ndarray, heldout: sp.csr_matrix, exclude: sp.csr_matrix) -> np.ndarray:
    """0-based rank of every held-out (row, item) cell, in heldout's CSR order (tie rule: module docstring)."""
    return scan(scores, heldout, exclude, 0)[0]


def scan(scores: np.ndarray, heldout: sp.csr_matrix, exclude: sp.csr_matrix, k: int,
         inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ranks of the held-out cells in CSR order, (rows, k) top-k lists) in one compiled pass over the scores
    (musicrec.ranking.scan). inplace: the scores (float32, C order, writable) may be overwritten."""
    from musicrec.ranking.scan import scan_rows  # numba: compiled on first use, cached on disk

    arr = np.asarray(scores, dtype=np.float32)
    if not (inplace and arr.flags.writeable and arr.flags.c_contiguous):
        arr = np.array(arr, dtype=np.float32, order="C")
    if heldout.shape[0] != arr.shape[0] or exclude.shape[0] != arr.shape[0]:
        raise ValueError(f"scores have {arr.shape[0]} rows, held-out {heldout.shape[0]}, exclusions {exclude.shape[0]}")
    rows, items = cells(heldout)
    target = arr[rows, items]
    if not np.isfinite(target).all():
        raise ValueError("a held-out item has a NaN or infinite score: its rank is undefined")
    ranks = np.empty(len(items), np.int64)
    top = np.empty((arr.shape[0], max(k, 0)), np.int64)
    scan_rows(arr, heldout.indptr.astype(np.int64), items, target, exclude.indptr.astype(np.int64),
              exclude.indices.astype(np.int64), k, ranks, top)
    return ranks, top


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


def cells(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every stored cell, in CSR order."""
    return np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)), matrix.indices.astype(np.int64)


def top_k(scores: np.ndarray, exclude: sp.csr_matrix, k: int, inplace: bool = False) -> np.ndarray:
    """The k best non-excluded items per row, best first, ties to the smaller index; -1 pads rows with fewer
    (NaN and -inf scores are never listed).

    inplace: the scores (float32, C order, writable) may be overwritten (excluded cells set to -inf)."""
    empty = sp.csr_matrix((exclude.shape[0], exclude.shape[1]), dtype=np.float32)
    return scan(scores, empty, exclude, k, inplace)[1]


def user_metrics(ranks: np.ndarray, heldout: sp.csr_matrix, k: int = 10, recall_k: int = 50) -> dict[str, np.ndarray]:
    """Per-row hr@k, ndcg@k and recall@recall_k from the held-out ranks (rows without held-out items: 0)."""
    rows, _ = cells(heldout)
    n_rel = np.diff(heldout.indptr)
    gain = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    dcg = np.bincount(rows, gain, minlength=heldout.shape[0])
    ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    idcg = np.where(n_rel > 0, ideal[np.clip(n_rel, 1, k) - 1], 1.0)
    hits_k = np.bincount(rows, ranks < k, minlength=heldout.shape[0])
    hits_r = np.bincount(rows, ranks < recall_k, minlength=heldout.shape[0])
    return {f"hr@{k}": (hits_k > 0).astype(np.float64), f"ndcg@{k}": dcg / idcg,
            f"recall@{recall_k}": hits_r / np.maximum(n_rel, 1)}


def topk_ranks(topk: np.ndarray, heldout: sp.csr_matrix) -> np.ndarray:
    """Ranks of the held-out cells in given top-k lists (rows aligned); an item not in its list gets len(list)."""
    rows, items = cells(heldout)
    hit = topk[rows] == items[:, None]
    return np.where(hit.any(1), hit.argmax(1), topk.shape[1])


def sample_users(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """All users (sorted), or a fixed seeded sample of max_users of them (sorted): same seed, same users."""
    users = np.unique(np.asarray(users, dtype=np.int64))
    if max_users is None or len(users) <= max_users:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))


def evaluate_scorer(score_fn: ScoreFn, users: np.ndarray | None, heldout: sp.csr_matrix, exclude: sp.csr_matrix,
                    n_items: int, k: int = 10, recall_k: int = 50, batch: int | None = None,
                    max_users: int | None = None, seed: int = 0, coverage: bool = True) -> dict[str, float]:
    """Mean hr@k, ndcg@k, recall@recall_k (and coverage@k of the top-k lists) over users, scored in batches.

    heldout and exclude are CSR matrices indexed by user (rows) and item; users defaults to every row with a
    held-out item; rows without one are skipped. batch defaults to SCORE_BUDGET // n_items users."""
    rows = _eval_rows(heldout, users, max_users, seed)
    step = batch or max(1, SCORE_BUDGET // max(1, n_items))
    parts: list[dict[str, np.ndarray]] = []
    seen = np.zeros(n_items, bool) if coverage else None
    for a in range(0, len(rows), step):
        part = rows[a:a + step]
        scores, held, excl = score_fn(part), heldout[part], exclude[part]
        if scores.shape != (len(part), n_items):
            raise ValueError(f"score_fn returned {scores.shape}, expected {(len(part), n_items)}")
        ranks, lists = scan(scores, held, excl, k if seen is not None else 0, inplace=True)  # not used after
        parts.append(user_metrics(ranks, held, k, recall_k))
        if seen is not None:
            seen[lists[lists >= 0]] = True
    names = (f"hr@{k}", f"ndcg@{k}", f"recall@{recall_k}")
    per_row = {n: np.concatenate([p[n] for p in parts]) if parts else np.zeros(0) for n in names}
    return _summary(per_row, len(rows), seen, k)


def _eval_rows(heldout: sp.csr_matrix, users: np.ndarray | None, max_users: int | None, seed: int) -> np.ndarray:
    """The rows an evaluation covers: the given users (default: all) that have a held-out item, sampled."""
    rows = np.flatnonzero(np.diff(heldout.indptr)) if users is None else np.asarray(users, dtype=np.int64)
    return sample_users(rows[np.diff(heldout.indptr)[rows] > 0], max_users, seed)


def _summary(per_row: dict[str, np.ndarray], n_rows: int, seen: np.ndarray | None, k: int) -> dict[str, float]:
    """Means over the rows of the per-row metrics, coverage@k of the items seen in the lists, and the row count."""
    out = {name: float(values.sum()) / max(1, n_rows) for name, values in per_row.items()}
    if seen is not None:
        out[f"coverage@{k}"] = float(seen.sum()) / max(1, len(seen))
    out["users"] = float(n_rows)
    return out


def evaluate_static(item_scores: np.ndarray, users: np.ndarray | None, heldout: sp.csr_matrix,
                    exclude: sp.csr_matrix, k: int = 10, recall_k: int = 50, max_users: int | None = None,
                    seed: int = 0, coverage: bool = True) -> dict[str, float]:
    """evaluate_scorer for a scorer that gives every user the same item scores (most-popular), exactly, by
    one global order instead of a users x items score matrix: an item's rank is its position in the order
    (same tie rule) less the user's excluded items ahead of it; a top-k list is the first k of the order that
    the user did not interact with."""
    scores = np.asarray(item_scores, dtype=np.float32)
    n_items = len(scores)
    rows = _eval_rows(heldout, users, max_users, seed)
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
        listed = order[np.isfinite(scores[order]) | (scores[order] == np.inf)]  # -inf and NaN are never listed
        per = np.diff(excl.indptr)
        for a, b in _row_batches(per + k, SCORE_BUDGET):
            head = listed[:k + int(per[a:b].max(initial=0))]
            ok = excl[a:b][:, head].toarray() == 0
            keep = ok & (np.cumsum(ok, axis=1) <= k)
            seen[head[keep.any(0)]] = True
    return _summary(per_row, len(rows), seen, k)


def evaluate_random(users: np.ndarray | None, heldout: sp.csr_matrix, exclude: sp.csr_matrix, k: int = 10,
                    recall_k: int = 50, max_users: int | None = None, seed: int = 0,
                    coverage: bool = True) -> dict[str, float]:
    """A uniformly random ranking per user, drawn directly rather than by scoring every item: a row's held-out
    items take a uniformly random set of the positions 0..C-1 (C: its candidates, every item not excluded plus
    the held-out ones) and its top-k list is k distinct candidates drawn uniformly."""
    n_items = heldout.shape[1]
    rows = _eval_rows(heldout, users, max_users, seed)
    held, excl = heldout[rows], exclude[rows]
    rng = np.random.default_rng(seed)
    hrows, items = cells(held)
    excluded_held = _member(excl, hrows, items)
    n_held = np.diff(held.indptr)
    cands = n_items - np.diff(excl.indptr) + np.bincount(hrows, excluded_held, minlength=len(rows)).astype(np.int64)
    ranks = (rng.random(len(items)) * cands[hrows]).astype(np.int64)  # one held-out item: uniform position
    for r in np.flatnonzero(n_held > 1):  # several: distinct positions
        a = held.indptr[r]
        ranks[a:a + n_held[r]] = rng.choice(cands[r], n_held[r], replace=False)
    per_row = user_metrics(ranks, held, k, recall_k)
    seen = None
    if coverage:
        seen = np.zeros(n_items, bool)
        for r in range(len(rows)):
            seen[_random_list(rng, excl, r, k, n_items)] = True
    return _summary(per_row, len(rows), seen, k)


def _random_list(rng: np.random.Generator, excl: sp.csr_matrix, r: int, k: int, n_items: int) -> np.ndarray:
    """k distinct items drawn uniformly among those row r of excl does not hold (all of them when fewer)."""
    banned = excl.indices[excl.indptr[r]:excl.indptr[r + 1]]
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


def interaction_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary CSR user x item matrix of (user, item) pairs (duplicates count once), indices sorted."""
    data = np.ones(len(users), np.float32)
    m = sp.csr_matrix((data, (np.asarray(users), np.asarray(items))), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m
