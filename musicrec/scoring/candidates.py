"""Candidate generation for top-N lists: popular items, also_bought neighbours, Word2Vec nearest items.

Scoring every item for every user is impossible at the real size, so the ranker only sees these candidates.
Items are addressed by their position in the bundle's item table (the model's item order).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from musicrec.scoring.bundle import Bundle
from musicrec.scoring.retrieve import Retriever, load_retriever
from musicrec.scoring.sources import first_source


@dataclass
class CandidateIndex:
    """Everything candidate generation needs, as numpy arrays over item positions."""

    item_ids: np.ndarray  # object, position -> item id
    popularity: np.ndarray  # int64 training ratings per item
    popular_order: np.ndarray  # positions, most rated first (ties: item id order)
    also_indptr: np.ndarray
    also_indices: np.ndarray
    vec_pos: np.ndarray  # positions of items with a non-zero text vector
    unit: np.ndarray  # their L2-normalised vectors (float32), aligned with vec_pos
    vec_row: np.ndarray  # position -> row in unit, or -1
    history: Mapping[str, np.ndarray]  # user id -> rated item positions
    buckets: Buckets | None = None  # coarse clusters of unit rows for large catalogues (None: exact search)
    retriever: Retriever | None = None  # when the bundle has a retrieval champion


@dataclass
class Buckets:
    """An inverted-file index over the text vectors: rows grouped by nearest centroid, and for each bucket
    the buckets to search (itself and its nearest neighbours)."""

    of_row: np.ndarray  # row -> bucket
    indptr: np.ndarray  # CSR over buckets -> rows
    rows: np.ndarray
    probes: np.ndarray  # bucket -> buckets to search, [n_buckets, n_probe]


def build_candidate_index(bundle: Bundle, with_retrieval: bool = True) -> CandidateIndex:
    """Turn the bundle's tables into arrays (one pass; shared by every chunk of a job); with_retrieval=False
    leaves the retrieval champion out (the rating champion then ranks the candidates, as before it existed)."""
    items = bundle.items
    # the retriever (its item table, the faiss index, the user tower) loads on a second thread meanwhile:
    # faiss and onnxruntime release the GIL
    with ThreadPoolExecutor(1, thread_name_prefix="musicrec-retriever") as pool:
        pending = (
            pool.submit(load_retriever, bundle.directory, bundle.meta, items) if with_retrieval else None
        )
        arrays = _candidate_arrays(bundle)
        retriever = pending.result() if pending is not None else None
    return CandidateIndex(*arrays, retriever)


def _candidate_arrays(bundle: Bundle) -> tuple[Any, ...]:
    """The candidate sources as arrays: popularity and its order, also_bought as CSR, the text vectors and
    their buckets, the users' histories (CandidateIndex's fields but the retriever)."""
    items = bundle.items
    popularity = bundle.item_stats["n_ratings"].to_numpy(np.int64)
    order = np.lexsort((np.arange(len(items)), -popularity))
    known = arrow_ids(items)
    ab = bundle.also_bought
    src, dst = id_positions(known, ab["item_id"]), id_positions(known, ab["other_id"])
    keep = (src >= 0) & (dst >= 0)
    src, dst = src[keep], dst[keep]
    by_src = np.argsort(src, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=len(items)))])
    vec_pos, unit = _unit_vectors(bundle.vectors, known)
    vec_row = np.full(len(items), -1, dtype=np.int64)
    vec_row[vec_pos] = np.arange(len(vec_pos))
    history = positions_by_user(bundle.history["user_id"], id_positions(known, bundle.history["item_id"]))
    buckets = build_buckets(unit) if len(unit) > EXACT_LIMIT else None
    return (
        np.asarray(items, dtype=object),
        popularity,
        order,
        indptr,
        dst[by_src],
        vec_pos,
        unit,
        vec_row,
        history,
        buckets,
    )


class History(Mapping[str, np.ndarray]):
    """User id -> sorted unique item positions, kept as one CSR array: a dict of 717K small arrays took 11 s
    to build through a pandas groupby at seed size, and 1.4 s through np.split."""

    def __init__(self, users: list[str], indptr: np.ndarray, positions: np.ndarray) -> None:
        self._row = dict(zip(users, range(len(users)), strict=False))
        self._indptr, self._positions = indptr, positions

    def __getitem__(self, user: str) -> np.ndarray:
        k = self._row[user]
        return self._positions[self._indptr[k] : self._indptr[k + 1]]

    def __contains__(self, user: object) -> bool:
        return user in self._row

    def __iter__(self) -> Iterator[str]:
        return iter(self._row)

    def __len__(self) -> int:
        return len(self._row)

    @property
    def positions(self) -> np.ndarray:
        """Every (user, item) position of the history, flat (unique per user)."""
        return self._positions


def positions_by_user(user_ids: pd.Series, positions: np.ndarray) -> History:
    """User id -> sorted unique item positions (negative positions, unknown items, dropped), users in id order."""
    positions = np.asarray(positions, dtype=np.int64)
    keep = positions >= 0
    ids = user_ids if isinstance(user_ids, pd.Series) else pd.Series(np.asarray(user_ids, dtype=object))
    codes, users = pd.factorize(ids[keep], sort=True)  # Arrow strings factorized as they are, not as objects
    positions = positions[keep]
    order = np.lexsort((positions, codes))
    codes, positions = codes[order], positions[order]
    fresh = np.ones(len(positions), dtype=bool)
    fresh[1:] = (codes[1:] != codes[:-1]) | (positions[1:] != positions[:-1])
    codes, positions = codes[fresh], positions[fresh]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(users)))]).astype(np.int64)
    return History(users.tolist(), indptr, positions)


EXACT_LIMIT = 20_000  # up to this many text vectors, neighbours are searched exactly


def build_buckets(
    unit: np.ndarray, n_probe: int = 3, iterations: int = 3, seed: int = 0, per_bucket_sample: int = 64
) -> Buckets:
    """Spherical k-means with about sqrt(n) centroids, seeded: at seed size (about 400K vectors) a query
    then compares against a few thousand rows instead of all of them. The centroids are fitted on a sample
    of per_bucket_sample rows per centroid, then every row goes to its nearest one (2.6 s -> 1.1 s at seed)."""
    rng = np.random.default_rng(seed)
    n_buckets = int(np.sqrt(len(unit)))
    fit = unit[rng.choice(len(unit), min(len(unit), per_bucket_sample * n_buckets), replace=False)]
    centroids = fit[rng.choice(len(fit), n_buckets, replace=False)]
    for _ in range(iterations):
        of_row = _nearest_centroid(fit, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, of_row, fit)
        norm = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.where(norm > 0, sums / np.maximum(norm, 1e-12), centroids)
    of_row = _nearest_centroid(unit, centroids)
    order = np.argsort(of_row, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(of_row, minlength=n_buckets))])
    probes = np.argsort(-(centroids @ centroids.T), axis=1)[:, :n_probe]
    return Buckets(of_row, indptr, order, probes)


def _nearest_centroid(unit: np.ndarray, centroids: np.ndarray, block: int = 65536) -> np.ndarray:
    return np.concatenate(
        [np.argmax(unit[s : s + block] @ centroids.T, axis=1) for s in range(0, len(unit), block)]
    )


def arrow_ids(ids: pd.Index | np.ndarray) -> pa.Array:
    """Ids as an Arrow string array: the value set id_positions looks ids up in."""
    return pa.array(np.asarray(ids, dtype=object), type=pa.string())


def id_positions(known: pa.Array, ids: pd.Series | np.ndarray) -> np.ndarray:
    """Position of each id in known (-1 if absent) by Arrow's hash lookup: 3-4x faster than
    pandas.Index.get_indexer, which first turns Arrow-backed strings into Python objects."""
    found = pc.index_in(pa.array(np.asarray(ids, dtype=object), type=pa.string()), value_set=known)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _unit_vectors(vectors: pd.DataFrame, known: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    pos = id_positions(known, vectors["item_id"].astype(str))
    mat = vectors.drop(columns="item_id").to_numpy(np.float32)
    norm = np.linalg.norm(mat, axis=1)
    keep = (pos >= 0) & (norm > 0)
    return pos[keep].astype(np.int64), mat[keep] / norm[keep, None]


def nearest_items(
    index: CandidateIndex, positions: np.ndarray, k: int, block: int = 1024
) -> dict[int, np.ndarray]:
    """The k items with the highest cosine similarity to each given item (itself excluded): exact for small
    catalogues, searched within the item's bucket and its nearest buckets for large ones."""
    rows = index.vec_row[positions]
    query = np.unique(rows[rows >= 0])
    k = min(k, len(index.vec_pos) - 1)
    if k <= 0 or len(query) == 0:
        return {}
    if index.buckets is None:
        groups = [(query[s : s + block], np.arange(len(index.unit))) for s in range(0, len(query), block)]
    else:
        groups = _bucket_groups(index.buckets, query)
    out: dict[int, np.ndarray] = {}
    for q, cand in groups:
        sims = index.unit[q] @ index.unit[cand].T
        sims[cand[None, :] == q[:, None]] = -np.inf
        kk = min(k, len(cand) - 1)
        if kk <= 0:
            continue
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        for r, t in zip(q, top, strict=False):
            out[int(index.vec_pos[r])] = index.vec_pos[cand[t]]
    return out


