"""Word2Vec item text vectors (gensim) from training-split text only, saved without pickle."""

from __future__ import annotations

import itertools
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

TOKEN = re.compile(r"[a-z0-9']+")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "i'm",
        "in",
        "is",
        "it",
        "it's",
        "its",
        "my",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "with",
        "you",
        "your",
        "me",
        "we",
        "they",
        "he",
        "she",
        "them",
        "his",
        "her",
        "our",
        "their",
        "not",
        "no",
        "just",
        "very",
        "all",
    ]
)


@dataclass
class Word2VecConfig:
    """Hyperparameters; vector_size 50 follows the seed. workers=1 keeps training deterministic."""

    vector_size: int = 50
    window: int = 5
    min_count: int = 2
    epochs: int = 5
    sg: int = 0
    negative: int = 5
    seed: int = 0
    max_reviews_per_item: int = 10
    max_tokens_per_doc: int = 200
    # Cap on epochs x corpus words: a large corpus trains fewer epochs (the seed's size, 13.2M words: 2
    # epochs, each word of its vocabulary seen thousands of times an epoch; gensim's 5 took 29 s on the one
    # worker that keeps it deterministic). 0 = always `epochs`.
    max_epoch_words: int = 30_000_000
    # Item vectors average metadata words only. Reviews train the word vectors, but a training row's own
    # review inside its item's vector lets a model read the rating off the words: it memorised the
    # training split (train RMSE 0.50, validation 0.94) instead of learning about the item.
    profile_reviews: bool = False
    sif_a: float = 1e-3


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords."""
    return [t for t in TOKEN.findall(text.lower()) if t not in STOPWORDS]


def item_documents(
    train: pd.DataFrame, items: pd.DataFrame, cfg: Word2VecConfig, include_reviews: bool = True
) -> pd.Series:
    """One token list per item from title, brand, description and at most N TRAINING reviews of the item.

    Validation and test reviews are never read here: they would leak the answer into the text vectors.
    """
    return _documents(_metadata_tokens(items), _review_tokens(train, cfg) if include_reviews else None, cfg)


def item_documents_with_and_without_reviews(
    train: pd.DataFrame, items: pd.DataFrame, cfg: Word2VecConfig
) -> tuple[pd.Series, pd.Series]:
    """item_documents(include_reviews=True) and (include_reviews=False), the metadata tokenized once."""
    meta = _metadata_tokens(items)
    return _documents(meta, _review_tokens(train, cfg), cfg), _documents(meta, None, cfg)


def _metadata_tokens(items: pd.DataFrame) -> pd.Series:
    """item_id -> tokens of its title, brand and description."""
    meta = items.set_index("item_id")
    return (meta["title"] + " " + meta["brand"] + " " + meta["description"]).map(tokenize)


def _review_tokens(train: pd.DataFrame, cfg: Word2VecConfig) -> pd.Series:
    """item_id -> tokens of its first max_reviews_per_item non-empty training reviews (in row order), joined
    per item with plain string joins (pandas' groupby agg(" ".join) ran a Python call per item: 6.7 s at
    the seed's size)."""
    reviews = train.loc[train["review_text"].str.len() > 0, ["item_id", "review_text"]]
    reviews = reviews.groupby("item_id", sort=False).head(cfg.max_reviews_per_item)
    reviews = reviews.sort_values("item_id", kind="stable")
    keys = reviews["item_id"].to_numpy(dtype=object)
    texts = reviews["review_text"].to_numpy(dtype=object)
    if not len(keys):
        return pd.Series([], index=pd.Index([], dtype="str"), dtype=object)
    starts = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1]
    ends = np.r_[starts[1:], len(keys)]
    joined = [tokenize(" ".join(texts[a:e])) for a, e in zip(starts.tolist(), ends.tolist(), strict=False)]
    return pd.Series(joined, index=pd.Index(keys[starts], dtype="str"), dtype=object)


def _documents(meta: pd.Series, reviews: pd.Series | None, cfg: Word2VecConfig) -> pd.Series:
    """Per item, its metadata tokens then its review tokens (none: metadata only), cut at max_tokens_per_doc;
    items without any token are left out (the same tokens as tokenizing the joined text: a token never spans
    a space)."""
    cut = cfg.max_tokens_per_doc
    extra = {} if reviews is None else dict(zip(reviews.index.tolist(), reviews.tolist(), strict=False))
    ids, docs = [], []
    for item, tokens in zip(meta.index.tolist(), meta.tolist(), strict=False):
        more = extra.pop(item, None)
        doc = (tokens + more if more else tokens)[:cut]
        if doc:
            ids.append(item)
            docs.append(doc)
    for item, more in extra.items():  # reviewed items without a metadata row
        if more:
            ids.append(item)
            docs.append(more[:cut])
    return pd.Series(docs, index=pd.Index(ids, dtype="str"), dtype=object)


