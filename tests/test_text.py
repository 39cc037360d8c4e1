import numpy as np

from musicrec.data.split import split_ratings
from musicrec.text import (
    Word2VecConfig,
    item_documents,
    item_vectors,
    load_item_vectors,
    save_item_vectors,
    tokenize,
    train_word2vec,
)


def _vectors(tiny, seed=0):
    ratings, items = tiny
    cfg = Word2VecConfig(seed=seed)
    docs = item_documents(split_ratings(ratings).train, items, cfg)
    wv = train_word2vec(docs, cfg)
    ids = list(items.item_id) + ["NO_TEXT_ITEM"]
    return ids, item_vectors(docs, wv, ids, cfg), items


def test_tokenize_lowercases_and_drops_stopwords():
    assert tokenize("The Beatles, LIVE at the BBC!") == ["beatles", "live", "bbc"]


def test_vectors_are_deterministic_and_50_dims(tiny):
    ids, a, _ = _vectors(tiny)
    _, b, _ = _vectors(tiny)
    assert a.shape == (len(ids), 50)
    np.testing.assert_array_equal(a, b)


def test_no_text_gives_zero_vector_and_genre_structure(tiny):
    _ids, vec, items = _vectors(tiny)
    assert not vec[-1].any()
    genre = items.brand.to_numpy()
    unit = vec[:-1] / np.linalg.norm(vec[:-1], axis=1, keepdims=True)
    sim = unit @ unit.T
    same = sim[genre[:, None] == genre[None, :]].mean()
    other = sim[genre[:, None] != genre[None, :]].mean()
    assert same > other + 0.1


def test_item_vectors_round_trip_without_pickle(tiny, tmp_path):
    ids, vec, _ = _vectors(tiny)
    save_item_vectors(ids, vec, tmp_path / "v.parquet")
    back_ids, back = load_item_vectors(tmp_path / "v.parquet")
    assert back_ids == ids
    np.testing.assert_array_equal(back, vec)
    assert b"pickle" not in (tmp_path / "v.parquet").read_bytes()[:64]
