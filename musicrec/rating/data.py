"""Index a split for training: dense id maps, index tensors, the item text table and cold-start masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from musicrec.data.ids import IdIndex
from musicrec.data.split import Split


@dataclass
class Part:
    """One split part as index tensors, plus which rows have a user / item unseen in training."""

    user_idx: torch.Tensor
    item_idx: torch.Tensor
    rating: torch.Tensor
    unseen_user: np.ndarray
    unseen_item: np.ndarray

    def __len__(self) -> int:
        return len(self.rating)


@dataclass
class TrainData:
    """Everything a model needs to train and be evaluated; built once, shared by all six models."""

    users: IdIndex
    items: IdIndex
    parts: dict[str, Part]
    global_mean: float
    item_text: np.ndarray | None
    trained_items: np.ndarray  # bool per item index: has ratings in the training split
    rating_range: tuple[float, float] = (1.0, 5.0)  # the run's rating scale (musicrec.data.scales)
    # derived results every model of a run starts from (the closed-form biases), computed once; see fit_biases
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)


def prepare_data(
    split: Split,
    text_ids: list[str] | None = None,
    text_vectors: np.ndarray | None = None,
    rating_range: tuple[float, float] = (1.0, 5.0),
    cold_items: list[str] | None = None,
) -> TrainData:
    """Users: those in train. Items: those in train plus the cold items that have text: `cold_items` when
    given (the run's text items, known before Word2Vec, so models with and without text share one item index),
    else the items with a non-zero text vector. Without text_ids/text_vectors the item text table is None."""
    users = IdIndex(split.train["user_id"].unique())
    text_known: list[str] = list(cold_items or [])
    if cold_items is None and text_ids is not None and text_vectors is not None:
        text_known = [i for i, nz in zip(text_ids, np.abs(text_vectors).sum(1) > 0, strict=False) if nz]
    items = IdIndex(pd.concat([split.train["item_id"], pd.Series(text_known, dtype="str")]).unique())
    trained = np.zeros(items.size, dtype=bool)
    trained[items.lookup(split.train["item_id"].unique())] = True
    train_users = set(split.train["user_id"].unique())
    parts = {name: _part(df, users, items, train_users, trained) for name, df in split.parts().items()}
    table = None
    if text_ids is not None and text_vectors is not None:
        table = np.zeros((items.size, text_vectors.shape[1]), dtype=np.float32)
        rows = items.lookup(text_ids)
        table[rows[rows > 0]] = text_vectors[rows > 0]
    return TrainData(
        users,
        items,
        parts,
        float(split.train["rating"].mean()),
        table,
        trained,
        (float(rating_range[0]), float(rating_range[1])),
    )


def _part(
    df: pd.DataFrame, users: IdIndex, items: IdIndex, train_users: set[str], trained: np.ndarray
) -> Part:
    u = users.lookup(df["user_id"])
    i = items.lookup(df["item_id"])
    return Part(
        user_idx=torch.from_numpy(u),
        item_idx=torch.from_numpy(i),
        rating=torch.from_numpy(df["rating"].to_numpy(np.float32)),
        unseen_user=u == 0,
        unseen_item=~trained[i],
    )
