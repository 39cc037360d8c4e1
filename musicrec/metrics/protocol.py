"""Temporal leave-last-out split of a ratings table for top-N evaluation (every rating is an interaction).

Per user, interactions are ordered by timestamp; equal timestamps keep file (row) order and null timestamps
count as older than any real one, so they never become a held-out item unless the user has no timestamps at
all (then file order alone decides). The latest interaction of a user with >= 2 is the test item; the one
before it is the validation item when the user has >= 3 (so a 2-interaction user keeps one training item);
the rest is training. Users with one interaction cannot be evaluated this way: their row stays in training
and they are listed apart (most-popular is their bar).

A table without any time at all (a play-count file) has no latest interaction: each user's held-out items
are then drawn at random, seeded (RANDOM_SEED), instead of taken in file order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_FOR_TEST, MIN_FOR_VALIDATION = 2, 3
RANDOM_SEED = 0


@dataclass(frozen=True)
class LeaveLastOut:
    """The three parts (rows in input order, fresh index) and the users with a single interaction."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    single_users: list[str]


def recency_rank(
    users: np.ndarray, timestamps: pd.Series, tiebreak: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: 0 for the user's latest interaction, 1 for the one before, ...; and the user's row count.

    Vectorised: one lexsort over (user code, timestamp, tiebreak: row position unless given)."""
    codes, _ = pd.factorize(users)
    ts = pd.to_numeric(timestamps, errors="coerce").to_numpy(np.float64, na_value=-np.inf)
    order = np.lexsort((np.arange(len(codes)) if tiebreak is None else tiebreak, ts, codes))
    counts = np.bincount(codes, minlength=codes.max() + 1 if len(codes) else 0)
    sorted_codes = codes[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    within = np.arange(len(order)) - starts[sorted_codes]
    rank = np.empty(len(order), np.int64)
    rank[order] = counts[sorted_codes] - 1 - within
    return rank, counts[codes]


def leave_last_out(ratings: pd.DataFrame) -> LeaveLastOut:
    """Split ratings (user_id, item_id, rating[, timestamp]) by the protocol in the module docstring."""
    ts = ratings["timestamp"] if "timestamp" in ratings else pd.Series(np.nan, index=ratings.index)
    rank, count = recency_rank(
        ratings["user_id"].to_numpy(),
        ts,
        None if has_times(ratings) else np.random.default_rng(RANDOM_SEED).permutation(len(ratings)),
    )
    is_test = (rank == 0) & (count >= MIN_FOR_TEST)
    is_val = (rank == 1) & (count >= MIN_FOR_VALIDATION)
    single = ratings.loc[count == 1, "user_id"].astype(str)
    return LeaveLastOut(
        train=ratings[~(is_test | is_val)].reset_index(drop=True),
        validation=ratings[is_val].reset_index(drop=True),
        test=ratings[is_test].reset_index(drop=True),
        single_users=sorted(single.unique().tolist()),
    )


def has_times(ratings: pd.DataFrame) -> bool:
    """Whether any row has a timestamp (else leave_last_out holds out seeded random interactions)."""
    return "timestamp" in ratings and bool(pd.to_numeric(ratings["timestamp"], errors="coerce").notna().any())
