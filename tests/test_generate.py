"""The sample generator: deterministic files in the Amazon 2018 format with the structure models must find."""

from __future__ import annotations

import gzip
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from musicrec.data.generate import generate_sample
from musicrec.data.schema import drop_duplicate_ratings
from musicrec.data.world import SCALES, SIGMA, expected_rating
from musicrec.errors import MusicrecError

FILES = ("reviews.json.gz", "meta.json.gz", "card.json")


def _lines(path: Path) -> list[dict]:
    with gzip.open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict], list[dict]]:
    out = tmp_path_factory.mktemp("sample")
    card = generate_sample(out, "small", seed=0)
    return out, card, _lines(out / "reviews.json.gz"), _lines(out / "meta.json.gz")


@pytest.fixture(scope="module")
def reviews(sample: tuple) -> pd.DataFrame:
    return pd.DataFrame(sample[2])


@pytest.fixture(scope="module")
def meta(sample: tuple) -> pd.DataFrame:
    return pd.DataFrame(sample[3])


def test_same_seed_gives_identical_bytes_and_another_seed_differs(sample: tuple, tmp_path: Path) -> None:
    out = sample[0]
    generate_sample(tmp_path / "again", "small", seed=0)
    generate_sample(tmp_path / "other", "small", seed=1)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
        assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes(), name


def test_counts_match_the_card_and_the_scale(
    sample: tuple, reviews: pd.DataFrame, meta: pd.DataFrame
) -> None:
    out, card, _, _ = sample
    spec = SCALES["small"]
    assert (card["users"], card["items"], card["ratings"]) == (spec.users, spec.items, spec.ratings)
    assert reviews["reviewerID"].nunique() == spec.users
    assert reviews["asin"].nunique() == spec.items
    assert len(reviews) == spec.ratings
    assert len(reviews) - len(reviews.drop_duplicates(["reviewerID", "asin"])) == card["duplicates"] > 0
    assert len(meta) == meta["asin"].nunique() == card["items_with_meta"] + card["cold_items_with_text"]
    stars = reviews["overall"].astype(int).value_counts()
    assert card["rating_distribution"] == {str(k): int(stars.get(k, 0)) for k in range(1, 6)}
    assert card["rating_std"] == pytest.approx(reviews["overall"].std(ddof=0), abs=1e-3)
    assert orjson.loads((out / "card.json").read_bytes()) == card
    assert set(card["files"]) == {"reviews.json.gz", "meta.json.gz"}


def test_scales_keep_the_real_ratios() -> None:
    from musicrec.cli import SAMPLE_SCALES

    assert SAMPLE_SCALES == list(SCALES)
    seed = SCALES["seed"]
    assert (seed.users, seed.items, seed.ratings) == (840_372, 456_992, 1_584_082)
    for name, target in (
        ("small", 20_000),
        ("medium", 200_000),
        ("seed2x", 3_168_164),
        ("seed4x", 6_336_328),
    ):
        spec = SCALES[name]
        assert spec.ratings == target
        assert spec.users / spec.ratings == pytest.approx(seed.users / seed.ratings, rel=1e-3)
        assert spec.items / spec.ratings == pytest.approx(seed.items / seed.ratings, rel=1e-3)


