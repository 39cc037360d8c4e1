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
    """0-based rank of every held-out (row, item) cell, in heldout's CSR order (tie rule: module docstring).

    Counts over the dense rows, then takes back the excluded cells that were counted (they are few)."""
    scores = np.asarray(scores, dtype=np.float32)  # one precision for the targets and the rows they meet
    rows, items = cells(heldout)
    target = scores[rows, items]
    if not np.isfinite(target).all():
        raise ValueError("a held-out item has a NaN or infinite score: its rank is undefined")
    ranks = np.empty(len(rows), np.int64)
    step = max(1, SCORE_BUDGET // max(1, scores.shape[1]))
    for a in range(0, len(rows), step):
        ranks[a:a + step] = _dense_ranks(scores, rows[a:a + step], items[a:a + step], target[a:a + step])
    return ranks - _excluded_above(scores, heldout, exclude, rows, items, target)


def _dense_ranks(scores: np.ndarray, rows: np.ndarray, items: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rank among all items of a row; the index tie-break is only computed for rows that have ties."""
    whole = len(rows) == len(scores) and bool((rows == np.arange(len(scores))).all())
    block = scores if whole else scores[rows]
    t = target[:, None]
    higher = np.count_nonzero(block > t, 1)
    tied = np.count_nonzero(block >= t, 1) - higher > 1
    if tied.any():
        sub = block[tied]
        higher[tied] += np.count_nonzero((sub == t[tied]) & (np.arange(sub.shape[1]) < items[tied, None]), 1)
    return higher


def _excluded_above(scores: np.ndarray, heldout: sp.csr_matrix, exclude: sp.csr_matrix, rows: np.ndarray,
                    items: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per held-out cell, how many excluded items of its row ranked ahead of it (to be taken back)."""
    erows, eitems = cells(exclude)
    per_row = np.diff(heldout.indptr)[erows]  # pair each excluded cell with each held-out cell of its row
    pair_ex = np.repeat(np.arange(len(erows)), per_row)
    pair_held = heldout.indptr[erows[pair_ex]] + _ranges(per_row)
    es = scores[erows[pair_ex], eitems[pair_ex]]
    t, it = target[pair_held], items[pair_held]
    ahead = (es > t) | ((es == t) & (eitems[pair_ex] < it))
    return np.bincount(pair_held, ahead, minlength=len(rows)).astype(np.int64)


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..l0), [0..l1), ..."""
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths)


def cells(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every stored cell, in CSR order."""
    return np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)), matrix.indices.astype(np.int64)


def top_k(scores: np.ndarray, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    """The k best non-excluded items per row, best first, ties to the smaller index; -1 pads rows with fewer."""
    s = np.array(scores, dtype=np.float32, copy=True)
    s[np.isnan(s)] = -np.inf
    s[cells(exclude)] = -np.inf
    k_eff = min(k, s.shape[1])
    if s.shape[0] == 0 or k_eff == 0:
        return np.full((s.shape[0], k), -1, np.int64)
    import torch  # topk for the k-th value: numpy's partition is ~25x slower on masses of equal scores

    kth = torch.topk(torch.from_numpy(s), k_eff, dim=1, sorted=False).values.min(1).values.numpy()[:, None]
    chosen = s >= kth
    tied = chosen.sum(1) > k_eff
    if tied.any():  # keep the smallest indices among the items equal to the k-th score
        sub, kt = s[tied], kth[tied]
        need = k_eff - (sub > kt).sum(1, keepdims=True)
        equal = sub == kt
        chosen[tied] = (sub > kt) | (equal & (np.cumsum(equal, axis=1) <= need))
    cols = np.nonzero(chosen)[1].reshape(len(s), k_eff)
    vals = np.take_along_axis(s, cols, 1)
    order = np.lexsort((cols, -vals), axis=1)
    best = np.take_along_axis(cols, order, 1)
    best[np.take_along_axis(vals, order, 1) == -np.inf] = -1
    return np.pad(best, ((0, 0), (0, k - k_eff)), constant_values=-1)


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
    rows = np.flatnonzero(np.diff(heldout.indptr)) if users is None else np.asarray(users, dtype=np.int64)
    rows = sample_users(rows[np.diff(heldout.indptr)[rows] > 0], max_users, seed)
    step = batch or max(1, SCORE_BUDGET // max(1, n_items))
    sums = {f"hr@{k}": 0.0, f"ndcg@{k}": 0.0, f"recall@{recall_k}": 0.0}
    seen = np.zeros(n_items, bool)
    for a in range(0, len(rows), step):
        part = rows[a:a + step]
        scores, held, excl = score_fn(part), heldout[part], exclude[part]
        if scores.shape != (len(part), n_items):
            raise ValueError(f"score_fn returned {scores.shape}, expected {(len(part), n_items)}")
        for name, values in user_metrics(heldout_ranks(scores, held, excl), held, k, recall_k).items():
            sums[name] += float(values.sum())
        if coverage:
            lists = top_k(scores, excl, k)
            seen[lists[lists >= 0]] = True
    out = {name: total / max(1, len(rows)) for name, total in sums.items()}
    if coverage:
        out[f"coverage@{k}"] = float(seen.sum()) / max(1, n_items)
    out["users"] = float(len(rows))
    return out


def interaction_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary CSR user x item matrix of (user, item) pairs (duplicates count once), indices sorted."""
    data = np.ones(len(users), np.float32)
    m = sp.csr_matrix((data, (np.asarray(users), np.asarray(items))), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m
