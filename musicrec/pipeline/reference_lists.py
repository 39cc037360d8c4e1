"""The two reference rankers a ranking evaluation compares the served lists with: most-popular and random.

Both make list tables (user_id, rank 1 = best, item_id) and leave out each user's excluded (rated) items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from musicrec.metrics.topn import LIST_COLUMNS


def most_popular_lists(
    users: Sequence[str],
    popular_order: np.ndarray,
    item_ids: np.ndarray,
    exclude: Mapping[str, np.ndarray],
    k: int,
) -> pd.DataFrame:
    """The k most popular items each user has not rated (popular_order: positions, most popular first)."""
    frames = []
    for u in users:
        rated = exclude.get(u, np.empty(0, np.int64))
        head = popular_order[: k + len(rated)]
        frames.append(_as_list(u, item_ids[head[~np.isin(head, rated)][:k]]))
    return _concat(frames)


def random_lists(
    users: Sequence[str],
    n_items: int,
    item_ids: np.ndarray,
    exclude: Mapping[str, np.ndarray],
    k: int,
    seed: int,
) -> pd.DataFrame:
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
