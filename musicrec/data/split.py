"""Seeded train/validation/test splits, written as Parquet so a run can be reproduced and audited."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from musicrec.data.ids import contained
from musicrec.errors import DataError
from musicrec.store import atomic_write

SPLIT_NAMES = ("train", "validation", "test")
SPLIT_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "review_text"]


@dataclass
class Split:
    """Three disjoint parts of the ratings table."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def parts(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def split_ratings(
    ratings: pd.DataFrame,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    method: str = "random",
) -> Split:
    """Split ratings by a seeded shuffle (random) or by time (temporal: oldest to train, newest to test)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    n = len(ratings)
    n_train, n_val = round(n * fractions[0]), round(n * fractions[1])
    if n_train < 1 or n_val < 1 or n - n_train - n_val < 1:
        raise DataError(
            "ratings",
            f"{n} ratings are too few to split {fractions}",
            hint="provide more ratings (at least a few hundred) or change the split fractions",
        )
    if method == "random":
        order = np.random.default_rng(seed).permutation(n)
    elif method == "temporal":
        ts = ratings["timestamp"].astype("float64").fillna(-np.inf).to_numpy()
        order = np.lexsort((np.arange(n), ts))
    else:
        raise ValueError(f"unknown split method {method!r}: use 'random' or 'temporal'")
    cut = np.split(order, [n_train, n_train + n_val])
    parts = [ratings.iloc[np.sort(idx)].reset_index(drop=True) for idx in cut]
    return Split(*parts)


def split_summary(split: Split, seed: int, method: str) -> dict[str, object]:
    """Sizes and how many validation/test rows have a user or item unseen in training."""
    users, items = split.train["user_id"], split.train["item_id"]
    out: dict[str, object] = {"seed": seed, "method": method}
    for name, part in split.parts().items():
        out[name] = len(part)
    for name in ("validation", "test"):
        part = split.parts()[name]
        cold_u = ~contained(part["user_id"], users)
        cold_i = ~contained(part["item_id"], items)
        out[f"{name}_unseen_user"] = int(cold_u.sum())
        out[f"{name}_unseen_item"] = int(cold_i.sum())
        out[f"{name}_unseen_both"] = int((cold_u & cold_i).sum())
    return out


def write_splits(split: Split, out_dir: str | Path) -> dict[str, Path]:
    """Write each part to <out_dir>/<name>.parquet (columns
    user_id, item_id, rating, timestamp, review_text)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in split.parts().items():
        path = out / f"{name}.parquet"
        atomic_write(path, lambda fh, part=part: part[SPLIT_COLUMNS].to_parquet(fh, index=False))
        paths[name] = path
    return paths


def read_splits(in_dir: str | Path) -> Split:
    """Read a split written by write_splits."""
    base = Path(in_dir)
    return Split(*(pd.read_parquet(base / f"{name}.parquet") for name in SPLIT_NAMES))
