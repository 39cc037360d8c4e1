"""Top-N metrics: the one DCG, HR@k, NDCG@k, Recall@k and coverage, over ranks or over list tables.

Relevance is binary: an item is relevant to a user when it is one of the user's held-out items. A held-out
item at 0-based rank r contributes 1/log2(r + 2) to DCG; NDCG divides by the DCG of a list whose first
min(relevant, k) items are relevant.

Ranks over score matrices: every item a user has not interacted with is a candidate; excluded items (the
user's training, and for test also validation, interactions) are removed before ranking. Ties are broken by
item index, smaller first, whatever order the scores came in: an item's 0-based rank is the number of
candidates with a higher score plus the number with an equal score and a smaller index. The held-out items
themselves are always ranked, even if also listed in the exclusion mask. NaN scores rank below every number;
a NaN held-out score is an error.

A list table has the columns user_id, rank (1 = best), item_id, like the top-N output of batch scoring.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

LIST_COLUMNS = ["user_id", "rank", "item_id"]


def dcg_gain(ranks: np.ndarray) -> np.ndarray:
    """The DCG contribution of a relevant item at each 0-based rank: 1 / log2(rank + 2)."""
    return 1.0 / np.log2(ranks + 2.0)


def ideal_dcg(n_relevant: np.ndarray, k: int) -> np.ndarray:
    """DCG at k of a list whose first min(n_relevant, k) items are relevant (0 without relevant items)."""
    table = np.concatenate(([0.0], np.cumsum(dcg_gain(np.arange(k)))))
    return table[np.minimum(np.asarray(n_relevant), k)]


def cells(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every stored cell, in CSR order."""
    return np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)), matrix.indices.astype(np.int64)


def interaction_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary CSR user x item matrix of (user, item) pairs (duplicates count once), indices sorted."""
    data = np.ones(len(users), np.float32)
    m = sp.csr_matrix((data, (np.asarray(users), np.asarray(items))), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def scan(
    scores: np.ndarray, heldout: sp.csr_matrix, exclude: sp.csr_matrix, k: int, inplace: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(ranks of the held-out cells in CSR order, (rows, k) top-k lists) in one compiled pass over the scores
    (musicrec.metrics.scan_kernel). inplace: the scores (float32, C order, writable) may be overwritten."""
    from musicrec.metrics.scan_kernel import scan_rows  # numba: compiled on first use, cached on disk

    arr = np.asarray(scores, dtype=np.float32)
    if not (inplace and arr.flags.writeable and arr.flags.c_contiguous):
        arr = np.array(arr, dtype=np.float32, order="C")
    if heldout.shape[0] != arr.shape[0] or exclude.shape[0] != arr.shape[0]:
        raise ValueError(
            f"scores have {arr.shape[0]} rows, held-out {heldout.shape[0]}, exclusions {exclude.shape[0]}"
        )
    rows, items = cells(heldout)
    target = arr[rows, items]
    if not np.isfinite(target).all():
        raise ValueError("a held-out item has a NaN or infinite score: its rank is undefined")
    ranks = np.empty(len(items), np.int64)
    top = np.empty((arr.shape[0], max(k, 0)), np.int64)
    scan_rows(
        arr,
        heldout.indptr.astype(np.int64),
        items,
        target,
        exclude.indptr.astype(np.int64),
        exclude.indices.astype(np.int64),
        k,
        ranks,
        top,
    )
    return ranks, top


def heldout_ranks(scores: np.ndarray, heldout: sp.csr_matrix, exclude: sp.csr_matrix) -> np.ndarray:
    """0-based rank of every held-out (row, item) cell, in heldout's CSR order (tie rule: module doc)."""
    return scan(scores, heldout, exclude, 0)[0]


def top_k(scores: np.ndarray, exclude: sp.csr_matrix, k: int, inplace: bool = False) -> np.ndarray:
    """The k best non-excluded items per row, best first, ties to the smaller index; -1 pads rows with fewer
    (NaN and -inf scores are never listed).

    inplace: the scores (float32, C order, writable) may be overwritten (excluded cells set to -inf)."""
    empty = sp.csr_matrix((exclude.shape[0], exclude.shape[1]), dtype=np.float32)
    return scan(scores, empty, exclude, k, inplace)[1]


def topk_ranks(topk: np.ndarray, heldout: sp.csr_matrix) -> np.ndarray:
    """Ranks of the held-out cells in given top-k lists (rows aligned); an item not in its list: len(list)."""
    rows, items = cells(heldout)
    hit = topk[rows] == items[:, None]
    return np.where(hit.any(1), hit.argmax(1), topk.shape[1])


def user_metrics(
    ranks: np.ndarray, heldout: sp.csr_matrix, k: int = 10, recall_k: int = 50
) -> dict[str, np.ndarray]:
    """Per-row hr@k, ndcg@k and recall@recall_k from the held-out ranks (rows without held-out items: 0)."""
    rows, _ = cells(heldout)
    n_rel = np.diff(heldout.indptr)
    gain = np.where(ranks < k, dcg_gain(ranks), 0.0)
    dcg = np.bincount(rows, gain, minlength=heldout.shape[0])
    idcg = np.where(n_rel > 0, ideal_dcg(n_rel, k), 1.0)
    hits_k = np.bincount(rows, ranks < k, minlength=heldout.shape[0])
    hits_r = np.bincount(rows, ranks < recall_k, minlength=heldout.shape[0])
    return {
        f"hr@{k}": (hits_k > 0).astype(np.float64),
        f"ndcg@{k}": dcg / idcg,
        f"recall@{recall_k}": hits_r / np.maximum(n_rel, 1),
    }


def list_metrics(lists: pd.DataFrame, relevant: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per-user hit@k and ndcg@k of list tables for every user in `relevant` (user_id, item_id).

    A user without a list scores 0; list rows beyond rank k are ignored.
    """
    rel = relevant[["user_id", "item_id"]].drop_duplicates()
    n_rel = rel.groupby("user_id").size()
    top = lists.loc[lists["rank"] <= k, LIST_COLUMNS]
    hits = top.merge(rel, on=["user_id", "item_id"])
    gain = dcg_gain(hits["rank"].to_numpy(np.float64) - 1.0)
    dcg = pd.Series(gain, index=hits["user_id"].to_numpy()).groupby(level=0).sum()
    idcg = pd.Series(ideal_dcg(n_rel.to_numpy(), k), index=n_rel.index)
    dcg = dcg.reindex(n_rel.index, fill_value=0.0)
    return pd.DataFrame({"hit": (dcg > 0).astype(np.float64), "ndcg": dcg / idcg}, index=n_rel.index)


def list_summary(
    lists: pd.DataFrame, relevant: pd.DataFrame, k: int, popularity: pd.Series, n_catalogue: int
) -> dict[str, float]:
    """HR@k, NDCG@k (means over the users of `relevant`), catalogue coverage and mean item popularity."""
    per_user = list_metrics(lists, relevant, k)
    top = lists.loc[lists["rank"] <= k]
    pop = popularity.reindex(top["item_id"]).to_numpy(np.float64)
    return {
        f"hr@{k}": float(per_user["hit"].mean()),
        f"ndcg@{k}": float(per_user["ndcg"].mean()),
        "catalogue_coverage": top["item_id"].nunique() / max(1, n_catalogue),
        "mean_popularity": float(np.nanmean(pop)) if len(pop) else float("nan"),
    }
