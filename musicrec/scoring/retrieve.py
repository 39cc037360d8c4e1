"""Retrieve-then-rank for top-N lists, when the bundle carries a retrieval champion (retrieval.onnx and its
item table). Per known user: the nearest items by inner product (musicrec.retrieval.index: exact for small
catalogues, IVF above), merged with the also_bought, Word2Vec and popular candidates, all scored by the same
inner product and ordered by it (ties by item id, so lists are deterministic). Rated items never appear."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from musicrec.retrieval.index import ItemIndex, build_index
from musicrec.retrieval.runtime import ITEM_TABLE, load_tower, read_item_table, user_vectors
from musicrec.scoring.candidates import first_source

RETRIEVAL = "retrieval"
EXTRA_MAX = 200  # nearest items fetched beyond n, to survive the exclusion of rated items


@dataclass
class Retriever:
    """The user tower and the item table aligned to the bundle's item positions (rows of items the retrieval
    model does not know score -inf)."""

    session: Any
    table: np.ndarray
    known: np.ndarray  # bool per bundle position
    index: ItemIndex
    model: str


def load_retriever(directory: Any, meta: dict[str, Any], items: pd.Index, threads: int = 1) -> Retriever | None:
    """The bundle's retriever, or None for a bundle without a retrieval champion."""
    if "retrieval.onnx" not in meta.get("files", {}):
        return None
    ids, rows = read_item_table(directory / ITEM_TABLE)
    pos = pd.Index(ids).get_indexer(items)
    table = np.zeros((len(items), rows.shape[1]), dtype=np.float32)
    known = pos >= 0
    table[known] = rows[pos[known]]
    table[~known, -1] = -1e30  # never retrieved: the bias column carries the "unknown item" penalty
    index = build_index(table, threads=threads)
    return Retriever(load_tower(directory / "retrieval.onnx", threads), table, known, index,
                     str(meta.get("retrieval", {}).get("model", RETRIEVAL)))


def retrieve_and_rank(retriever: Retriever, item_ids: np.ndarray, users: list[str], rated: list[np.ndarray],
                      cand_owner: np.ndarray, cand_pos: np.ndarray, cand_src: np.ndarray,
                      sources: tuple[str, ...], n: int) -> pd.DataFrame:
    """Top-n per user from the nearest items plus the other candidates, ordered by the retrieval score."""
    vec, _ = user_vectors(retriever.session, users)
    fetch = n + min(EXTRA_MAX, max((len(r) for r in rated), default=0))
    _, near = retriever.index.search(vec, fetch)
    owner = np.concatenate([np.repeat(np.arange(len(users)), near.shape[1]), cand_owner])
    pos = np.concatenate([near.ravel(), cand_pos])
    # an item found by another source too keeps that source's label (it says why the item is there)
    src = np.concatenate([np.full(near.size, len(sources), np.int8), cand_src.astype(np.int8)])
    labels = np.asarray((*sources, RETRIEVAL), dtype=object)
    ok = pos >= 0
    owner, pos, src = owner[ok], pos[ok].astype(np.int64), src[ok]
    n_items = len(item_ids)
    rated_keys = np.concatenate([k * n_items + r.astype(np.int64) for k, r in enumerate(rated)]) if rated else []
    key = owner * n_items + pos
    keep = ~np.isin(key, rated_keys) & retriever.known[pos]
    owner, pos, src, key = owner[keep], pos[keep], src[keep], key[keep]
    pick = first_source(key, src)
    owner, pos, src = owner[pick], pos[pick], src[pick]
    score = np.einsum("ij,ij->i", vec[owner], retriever.table[pos])
    cand = pd.DataFrame({"user_id": np.asarray(users, dtype=object)[owner], "item_id": item_ids[pos],
                         "score": score, "source": labels[src]})
    cand = cand.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
    top = cand.groupby("user_id", sort=False).head(n)
    return top.assign(rank=top.groupby("user_id", sort=False).cumcount() + 1)
