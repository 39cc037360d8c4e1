"""Candidate generation for top-N lists: popular items, also_bought neighbours, Word2Vec nearest items.

Scoring every item for every user is impossible at the real size, so the ranker only sees these candidates.
Items are addressed by their position in the bundle's item table (the model's item order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from musicrec.scoring.bundle import Bundle

SOURCES = ("also_bought", "word2vec", "popular")  # priority when several sources find the same item
FALLBACK = "fallback"


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
    history: dict[str, np.ndarray]  # user id -> rated item positions
    buckets: Buckets | None = None  # coarse clusters of unit rows for large catalogues (None: exact search)


@dataclass
class Buckets:
    """An inverted-file index over the text vectors: rows grouped by nearest centroid, and for each bucket
    the buckets to search (itself and its nearest neighbours)."""

    of_row: np.ndarray  # row -> bucket
    indptr: np.ndarray  # CSR over buckets -> rows
    rows: np.ndarray
    probes: np.ndarray  # bucket -> buckets to search, [n_buckets, n_probe]


def build_index(bundle: Bundle) -> CandidateIndex:
    """Turn the bundle's tables into arrays (one pass; shared by every chunk of a job)."""
    items = bundle.items
    popularity = bundle.item_stats["n_ratings"].to_numpy(np.int64)
    order = np.lexsort((np.arange(len(items)), -popularity))
    ab = bundle.also_bought
    src, dst = items.get_indexer(ab["item_id"]), items.get_indexer(ab["other_id"])
    keep = (src >= 0) & (dst >= 0)
    src, dst = src[keep], dst[keep]
    by_src = np.argsort(src, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=len(items)))])
    vec_pos, unit = _unit_vectors(bundle.vectors, items)
    vec_row = np.full(len(items), -1, dtype=np.int64)
    vec_row[vec_pos] = np.arange(len(vec_pos))
    hist = bundle.history.assign(pos=items.get_indexer(bundle.history["item_id"]))
    history = {u: g.to_numpy(np.int64) for u, g in hist[hist["pos"] >= 0].groupby("user_id")["pos"]}
    buckets = build_buckets(unit) if len(unit) > EXACT_LIMIT else None
    return CandidateIndex(np.asarray(items, dtype=object), popularity, order, indptr, dst[by_src],
                          vec_pos, unit, vec_row, history, buckets)


EXACT_LIMIT = 20_000  # up to this many text vectors, neighbours are searched exactly


def build_buckets(unit: np.ndarray, n_probe: int = 3, iterations: int = 3, seed: int = 0) -> Buckets:
    """Spherical k-means with about sqrt(n) centroids, seeded: at seed size (about 400K vectors) a query
    then compares against a few thousand rows instead of all of them."""
    n_buckets = int(np.sqrt(len(unit)))
    centroids = unit[np.random.default_rng(seed).choice(len(unit), n_buckets, replace=False)]
    for _ in range(iterations):
        of_row = _nearest_centroid(unit, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, of_row, unit)
        norm = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.where(norm > 0, sums / np.maximum(norm, 1e-12), centroids)
    of_row = _nearest_centroid(unit, centroids)
    order = np.argsort(of_row, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(of_row, minlength=n_buckets))])
    probes = np.argsort(-(centroids @ centroids.T), axis=1)[:, :n_probe]
    return Buckets(of_row, indptr, order, probes)


def _nearest_centroid(unit: np.ndarray, centroids: np.ndarray, block: int = 65536) -> np.ndarray:
    return np.concatenate([np.argmax(unit[s:s + block] @ centroids.T, axis=1) for s in range(0, len(unit), block)])


def _unit_vectors(vectors: pd.DataFrame, items: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    pos = items.get_indexer(vectors["item_id"].astype(str))
    mat = vectors.drop(columns="item_id").to_numpy(np.float32)
    norm = np.linalg.norm(mat, axis=1)
    keep = (pos >= 0) & (norm > 0)
    return pos[keep].astype(np.int64), mat[keep] / norm[keep, None]


def nearest_items(index: CandidateIndex, positions: np.ndarray, k: int, block: int = 1024) -> dict[int, np.ndarray]:
    """The k items with the highest cosine similarity to each given item (itself excluded): exact for small
    catalogues, searched within the item's bucket and its nearest buckets for large ones."""
    rows = index.vec_row[positions]
    query = np.unique(rows[rows >= 0])
    k = min(k, len(index.vec_pos) - 1)
    if k <= 0 or len(query) == 0:
        return {}
    if index.buckets is None:
        groups = [(query[s:s + block], np.arange(len(index.unit))) for s in range(0, len(query), block)]
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
        for r, t in zip(q, top):
            out[int(index.vec_pos[r])] = index.vec_pos[cand[t]]
    return out


def _bucket_groups(b: Buckets, query: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(query rows, candidate rows) per bucket: the queries in a bucket search its probe buckets."""
    by_bucket = pd.Series(query).groupby(b.of_row[query]).agg(lambda x: x.to_numpy())
    return [(q, np.concatenate([b.rows[b.indptr[p]:b.indptr[p + 1]] for p in b.probes[bucket]]))
            for bucket, q in by_bucket.items()]


def user_candidates(index: CandidateIndex, rated: np.ndarray, neighbours: dict[int, np.ndarray], n: int,
                    n_popular: int, max_also: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(item positions, source codes) for one user, deduplicated, rated items excluded.

    The popular list is long enough to leave n unrated items, so every known user gets n items whatever
    the other sources find.
    """
    also = [index.also_indices[index.also_indptr[p]:index.also_indptr[p + 1]][:max_also] for p in rated]
    near = [neighbours[int(p)] for p in rated if int(p) in neighbours]
    popular = index.popular_order[:max(n, n_popular) + len(rated)]
    parts = [np.concatenate(also) if also else np.empty(0, np.int64),
             np.concatenate(near) if near else np.empty(0, np.int64), popular]
    pos = np.concatenate(parts).astype(np.int64)
    src = np.concatenate([np.full(len(a), code, np.int8) for code, a in enumerate(parts)])
    keep = ~np.isin(pos, rated)
    pos, src = pos[keep], src[keep]
    _, first = np.unique(pos, return_index=True)  # concatenation order is the source priority
    return pos[first], src[first]


def diverse_popular(index: CandidateIndex, n: int, max_cosine: float = 0.8, pool: int = 5) -> np.ndarray:
    """n popular items, skipping ones too similar in text to an item already picked (the unknown-user list)."""
    picked: list[int] = []
    skipped: list[int] = []
    for p in index.popular_order[:pool * n]:
        row = index.vec_row[p]
        rows = [index.vec_row[q] for q in picked if index.vec_row[q] >= 0]
        if row >= 0 and rows and float(np.max(index.unit[rows] @ index.unit[row])) > max_cosine:
            skipped.append(int(p))
        else:
            picked.append(int(p))
        if len(picked) == n:
            break
    rest = [int(p) for p in index.popular_order[pool * n:]]
    return np.asarray((picked + skipped + rest)[:n], dtype=np.int64)
