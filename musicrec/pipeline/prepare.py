"""Stage 2: split the ratings and write the splits (split),
train Word2Vec on the training split's text (embed)."""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from musicrec.data.feedback import Feedback
from musicrec.data.split import read_splits, split_ratings, split_summary, write_splits
from musicrec.data.tags import tag_docs, with_tag_text
from musicrec.metrics.protocol import LeaveLastOut, leave_last_out
from musicrec.pipeline.workspace import Workspace
from musicrec.rating.data import TrainData, prepare_data
from musicrec.store import atomic_write
from musicrec.text import (
    Word2VecConfig,
    item_documents_with_and_without_reviews,
    item_vectors,
    load_item_vectors,
    save_item_vectors,
    text_item_ids,
    train_word2vec,
    word2vec_epochs,
)

TEXT_ITEMS = "text_items.parquet"


def prepare(
    ws: Workspace,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    method: str = "random",
    w2v: Word2VecConfig | None = None,
) -> dict[str, Any]:
    """Both halves of stage 2 in turn (the training flow runs embed() beside the models that need no text)."""
    out = split(ws, seed, fractions, method)
    return {**out, "word2vec": embed(ws, seed, w2v)}


def split(
    ws: Workspace,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    method: str = "random",
) -> dict[str, Any]:
    """Write splits/{train,validation,test}.parquet and text_items.parquet (the items that have text, which
    fixes the item index before Word2Vec trains); return the split's sizes."""
    t0 = time.perf_counter()
    parts = split_ratings(pd.read_parquet(ws.ratings), fractions, seed, method)
    write_splits(parts, ws.splits)
    items = items_with_tags(ws, parts.train, ["item_id", "title", "brand", "description"])
    ids = text_item_ids(parts.train, items)
    atomic_write(
        ws.root / TEXT_ITEMS, lambda fh: pd.DataFrame({"item_id": pd.Series(ids, dtype="str")}).to_parquet(fh)
    )
    return {"split": split_summary(parts, seed, method), "split_seconds": round(time.perf_counter() - t0, 2)}


def embed(ws: Workspace, seed: int = 0, w2v: Word2VecConfig | None = None) -> dict[str, Any]:
    """Train Word2Vec on the training split's text (less the reviews of interactions the leave-last-out holds
    out); write item_vectors.parquet and word2vec.txt."""
    t1 = time.perf_counter()
    cfg = w2v or Word2VecConfig(seed=seed)
    train = pd.read_parquet(ws.splits / "train.parquet", columns=["user_id", "item_id", "review_text"])
    train, dropped = training_under_both(ws, train)
    items = items_with_tags(ws, train)
    docs, metadata_docs = item_documents_with_and_without_reviews(train, items, cfg)
    epochs = word2vec_epochs(cfg, int(docs.map(len).sum()))
    wv = train_word2vec(docs, cfg, epochs) if has_vocabulary(docs, cfg) else None
    ids: list[str] = []
    retrieval_ids: list[str] = []
    vectors = retrieval = np.zeros((0, cfg.vector_size), dtype=np.float32)
    if wv is None:  # ratings without any text (the ratings-only CSV, no metadata): zero vectors, said so
        ws.word_vectors.write_text(f"0 {cfg.vector_size}\n")
    else:
        profiles = docs if cfg.profile_reviews else metadata_docs
        ids = sorted(profiles.index)
        vectors = item_vectors(profiles, wv, ids, cfg)
        retrieval_ids = sorted(docs.index)
        retrieval = item_vectors(docs, wv, retrieval_ids, cfg)
        wv.save_word2vec_format(str(ws.word_vectors))
    save_item_vectors(ids, vectors, ws.item_vectors, cfg.vector_size)
    # The retrieval models' item text also averages the item's training reviews (medium sample, test NDCG@10
    # of implicit_pointwise: 0.0229 with them, 0.0162 with metadata alone); a rating model reads a training
    # row's own rating off such words (profile_reviews), a ranking model is measured on held-out items only.
    save_item_vectors(retrieval_ids, retrieval, ws.retrieval_vectors, cfg.vector_size)
    note = (
        ""
        if wv is not None
        else (
            "no review or metadata text: w2v_mlp trains on all-zero text vectors, "
            "so it learns what mlp learns"
        )
    )
    return {
        "vocabulary": 0 if wv is None else len(wv.index_to_key),
        "held_out_reviews_left_out": dropped,
        "items_with_text": int((np.abs(vectors).sum(1) > 0).sum()),
        "note": note,
        "vector_size": cfg.vector_size,
        "epochs": epochs,
        "seconds": round(time.perf_counter() - t1, 2),
    }


