"""Stage 2: split the ratings, write the splits, train Word2Vec on the training split's text."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from musicrec.data.split import read_splits, split_ratings, split_summary, write_splits
from musicrec.dataset import TrainData, prepare_data
from musicrec.pipeline.workspace import Workspace
from musicrec.text import (
    Word2VecConfig,
    item_documents,
    item_vectors,
    load_item_vectors,
    save_item_vectors,
    train_word2vec,
)


def prepare(ws: Workspace, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
            method: str = "random", w2v: Word2VecConfig | None = None) -> dict[str, Any]:
    """Write splits/{train,validation,test}.parquet and item_vectors.parquet; return sizes and timings."""
    t0 = time.perf_counter()
    split = split_ratings(pd.read_parquet(ws.ratings), fractions, seed, method)
    write_splits(split, ws.splits)
    t1 = time.perf_counter()
    cfg = w2v or Word2VecConfig(seed=seed)
    items = pd.read_parquet(ws.items)
    docs = item_documents(split.train, items, cfg)
    wv = train_word2vec(docs, cfg)
    profiles = docs if cfg.profile_reviews else item_documents(split.train, items, cfg, include_reviews=False)
    ids = sorted(profiles.index)
    vectors = item_vectors(profiles, wv, ids, cfg)
    save_item_vectors(ids, vectors, ws.item_vectors)
    wv.save_word2vec_format(str(ws.word_vectors))
    return {
        "split": split_summary(split, seed, method),
        "word2vec": {"vocabulary": len(wv.index_to_key), "items_with_text": int((np.abs(vectors).sum(1) > 0).sum()),
                     "vector_size": cfg.vector_size, "seconds": round(time.perf_counter() - t1, 2)},
        "split_seconds": round(t1 - t0, 2),
    }


def load_train_data(ws: Workspace) -> TrainData:
    """The indexed training data of a workspace, built once per process and shared by every model
    trained there (read-only), so six models on the threads runner don't hold six copies."""
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(ws.splits.glob("*.parquet")))
    with _CACHE_LOCK:
        return _cached_train_data(str(ws.root), stamp + ((ws.item_vectors.name, ws.item_vectors.stat().st_mtime_ns),))


@functools.lru_cache(maxsize=2)
def _cached_train_data(root: str, stamp: tuple[tuple[str, int], ...]) -> TrainData:
    ws = Workspace(Path(root))
    ids, vectors = load_item_vectors(ws.item_vectors)
    return prepare_data(read_splits(ws.splits), ids, vectors)


_CACHE_LOCK = threading.Lock()