def _bucket_groups(b: Buckets, query: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(query rows, candidate rows) per bucket: the queries in a bucket search its probe buckets."""
    by_bucket = pd.Series(query).groupby(b.of_row[query]).agg(lambda x: x.to_numpy())
    return [
        (q, np.concatenate([b.rows[b.indptr[p] : b.indptr[p + 1]] for p in b.probes[bucket]]))
        for bucket, q in by_bucket.items()
    ]


def batch_candidates(
    index: CandidateIndex,
    rated: list[np.ndarray],
    neighbours: dict[int, np.ndarray],
    n: int,
    n_popular: int,
    max_also: int = 50,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner, item positions, source codes) for many users at once: owner k is the user of rated[k].

    Per user: the also_bought lists (at most max_also each) and Word2Vec neighbours of every rated item, then
    enough popular items to leave n unrated ones, so every known user gets n items whatever the other
    sources find. Rated items are excluded; an item found by several sources keeps the first in SOURCES order.
    Rows come sorted by (owner, position). Array operations only: the per-user Python loop this replaces held
    the GIL, so chunks on two threads ran no faster than on one.
    """
    lengths = np.fromiter((len(r) for r in rated), np.int64, len(rated))
    flat = np.concatenate(rated).astype(np.int64) if len(rated) else np.empty(0, np.int64)
    owner_of_rated = np.repeat(np.arange(len(rated)), lengths)
    starts = index.also_indptr[flat]
    also_owner, also = _gather(
        index.also_indices, starts, np.minimum(index.also_indptr[flat + 1] - starts, max_also), owner_of_rated
    )
    near_owner, near = _neighbour_rows(neighbours, flat, owner_of_rated)
    want = np.minimum(max(n, n_popular) + lengths, len(index.popular_order))
    pop_owner, popular = _gather(
        index.popular_order, np.zeros(len(rated), np.int64), want, np.arange(len(rated))
    )

    owner = np.concatenate([also_owner, near_owner, pop_owner])
    pos = np.concatenate([also, near, popular])
    src = np.repeat(np.arange(3, dtype=np.int8), [len(also), len(near), len(popular)])
    n_items = len(index.item_ids)
    key = owner * n_items + pos
    keep = ~np.isin(key, owner_of_rated * n_items + flat)
    key, src = key[keep], src[keep]
    pick = first_source(key, src)
    return key[pick] // n_items, key[pick] % n_items, src[pick]


def _neighbour_rows(
    neighbours: dict[int, np.ndarray], flat: np.ndarray, owners: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(owner, neighbour) for the neighbours of every rated item in flat (items without any contribute none)."""
    if not neighbours or len(flat) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    keys = np.fromiter(neighbours, np.int64, len(neighbours))
    lists = [neighbours[int(k)] for k in keys]
    lens = np.fromiter((len(v) for v in lists), np.int64, len(lists))
    values = np.concatenate(lists).astype(np.int64)
    starts = np.cumsum(lens) - lens
    order = np.argsort(keys)
    keys, starts, lens = keys[order], starts[order], lens[order]
    slot = np.minimum(np.searchsorted(keys, flat), len(keys) - 1)
    return _gather(values, starts[slot], np.where(keys[slot] == flat, lens[slot], 0), owners)


def _gather(
    values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, owners: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(owner, value) for values[starts[j] : starts[j] + lengths[j]] of every j, in order."""
    lengths = np.maximum(lengths, 0)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(owners, lengths), values[np.repeat(starts, lengths) + offsets].astype(np.int64)


def diverse_popular(index: CandidateIndex, n: int, max_cosine: float = 0.8, pool: int = 5) -> np.ndarray:
    """n popular items, skipping ones too similar in text to an item already picked (the unknown-user list)."""
    picked: list[int] = []
    skipped: list[int] = []
    for p in index.popular_order[: pool * n]:
        row = index.vec_row[p]
        rows = [index.vec_row[q] for q in picked if index.vec_row[q] >= 0]
        if row >= 0 and rows and float(np.max(index.unit[rows] @ index.unit[row])) > max_cosine:
            skipped.append(int(p))
        else:
            picked.append(int(p))
        if len(picked) == n:
            break
    rest = [int(p) for p in index.popular_order[pool * n :]]
    return np.asarray((picked + skipped + rest)[:n], dtype=np.int64)
