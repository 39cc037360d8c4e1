"""Tiny seeded synthetic canonical tables for unit tests (the real generator is tested on its own)."""

from __future__ import annotations

import numpy as np
import pandas as pd

WORDS = [[f"g{g}w{k}" for k in range(30)] for g in range(4)]


def tiny_tables(
    n_users: int = 300, n_items: int = 120, n_ratings: int = 4000, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ratings with latent structure (biases + 4 factors) and items whose text follows their genre."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, 4, n_items)
    q = np.eye(4)[genre] + 0.3 * rng.normal(size=(n_items, 4))
    p = rng.normal(size=(n_users, 4))
    pairs = np.unique(
        np.stack([rng.integers(0, n_users, n_ratings * 2), rng.integers(0, n_items, n_ratings * 2)], 1),
        axis=0,
    )
    pairs = pairs[rng.permutation(len(pairs))[:n_ratings]]
    u, i = pairs[:, 0], pairs[:, 1]
    s = (
        3.8
        + 0.4 * rng.normal(size=n_users)[u]
        + 0.4 * rng.normal(size=n_items)[i]
        + 0.6 * (p[u] * q[i]).sum(1)
    )
    r = np.clip(np.round(s + 0.3 * rng.normal(size=len(s))), 1, 5)
    ratings = pd.DataFrame(
        {
            "user_id": [f"U{x:04d}" for x in u],
            "item_id": [f"I{x:04d}" for x in i],
            "rating": r.astype(float),
            "timestamp": pd.array(1_400_000_000 + rng.integers(0, 10**8, len(r)), dtype="Int64"),
            "review_text": [" ".join(rng.choice(WORDS[genre[x]], 6)) for x in i],
            "reviewer_name": ["name"] * len(r),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": [f"I{x:04d}" for x in range(n_items)],
            "title": [" ".join(rng.choice(WORDS[g], 3)) for g in genre],
            "brand": [f"artist{g}" for g in genre],
            "also_bought": [[] for _ in range(n_items)],
            "description": [""] * n_items,
        }
    )
    return ratings, items


def clustered_ratings(
    n_users: int = 400, n_items: int = 150, per_user: int = 12, seed: int = 0
) -> pd.DataFrame:
    """Interactions with implicit structure (what the ranking models learn): users in 5 clusters, each
    preferring one item cluster 8:1 under a Zipf-like popularity; timestamps in drawing order."""
    rng = np.random.default_rng(seed)
    uc, ic = rng.integers(0, 5, n_users), np.arange(n_items) % 5
    pop = 1.0 / (np.arange(n_items) + 10.0) ** 0.5
    rows = []
    for u in range(n_users):
        p = pop * np.where(ic == uc[u], 8.0, 1.0)
        rows += [(u, i) for i in rng.choice(n_items, per_user, replace=False, p=p / p.sum())]
    u, i = np.array(rows).T
    return pd.DataFrame(
        {
            "user_id": [f"U{x:04d}" for x in u],
            "item_id": [f"I{x:04d}" for x in i],
            "rating": rng.integers(1, 6, len(u)).astype(float),
            "timestamp": pd.array(1_400_000_000 + np.arange(len(u)) * 60, dtype="Int64"),
        }
    )