def test_review_lines_have_the_2018_fields(sample: tuple) -> None:
    required = {"overall", "verified", "reviewTime", "reviewerID", "asin", "summary", "unixReviewTime"}
    for line in sample[2]:
        assert required <= set(line), line
        assert re.fullmatch(r"A[0-9A-Z]{13}", line["reviewerID"]) and re.fullmatch(
            r"B[0-9A-Z]{9}", line["asin"]
        )
        assert line["overall"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        day = datetime.fromtimestamp(line["unixReviewTime"], UTC)
        assert line["reviewTime"] == f"{day.month:02d} {day.day}, {day.year}" and 1998 <= day.year <= 2018
    seen = Counter(key for line in sample[2] for key in line)
    assert seen["reviewText"] > 0.99 * len(sample[2]) and seen["reviewerName"] > 0.98 * len(sample[2])
    assert 0 < seen["vote"] < len(sample[2]) and seen["style"] > 0.8 * len(sample[2])


def test_meta_lines_have_the_2018_fields(meta: pd.DataFrame) -> None:
    for key in ("asin", "title", "brand", "also_buy", "also_view", "category", "description"):
        assert key in meta.columns
    assert meta["category"].str[0].eq("CDs & Vinyl").all() and meta["category"].str[1].nunique() == 20
    assert 0 < meta["title"].eq("").mean() < 0.1
    assert meta["description"].map(lambda d: isinstance(d, list)).all()


def test_ratings_are_j_shaped(sample: tuple) -> None:
    card = sample[1]
    dist = {int(k): v for k, v in card["rating_distribution"].items()}
    assert max(dist, key=dist.get) == 5 and dist[5] > 0.6 * card["ratings"]
    assert dist[4] > dist[3] and dist[1] > dist[2]  # the J: more 1s than 2s
    assert 4.2 < card["mean_rating"] < 4.8


def test_most_users_have_one_rating_and_items_have_a_long_tail(reviews: pd.DataFrame) -> None:
    per_user = reviews.groupby("reviewerID").size()
    per_item = reviews.groupby("asin").size()
    assert 0.6 < (per_user == 1).mean() < 0.8
    assert per_item.max() > 10 * per_item.median()


def test_noise_floor_is_positive_and_below_the_spread(sample: tuple) -> None:
    card = sample[1]
    assert 0 < card["noise_rmse"] < card["rating_std"]


def test_expected_rating_is_exact() -> None:
    assert expected_rating(np.array([3.0]))[0] == pytest.approx(3.0)  # symmetric around the middle star
    assert expected_rating(np.array([-20.0, 30.0])) == pytest.approx([1.0, 5.0])
    rng = np.random.default_rng(0)
    draws = np.clip(np.rint(4.6 + rng.normal(0, SIGMA, 400_000)), 1, 5)
    assert expected_rating(np.array([4.6]))[0] == pytest.approx(draws.mean(), abs=0.01)


def test_titles_carry_the_genre(meta: pd.DataFrame) -> None:
    titled = meta[meta["title"] != ""]
    genre = titled["category"].str[1]
    words = titled["title"].str.lower().str.replace(r"\(remastered\)", "", regex=True).str.split()
    counts = pd.DataFrame({"genre": genre, "word": words}).explode("word").value_counts()
    best = counts.reset_index().sort_values("count", ascending=False).drop_duplicates("word")
    word_genre = dict(zip(best["word"], best["genre"], strict=True))
    guess = [Counter(word_genre[w] for w in ws).most_common(1)[0][0] for ws in words]
    assert np.mean(np.array(guess) == genre.to_numpy()) > 0.6  # the largest genre alone is 14%


def test_review_words_follow_the_rating(reviews: pd.DataFrame) -> None:
    text = reviews["reviewText"].fillna("").str.lower()
    assert reviews.loc[text.str.contains("awful|terrible"), "overall"].mean() < 2.0
    assert reviews.loc[text.str.contains("masterpiece|love"), "overall"].mean() > 4.5


def test_also_buy_comes_from_co_purchases_in_the_catalogue(reviews: pd.DataFrame, meta: pd.DataFrame) -> None:
    rated = set(reviews["asin"])
    pairs = meta[["asin", "also_buy", "category"]].explode("also_buy").dropna()
    assert len(pairs) > len(meta) and pairs["also_buy"].isin(rated).all()
    assert meta["also_view"].explode().dropna().isin(rated | set(meta["asin"])).all()
    genre = dict(zip(meta["asin"], meta["category"].str[1], strict=True))
    same = [genre[a] == genre[b] for a, b in zip(pairs["asin"], pairs["also_buy"], strict=True) if b in genre]
    shares = meta["category"].str[1].value_counts(normalize=True)
    assert np.mean(same) > 3 * (shares**2).sum()  # far above chance: users stick to their genres


def test_duplicates_are_older_so_keeping_the_latest_keeps_the_truth(
    sample: tuple, reviews: pd.DataFrame
) -> None:
    table = pd.DataFrame(
        {
            "user_id": reviews["reviewerID"],
            "item_id": reviews["asin"],
            "rating": reviews["overall"],
            "timestamp": reviews["unixReviewTime"],
        }
    )
    _, dropped = drop_duplicate_ratings(table)
    assert dropped == sample[1]["duplicates"]
    twice = table[table.duplicated(["user_id", "item_id"], keep=False)]
    assert twice.groupby(["user_id", "item_id"])["timestamp"].nunique().eq(2).all()


def test_cold_items_have_text_but_no_ratings(
    sample: tuple, reviews: pd.DataFrame, meta: pd.DataFrame
) -> None:
    cold = meta[~meta["asin"].isin(set(reviews["asin"]))]
    assert len(cold) == sample[1]["cold_items_with_text"] > 0
    assert cold["description"].map(len).gt(0).mean() > 0.5 and cold["also_buy"].map(len).eq(0).all()
    assert len(meta) - len(cold) == sample[1]["items_with_meta"] < sample[1]["items"]


def test_reports_progress_prints_nothing_and_rejects_unknown_scales(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(MusicrecError, match="unknown sample scale"):
        generate_sample(tmp_path, "huge")
    with pytest.raises(MusicrecError, match="seed"):
        generate_sample(tmp_path, "small", seed=-1)
    messages: list[str] = []
    generate_sample(tmp_path / "out", "small", seed=3, progress=messages.append)
    assert len(messages) >= 3 and capsys.readouterr() == ("", "")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES)


def test_also_buy_never_learns_from_a_users_latest_two_or_from_after_the_cutoff():
    from musicrec.data.generate import ALSO_BUY_CUTOFF, history_before_cutoff

    rng = np.random.default_rng(4)
    user, day = rng.integers(0, 300, 5000), rng.integers(0, 400, 5000)
    keep = history_before_cutoff(user, day)
    assert not keep[day >= np.quantile(day, ALSO_BUY_CUTOFF)].any()
    for u in np.unique(user):
        rows = np.flatnonzero(user == u)
        latest_two = rows[np.argsort(-day[rows], kind="stable")[:2]]
        assert not keep[latest_two].any()  # whichever way ties are broken, neither held-out item is used
        tied = rows[day[rows] >= day[latest_two].min()]
        assert not keep[tied].any()
    assert 0.3 < keep.mean() < 0.8  # most of the earlier history still counts