def text_item_ids(train: pd.DataFrame, items: pd.DataFrame) -> list[str]:
    """The items item_documents() may give text: some non-blank title, brand or description, or a non-blank
    TRAINING review. Known before Word2Vec trains, so the models' item index does not wait for it (an item
    whose words all fall out of the vocabulary gets a zero vector)."""
    meta = items[["item_id"]].copy()
    meta["text"] = (items["title"] + items["brand"] + items["description"]).str.strip().str.len() > 0
    reviewed = train.loc[train["review_text"].str.strip().str.len() > 0, "item_id"]
    return sorted(set(meta.loc[meta["text"], "item_id"]) | set(reviewed))


def _stable_hash(s: str) -> int:
    return zlib.crc32(s.encode("utf-8"))


def word2vec_epochs(cfg: Word2VecConfig, words: int) -> int:
    """Epochs over a corpus of `words` tokens: cfg.epochs,
    fewer where max_epoch_words says so (at least 1)."""
    if cfg.max_epoch_words <= 0:
        return cfg.epochs
    return max(1, min(cfg.epochs, cfg.max_epoch_words // max(1, words)))


def train_word2vec(docs: pd.Series, cfg: Word2VecConfig, epochs: int | None = None):  # -> gensim KeyedVectors
    """Train Word2Vec with one worker and a fixed seed, so vectors are identical run to run; epochs: the
    caller's word2vec_epochs for these docs when it has them (the corpus is counted once)."""
    from gensim.models import Word2Vec

    sentences = list(docs.sort_index().to_list())
    model = Word2Vec(
        sentences=sentences,
        vector_size=cfg.vector_size,
        window=cfg.window,
        min_count=cfg.min_count,
        epochs=epochs or word2vec_epochs(cfg, sum(map(len, sentences))),
        sg=cfg.sg,
        negative=cfg.negative,
        seed=cfg.seed,
        workers=1,
        hashfxn=_stable_hash,
    )
    return model.wv


def item_vectors(docs: pd.Series, wv, item_ids: list[str], cfg: Word2VecConfig) -> np.ndarray:
    """SIF-weighted mean word vector per item, scaled to unit length
    (rows follow item_ids); items without known words get zeros."""
    vocab = wv.key_to_index
    counts = np.asarray([wv.get_vecattr(k, "count") for k in wv.index_to_key], dtype=np.float64)
    weights = cfg.sif_a / (cfg.sif_a + counts / max(counts.sum(), 1.0))
    # every token of every document looked up in one pass of C-level iteration (dict.get mapped over the
    # chained token lists), not a Python loop per item and token
    doc_rows = pd.Index(item_ids).get_indexer(docs.index)
    lists = docs.tolist()
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    tokens = itertools.chain.from_iterable(lists)
    cols = np.fromiter(map(vocab.get, tokens, itertools.repeat(-1)), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(doc_rows, lengths)
    known = (cols >= 0) & (rows >= 0)
    rows, cols = rows[known], cols[known]
    mat = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(item_ids), len(vocab)))
    mat = mat.multiply(weights[None, :]).tocsr()
    total = np.asarray(mat.sum(axis=1)).ravel()
    vecs = mat @ wv.vectors.astype(np.float64)
    has_text = total > 0
    if has_text.any():  # remove the direction all averages share (SIF), so cosine tells items apart
        vecs[has_text] -= vecs[has_text].mean(axis=0)
    norm = np.linalg.norm(vecs, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        vecs = np.where(has_text[:, None] & (norm > 0), vecs / norm, 0.0)
    return vecs.astype(np.float32)  # unit length: a stable MLP input scale, and dot product = cosine


def save_item_vectors(
    item_ids: list[str], vectors: np.ndarray, path: str | Path, dim: int | None = None
) -> None:
    """Parquet with item_id and one float32 column per dimension (no pickle); with no items, `dim` columns."""
    dim = vectors.shape[1] if dim is None else dim
    cols = {f"v{k}": np.asarray(vectors[:, k], dtype=np.float32) for k in range(dim)}
    pd.DataFrame({"item_id": pd.Series(item_ids, dtype="str"), **cols}).to_parquet(path, index=False)


def load_item_vectors(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Inverse of save_item_vectors."""
    df = pd.read_parquet(path)
    return df["item_id"].astype(str).tolist(), df.drop(columns="item_id").to_numpy(np.float32)
