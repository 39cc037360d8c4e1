"""Retrieve-then-rank for top-N lists, when the bundle carries a retrieval champion (retrieval.onnx and its
item table). Per known user: the nearest items by inner product (musicrec.scoring.index: exact for small
catalogues, IVF above), merged with the also_bought, Word2Vec and popular candidates, all scored by the same
inner product and ordered by it (ties by item id, so lists are deterministic). Rated items never appear."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from musicrec.scoring.index import ItemIndex, build_item_index
from musicrec.scoring.runtime import ITEM_TABLE, load_tower, read_item_table, user_vectors
from musicrec.scoring.sources import first_source

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
    id_rank: np.ndarray  # per bundle position, the rank of its item id in string order (ties), see id_ranks


def id_ranks(item_ids: Any) -> np.ndarray:
    """Per position, the rank of its id among all ids sorted as strings: ties are broken by id with integers."""
    ids = np.asarray(item_ids, dtype=object).astype(str)
    rank = np.empty(len(ids), np.int64)
    rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    return rank


def load_retriever(
    directory: Any, meta: dict[str, Any], items: pd.Index, threads: int = 1
) -> Retriever | None:
    """The bundle's retriever, or None for a bundle without a retrieval champion."""
    if "retrieval.onnx" not in meta.get("files", {}):
        return None
    ids, rows = read_item_table(directory / ITEM_TABLE)
    pos = pd.Index(ids).get_indexer(items)
    table = np.zeros((len(items), rows.shape[1]), dtype=np.float32)
    known = pos >= 0
    table[known] = rows[pos[known]]
    table[~known, -1] = -1e30  # never retrieved: the bias column carries the "unknown item" penalty
    index = build_item_index(table, threads=threads)
    return Retriever(
        load_tower(directory / "retrieval.onnx", threads),
        table,
        known,
        index,
        str(meta.get("retrieval", {}).get("model", RETRIEVAL)),
        id_ranks(items),
    )


def fetch_sizes(rated: list[np.ndarray], n: int) -> np.ndarray:
    """Nearest items to fetch per user: n plus enough to survive the exclusion of the user's rated items
    (at most EXTRA_MAX more), rounded up to a power of two so that users share few search calls."""
    need = n + np.minimum(EXTRA_MAX, np.fromiter((len(r) for r in rated), np.int64, len(rated)))
    return np.minimum(1 << np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64), n + EXTRA_MAX)


def _nearest(retriever: Retriever, vec: np.ndarray, fetch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position) of every nearest item found, one search per distinct fetch size."""
    owners, found = [], []
    for k in np.unique(fetch):
        who = np.flatnonzero(fetch == k)
        _, near = retriever.index.search(vec[who], int(k))
        owners.append(np.repeat(who, near.shape[1]))
        found.append(near.ravel())
    if not owners:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(owners), np.concatenate(found)


def retrieve_and_rank(
    retriever: Retriever,
    item_ids: np.ndarray,
    users: list[str],
    rated: list[np.ndarray],
    cand_owner: np.ndarray,
    cand_pos: np.ndarray,
    cand_src: np.ndarray,
    sources: tuple[str, ...],
    n: int,
) -> pd.DataFrame:
    """Top-n per user from the nearest items plus the other candidates, ordered by the retrieval score.

    All of it on integer arrays (owner, position, source): only the final n rows per user become strings,
    so 100K users with up to 200 fetched items each stay in arrays of a few hundred MB."""
    vec, _ = user_vectors(retriever.session, users)
    near_owner, near_pos = _nearest(retriever, vec, fetch_sizes(rated, n))
    owner = np.concatenate([near_owner, cand_owner]).astype(np.int64)
    pos = np.concatenate([near_pos, cand_pos]).astype(np.int64)
    # an item found by another source too keeps that source's label (it says why the item is there)
    src = np.concatenate([np.full(len(near_pos), len(sources), np.int8), cand_src.astype(np.int8)])
    labels = np.asarray((*sources, RETRIEVAL), dtype=object)
    ok = pos >= 0
    owner, pos, src = owner[ok], pos[ok], src[ok]
    n_items = len(item_ids)
    rated_keys = (
        np.concatenate([k * n_items + r.astype(np.int64) for k, r in enumerate(rated)]) if rated else []
    )
    key = owner * n_items + pos
    keep = ~np.isin(key, rated_keys) & retriever.known[pos]
    key, src = key[keep], src[keep]
    pick = first_source(key, src)
    owner, pos, src = key[pick] // n_items, key[pick] % n_items, src[pick]
    score = np.einsum("ij,ij->i", vec[owner], retriever.table[pos])
    order = np.lexsort((retriever.id_rank[pos], -score, owner))  # per user: best score first, ties by item id
    owner, pos, src, score = owner[order], pos[order], src[order], score[order]
    first = np.searchsorted(owner, owner, side="left")  # owner is sorted: where each user's rows start
    rank = np.arange(len(owner)) - first
    top = rank < n
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, dtype=object)[owner[top]],
            "item_id": item_ids[pos[top]],
            "score": score[top],
            "source": labels[src[top]],
            "rank": rank[top] + 1,
        }
    )
