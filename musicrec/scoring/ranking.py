"""Ranking-quality metrics and the two reference rankers: pure functions over arrays and list tables.

Relevance is binary: an item is relevant to a user when it is one of the user's held-out (test) items.
A list table has the columns user_id, rank (1 = best), item_id, like the top-N output of batch scoring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

LIST_COLUMNS = ["user_id", "rank", "item_id"]


def top_k(item_ids: Sequence[str] | np.ndarray, scores: Sequence[float] | np.ndarray, k: int) -> list[str]:
    """The k best items by score; ties go to the smaller item id, so the result never depends on input order."""
    ids = np.asarray(item_ids, dtype=object)
    s = np.asarray(scores, dtype=np.float64)
    if ids.shape != s.shape:
        raise ValueError(f"shape mismatch: {ids.shape} vs {s.shape}")
    order = np.lexsort((ids.astype(str), -s))  # last key is the primary one
    return [str(x) for x in ids[order[:k]]]


def hit_rate_at_k(recommended: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1.0 when at least one of the first k recommended items is relevant, else 0.0."""
    rel = _relevant_set(relevant)
    return float(any(item in rel for item in recommended[:k]))


def ndcg_at_k(recommended: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Binary-relevance NDCG@k: DCG of the list over the DCG of an ideal list (all relevant items first)."""
    rel = _relevant_set(relevant)
    dcg = sum(1.0 / np.log2(r + 2) for r, item in enumerate(recommended[:k]) if item in rel)
    return float(dcg / ideal_dcg(len(rel), k))


def ideal_dcg(n_relevant: int, k: int) -> float:
    """DCG of a list whose first min(n_relevant, k) items are relevant."""
    return float(np.sum(1.0 / np.log2(np.arange(min(n_relevant, k)) + 2)))


def _relevant_set(relevant: Iterable[str]) -> set[str]:
    rel = set(relevant)
    if not rel:
        raise ValueError("no relevant items: the metric is undefined for this user")
    return rel


def list_metrics(lists: pd.DataFrame, relevant: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per-user hit@k and ndcg@k (vectorised) for every user in `relevant` (user_id, item_id).

    A user without a list scores 0; list rows beyond rank k are ignored.
    """
    rel = relevant[["user_id", "item_id"]].drop_duplicates()
    n_rel = rel.groupby("user_id").size()
    top = lists.loc[lists["rank"] <= k, LIST_COLUMNS]
    hits = top.merge(rel, on=["user_id", "item_id"])
    gain = (1.0 / np.log2(hits["rank"].to_numpy(np.float64) + 1)).astype(np.float64)
    dcg = pd.Series(gain, index=hits["user_id"].to_numpy()).groupby(level=0).sum()
    idcg = n_rel.map(lambda n: ideal_dcg(int(n), k))
    dcg = dcg.reindex(n_rel.index, fill_value=0.0)
    return pd.DataFrame({"hit": (dcg > 0).astype(np.float64), "ndcg": dcg / idcg}, index=n_rel.index)


def list_summary(lists: pd.DataFrame, relevant: pd.DataFrame, k: int, popularity: pd.Series,
                 n_catalogue: int) -> dict[str, float]:
    """HR@k, NDCG@k (means over the users of `relevant`), catalogue coverage and mean item popularity."""
    per_user = list_metrics(lists, relevant, k)
    top = lists.loc[lists["rank"] <= k]
    pop = popularity.reindex(top["item_id"]).to_numpy(np.float64)
    return {f"hr@{k}": float(per_user["hit"].mean()), f"ndcg@{k}": float(per_user["ndcg"].mean()),
            "catalogue_coverage": top["item_id"].nunique() / max(1, n_catalogue),
            "mean_popularity": float(np.nanmean(pop)) if len(pop) else float("nan")}


def most_popular_lists(users: Sequence[str], popular_order: np.ndarray, item_ids: np.ndarray,
                       exclude: Mapping[str, np.ndarray], k: int) -> pd.DataFrame:
    """The k most popular items each user has not rated (popular_order: item positions, most popular first)."""
    frames = []
    for u in users:
        rated = exclude.get(u, np.empty(0, np.int64))
        head = popular_order[:k + len(rated)]
        frames.append(_as_list(u, item_ids[head[~np.isin(head, rated)][:k]]))
    return _concat(frames)


def random_lists(users: Sequence[str], n_items: int, item_ids: np.ndarray, exclude: Mapping[str, np.ndarray],
                 k: int, seed: int) -> pd.DataFrame:
    """k random unrated items per user; seeded, and independent of the order the users are given in."""
    rng = np.random.default_rng(seed)
    frames = []
    for u in sorted(users):
        rated = exclude.get(u, np.empty(0, np.int64))
        draw = rng.choice(n_items, size=min(n_items, k + len(rated)), replace=False)
        frames.append(_as_list(u, item_ids[draw[~np.isin(draw, rated)][:k]]))
    return _concat(frames)


def _as_list(user: str, items: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_id": user, "rank": np.arange(1, len(items) + 1), "item_id": items})


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=LIST_COLUMNS)
    return pd.concat(frames, ignore_index=True).astype({"user_id": object, "item_id": object})
