"""Stage 2: split the ratings, write the splits, train Word2Vec on the training split's text."""

from __future__ import annotations

import functools
import json
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
    wv = train_word2vec(docs, cfg) if has_vocabulary(docs, cfg) else None
    if wv is None:  # ratings without any text (the ratings-only CSV, no metadata): zero vectors, said so
        ids, vectors = [], np.zeros((0, cfg.vector_size), dtype=np.float32)
        ws.word_vectors.write_text(f"0 {cfg.vector_size}\n")
    else:
        profiles = docs if cfg.profile_reviews else item_documents(split.train, items, cfg, include_reviews=False)
        ids = sorted(profiles.index)
        vectors = item_vectors(profiles, wv, ids, cfg)
        wv.save_word2vec_format(str(ws.word_vectors))
    save_item_vectors(ids, vectors, ws.item_vectors, cfg.vector_size)
    note = "" if wv is not None else ("no review or metadata text: w2v_mlp trains on all-zero text vectors, "
                                      "so it learns what mlp learns")
    return {
        "split": split_summary(split, seed, method),
        "word2vec": {"vocabulary": 0 if wv is None else len(wv.index_to_key),
                     "items_with_text": int((np.abs(vectors).sum(1) > 0).sum()), "note": note,
                     "vector_size": cfg.vector_size, "seconds": round(time.perf_counter() - t1, 2)},
        "split_seconds": round(t1 - t0, 2),
    }


def has_vocabulary(docs: pd.Series, cfg: Word2VecConfig) -> bool:
    """True if some word occurs at least min_count times (gensim refuses to train on less). Stops at the
    first such word, so a corpus with text costs next to nothing; only a text-free one is scanned whole."""
    seen: dict[str, int] = {}
    for doc in docs:
        for token in doc:
            seen[token] = seen.get(token, 0) + 1
            if seen[token] >= cfg.min_count:
                return True
    return False


def rating_range(ws: Workspace) -> tuple[float, float]:
    """The run's rating scale (rating_scale.json from ingest), 1-5 when a run predates it."""
    path = ws.root / "rating_scale.json"
    if not path.is_file():
        return 1.0, 5.0
    scale = json.loads(path.read_text())
    return float(scale["min"]), float(scale["max"])


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
    return prepare_data(read_splits(ws.splits), ids, vectors, rating_range(ws))


_CACHE_LOCK = threading.Lock()