def ranking_split(ws: Workspace) -> LeaveLastOut:
    """The run's temporal leave-last-out (musicrec.metrics.protocol) of every rating, the retrieval split
    (with the value column, rating, when the run is implicit feedback: its counts weigh the loss)."""
    names = pq.read_schema(ws.ratings).names
    cols = ["user_id", "item_id"] + [c for c in ("timestamp",) if c in names]
    cols += ["rating"] if feedback(ws).implicit else []
    return leave_last_out(pd.read_parquet(ws.ratings, columns=cols))


def feedback(ws: Workspace) -> Feedback:
    """The run's feedback (feedback.json from ingest); explicit ratings when a run predates it."""
    path = ws.root / "feedback.json"
    if not path.is_file():
        return Feedback("explicit", "recorded before feedback.json existed")
    return Feedback(**json.loads(path.read_text()))


def training_under_both(ws: Workspace, train: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rating split's training rows that are training rows of the leave-last-out too (the retrieval
    models' protocol), and how many were left out. The text vectors feed both families, so Word2Vec reads no
    review of an interaction either protocol holds out: under the random rating split a user's latest
    interaction, the retrieval models' test item, is in the rating split's training part four times in
    five."""
    later = ranking_split(ws)
    held = _pairs(pd.concat([later.validation, later.test]))
    keep = ~_pairs(train).isin(held)
    return train[keep], int((~keep).sum())


def items_with_tags(ws: Workspace, train: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The items table, each tagged item's description followed by its tags (musicrec.data.tags) from the
    assignments of every (user, item) pair but the interactions held out: those of the rating split that
    `train` does not hold, and the leave-last-out's validation and test. A tag a user gave an item they hold
    out would tell the text-using models the answer; an assignment of a pair that is no interaction stays."""
    items = pd.read_parquet(ws.items, columns=columns)
    if not ws.tags.is_file():
        return items
    kept, _ = training_under_both(ws, train)
    ratings = pd.read_parquet(ws.ratings, columns=["user_id", "item_id"])
    held = _pairs(ratings).difference(_pairs(kept))
    assigned = pd.read_parquet(ws.tags)
    return with_tag_text(items, tag_docs(assigned[~_pairs(assigned).isin(held)]))


def _pairs(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[["user_id", "item_id"]].astype(str))


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


def load_train_data(ws: Workspace, text: bool = True) -> TrainData:
    """The indexed training data of a workspace, built once per process and shared by every model
    trained there (read-only), so six models on the threads runner don't hold six copies. text=False: without
    the item text table, for models that use none (they can start before Word2Vec is done); the item index is
    the same either way."""
    files = [*sorted(ws.splits.glob("*.parquet")), ws.root / TEXT_ITEMS, *([ws.item_vectors] if text else [])]
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in files if p.exists())
    with _CACHE_LOCK:
        return _cached_train_data(str(ws.root), stamp, text)


def text_items(ws: Workspace) -> list[str] | None:
    """The run's text items (None for a workspace written before they were recorded)."""
    path = ws.root / TEXT_ITEMS
    return pd.read_parquet(path)["item_id"].astype(str).tolist() if path.exists() else None


@functools.lru_cache(maxsize=3)
def _cached_train_data(root: str, stamp: tuple[tuple[str, int], ...], text: bool) -> TrainData:
    ws = Workspace(Path(root))
    ids, vectors = load_item_vectors(ws.item_vectors) if text else (None, None)
    return prepare_data(read_splits(ws.splits), ids, vectors, rating_range(ws), text_items(ws))


_CACHE_LOCK = threading.Lock()
