"""Stage 2: split the ratings, write the splits, train Word2Vec on the training split's text."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from musicrec.data.split import read_splits, split_ratings, split_summary, write_splits
from musicrec.dataset import TrainData, prepare_data
from musicrec.pipeline.workspace import Workspace
from musicrec.text import (Word2VecConfig, item_documents, item_vectors, load_item_vectors,
                           save_item_vectors, train_word2vec)


def prepare(ws: Workspace, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
            method: str = "random", w2v: Word2VecConfig | None = None) -> dict[str, Any]:
    """Write splits/{train,validation,test}.parquet and item_vectors.parquet; return sizes and timings."""
    t0 = time.perf_counter()
    split = split_ratings(pd.read_parquet(ws.ratings), fractions, seed, method)
    write_splits(split, ws.splits)
    t1 = time.perf_counter()
    cfg = w2v or Word2VecConfig(seed=seed)
    docs = item_documents(split.train, pd.read_parquet(ws.items), cfg)
    wv = train_word2vec(docs, cfg)
    ids = sorted(docs.index)
    vectors = item_vectors(docs, wv, ids, cfg)
    save_item_vectors(ids, vectors, ws.item_vectors)
    wv.save_word2vec_format(str(ws.word_vectors))
    return {
        "split": split_summary(split, seed, method),
        "word2vec": {"vocabulary": len(wv.index_to_key), "items_with_text": int((np.abs(vectors).sum(1) > 0).sum()),
                     "vector_size": cfg.vector_size, "seconds": round(time.perf_counter() - t1, 2)},
        "split_seconds": round(t1 - t0, 2),
    }


def load_train_data(ws: Workspace) -> TrainData:
    """Rebuild the indexed training data from the workspace (deterministic: same files, same indices)."""
    ids, vectors = load_item_vectors(ws.item_vectors)
    return prepare_data(read_splits(ws.splits), ids, vectors)
