import numpy as np
import pandas as pd

from musicrec.data.split import split_ratings
from musicrec.text import (
    Word2VecConfig,
    item_documents,
    item_documents_with_and_without_reviews,
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


def _run_with_marked_reviews(tmp_path, tiny):
    """A workspace whose latest review of each user says `heldoutword` x3 and whose oldest says `trainword` x3."""
    from musicrec.metrics.protocol import recency_rank
    from musicrec.pipeline import prepare
    from musicrec.pipeline.workspace import Workspace

    ratings, items = (t.copy() for t in tiny)
    rank, count = recency_rank(ratings["user_id"].to_numpy(), ratings["timestamp"])
    ratings.loc[(rank == 0) & (count >= 2), "review_text"] = "heldoutword heldoutword heldoutword"
    ratings.loc[(rank == count - 1) & (count >= 3), "review_text"] = "trainword trainword trainword"
    ws = Workspace.create(tmp_path / "work", "run")
    ratings.to_parquet(ws.ratings, index=False)
    items.to_parquet(ws.items, index=False)
    prepare.split(ws, 0)
    return ws, prepare.embed(ws, 0), int(((rank == 0) & (count >= 2)).sum())


def test_word2vec_reads_no_review_that_the_leave_last_out_holds_out(tmp_path, tiny):
    """The text vectors feed the rating models (random split) and the retrieval models (leave-last-out): a
    review of a user's latest interaction, the retrieval models' test item, is in the rating split's training
    part four times in five, and must still not reach Word2Vec; the oldest interactions' words do."""
    ws, out, latest = _run_with_marked_reviews(tmp_path, tiny)
    vocabulary = {line.split(" ", 1)[0] for line in ws.word_vectors.read_text().splitlines()[1:]}
    assert "trainword" in vocabulary and "heldoutword" not in vocabulary
    assert (
        0.6 * latest < out["held_out_reviews_left_out"]
    )  # validation items' reviews too, at the random split's 80%


def test_retrieval_models_use_the_runs_text_vectors_with_training_reviews(tmp_path, tiny):
    """retrieval_item_vectors.parquet averages metadata and training reviews (item_vectors.parquet, the rating
    models' input, metadata only); an implicit model at its defaults reads it in the ranking item index, does
    not save it with its weights, and is rebuilt with it."""
    import torch

    from musicrec.pipeline.champion_retrieval import load_implicit
    from musicrec.pipeline.retrieval import ranking_data, ranking_text, train_implicit

    ws, _, _ = _run_with_marked_reviews(tmp_path, tiny)
    ids, vectors = load_item_vectors(ws.retrieval_vectors)
    meta_ids, meta = load_item_vectors(ws.item_vectors)
    assert ids == meta_ids and not np.allclose(vectors, meta)  # the same items, different words
    text, items = ranking_text(ws), ranking_data(ws).items
    assert text.shape == (items.size, 50) and not text[0].any()
    assert np.array_equal(text[items.lookup([ids[7]])[0]], vectors[7])
    row = train_implicit(ws, "implicit_bpr", {"epochs": 2})
    assert row["hyperparameters"]["use_text"]
    with np.load(ws.model_dir("implicit_bpr") / "weights.npz") as npz:
        assert "text_proj" in npz.files and "text" not in npz.files
        proj = torch.from_numpy(npz["text_proj"])
    model = load_implicit(ws, "implicit_bpr")
    assert torch.equal(model.text, torch.from_numpy(text)) and torch.equal(model.text_proj, proj)
    assert model.text_proj.shape == (row["hyperparameters"]["factors"], 50)


def test_documents_are_the_metadata_then_the_first_training_reviews_tokenized_and_cut():
    """Per item: tokenize(title brand description + its first N non-empty training reviews, in row order),
    cut at max_tokens_per_doc; an item with reviews but no metadata row keeps its reviews; an item without
    any token is left out. The pair function gives the same two series as two calls."""
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "title": ["Blue Train", "", "the of", "Kind of Blue"],
            "brand": ["Coltrane", "", "", "Davis"],
            "description": ["", "", "", "modal jazz " * 5],
        }
    )
    train = pd.DataFrame(
        {
            "item_id": ["a", "z", "a", "b", "a", "d", "a"],
            "review_text": ["great horns", "only reviews here", "", "the", "second review", "x", "third"],
        }
    )
    cfg = Word2VecConfig(max_reviews_per_item=2, max_tokens_per_doc=6)
    with_reviews, without = item_documents_with_and_without_reviews(train, items, cfg)
    assert with_reviews.to_dict() == {
        "a": ["blue", "train", "coltrane", "great", "horns", "second"],
        "d": ["kind", "blue", "davis", "modal", "jazz", "modal"],
        "z": ["only", "reviews", "here"],
    }
    assert without.to_dict() == {
        "a": ["blue", "train", "coltrane"],
        "d": ["kind", "blue", "davis", "modal", "jazz", "modal"],
    }
    assert item_documents(train, items, cfg).to_dict() == with_reviews.to_dict()
    assert item_documents(train, items, cfg, include_reviews=False).to_dict() == without.to_dict()


def test_word2vec_epochs_shrink_on_large_corpora_only():
    from musicrec.text import word2vec_epochs

    cfg = Word2VecConfig()
    assert word2vec_epochs(cfg, 13_190_908) == 2  # the seed's size (its documents after the held-out reviews)
    assert word2vec_epochs(cfg, 1_300_000) == cfg.epochs == 5  # the medium sample and smaller: all epochs
    assert word2vec_epochs(cfg, 10**9) == 1
    assert word2vec_epochs(Word2VecConfig(max_epoch_words=0), 10**9) == 5
