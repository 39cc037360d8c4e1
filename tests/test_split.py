import pandas as pd
import pytest

from musicrec.data.schema import drop_duplicate_ratings
from musicrec.data.split import read_splits, split_ratings, split_summary, write_splits
from musicrec.errors import DataError
from musicrec.text import Word2VecConfig, item_documents


def test_random_split_is_seeded_disjoint_and_complete(tiny):
    ratings, _ = tiny
    a, b = split_ratings(ratings, seed=3), split_ratings(ratings, seed=3)
    assert a.test.equals(b.test)
    assert not a.test.equals(split_ratings(ratings, seed=4).test)
    keys = [set(zip(p.user_id, p.item_id, strict=False)) for p in a.parts().values()]
    assert sum(map(len, keys)) == len(ratings)
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert len(a.train) == 3200 and len(a.validation) == 400 and len(a.test) == 400


def test_temporal_split_puts_newest_in_test(tiny):
    ratings, _ = tiny
    s = split_ratings(ratings, method="temporal")
    assert s.train["timestamp"].max() <= s.validation["timestamp"].min()
    assert s.validation["timestamp"].max() <= s.test["timestamp"].min()


def test_summary_counts_unseen(tiny):
    ratings, _ = tiny
    extra = pd.DataFrame([{**ratings.iloc[0].to_dict(), "user_id": "NEWUSER"}])
    s = split_ratings(ratings, seed=0)
    s.test = pd.concat([s.test, extra], ignore_index=True)
    summary = split_summary(s, 0, "random")
    assert summary["test"] == len(s.test)
    seen_u, seen_i = set(s.train["user_id"]), set(s.train["item_id"])
    for name, part in (("validation", s.validation), ("test", s.test)):  # the counts, element by element
        cold = [(u not in seen_u, i not in seen_i) for u, i in zip(part["user_id"], part["item_id"], strict=False)]
        assert summary[f"{name}_unseen_user"] == sum(u for u, _ in cold) >= (name == "test")
        assert summary[f"{name}_unseen_item"] == sum(i for _, i in cold)
        assert summary[f"{name}_unseen_both"] == sum(u and i for u, i in cold)


def test_duplicate_reviews_keep_the_latest_then_the_last_in_file_order():
    df = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "v", "u", "v", "w"],
            "item_id": ["x", "x", "y", "x", "x", "x", "x"],
            "timestamp": pd.array([5, 9, 1, None, 9, 2, None], dtype="Int64"),
            "rating": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    ).astype({"user_id": "str", "item_id": "str"})
    kept, dropped = drop_duplicate_ratings(df)
    assert dropped == 3  # (u, x) three times: the two at 9 tie, the later line wins; (v, x): 2 beats no time
    assert kept["rating"].tolist() == [3.0, 5.0, 6.0, 7.0]  # file order kept


def test_too_small_to_split():
    df = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "rating": [5.0, 4.0]})
    with pytest.raises(DataError, match="too few to split"):
        split_ratings(df)


def test_round_trip_parquet(tiny, tmp_path):
    s = split_ratings(tiny[0], seed=1)
    write_splits(s, tmp_path)
    back = read_splits(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"train.parquet", "validation.parquet", "test.parquet"}
    assert back.test[["user_id", "item_id", "rating"]].equals(s.test[["user_id", "item_id", "rating"]])


def test_word2vec_documents_never_see_held_out_reviews(tiny):
    ratings, items = tiny
    s = split_ratings(ratings.assign(review_text=[f"secret{k}" for k in range(len(ratings))]), seed=0)
    docs = item_documents(s.train, items, Word2VecConfig(max_reviews_per_item=10_000))
    words = {w for toks in docs for w in toks}
    held_out = set(s.validation.review_text) | set(s.test.review_text)
    assert not (words & held_out)
    assert set(s.train.review_text) <= words


@pytest.mark.parametrize("dtype", [object, "string[pyarrow]", "str"])
def test_contained_is_isin_for_ids_whatever_the_string_type(dtype) -> None:
    from musicrec.data.ids import contained

    pool = pd.Series(["a", "c", "c", "d"], dtype=dtype)
    for values in (["a", "b", None, "d", "a"], [], [None, None], ["x"]):
        series = pd.Series(values, dtype=dtype)
        want = series.isin(pool.dropna()).to_numpy() & series.notna().to_numpy()
        assert contained(series, pool).tolist() == want.tolist()
    assert contained(pd.Series(["a"], dtype=dtype), pd.Series([], dtype=dtype)).tolist() == [False]
