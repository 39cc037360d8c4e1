"""Ranking metrics and reference rankers at their limits: perfect, useless, known values, deterministic ties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from musicrec.metrics.topn import ideal_dcg, list_metrics, list_summary, top_k
from musicrec.pipeline.reference_lists import most_popular_lists, random_lists


def _lists(rows: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"user_id": u, "rank": r + 1, "item_id": i}
            for u, items in rows.items()
            for r, i in enumerate(items)
        ]
    )


def _pairs(rows: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame([{"user_id": u, "item_id": i} for u, items in rows.items() for i in items])


def hit_rate_at_k(recommended: list[str], relevant: set[str] | list[str], k: int) -> float:
    """One user's hit@k, through the vectorised list metrics."""
    return float(list_metrics(_lists({"u": recommended}), _pairs({"u": list(relevant)}), k).loc["u", "hit"])


def ndcg_at_k(recommended: list[str], relevant: set[str] | list[str], k: int) -> float:
    """One user's ndcg@k, through the vectorised list metrics."""
    return float(list_metrics(_lists({"u": recommended}), _pairs({"u": list(relevant)}), k).loc["u", "ndcg"])


def _ndcg_written_out(recommended: list[str], relevant: list[str], k: int) -> float:
    """The formula item by item: the slow, obvious version of one list's NDCG@k."""
    rel = set(relevant)
    dcg = sum(1.0 / math.log2(r + 2) for r, item in enumerate(recommended[:k]) if item in rel)
    return dcg / sum(1.0 / math.log2(r + 2) for r in range(min(len(rel), k)))


def test_perfect_ranking_scores_one():
    assert hit_rate_at_k(["a", "b", "c"], {"a", "b"}, 3) == 1.0
    assert ndcg_at_k(["a", "b", "c"], {"a", "b"}, 3) == pytest.approx(1.0)
    # more relevant items than k: a full list of hits is still ideal
    assert ndcg_at_k(["a", "b"], {"a", "b", "c", "d"}, 2) == pytest.approx(1.0)


def test_nothing_relevant_scores_zero():
    assert hit_rate_at_k(["a", "b", "c"], {"x"}, 3) == 0.0
    assert ndcg_at_k(["a", "b", "c"], {"x"}, 3) == 0.0
    # a hit beyond k does not count
    assert hit_rate_at_k(["a", "b", "x"], {"x"}, 2) == 0.0
    assert ndcg_at_k(["a", "b", "x"], {"x"}, 2) == 0.0


def test_known_ndcg_values():
    # one relevant item at rank 3: 1/log2(4) = 0.5
    assert ndcg_at_k(["a", "b", "x"], {"x"}, 10) == pytest.approx(0.5)
    # hits at ranks 2 and 3 out of two relevant: (1/log2 3 + 1/log2 4) / (1 + 1/log2 3)
    expected = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["a", "x", "y"], {"x", "y"}, 3) == pytest.approx(expected)
    assert ideal_dcg(0, 10) == 0.0 and ideal_dcg(5, 1) == pytest.approx(1.0)


def test_a_user_without_relevant_items_is_not_scored():
    got = list_metrics(_lists({"u": ["a"]}), pd.DataFrame(columns=["user_id", "item_id"]), 10)
    assert got.empty


def _top_ids(items: np.ndarray, scores: np.ndarray, k: int) -> list[str]:
    """The one top_k over a catalogue in item id order: ties go to the smaller index, so the smaller id."""
    order = np.argsort(items)
    none = sp.csr_matrix((1, len(items)), dtype=np.float32)
    return items[order][top_k(scores[order][None, :].astype(np.float32), none, k)[0]].tolist()


def test_top_k_breaks_ties_by_item_id_whatever_the_input_order():
    items = np.asarray(["d", "b", "a", "c", "e"])
    scores = np.asarray([0.5, 0.9, 0.5, 0.9, 0.1])
    assert _top_ids(items, scores, 3) == ["b", "c", "a"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        perm = rng.permutation(len(items))
        assert _top_ids(items[perm], scores[perm], 3) == ["b", "c", "a"]


def test_vectorised_metrics_agree_with_the_scalar_ones():
    recs = {"u1": ["a", "x", "y", "b"], "u2": ["c", "d", "e", "f"], "u3": ["z", "q", "r", "s"]}
    rel = {"u1": ["x", "y"], "u2": ["q"], "u3": ["z", "w", "v"], "u4": ["a"]}  # u4 has no list: scores 0
    got = list_metrics(_lists(recs), _pairs(rel), 3)
    for u, items in rel.items():
        rec = recs.get(u, [])
        assert got.loc[u, "hit"] == float(any(i in items for i in rec[:3]))
        assert got.loc[u, "ndcg"] == pytest.approx(_ndcg_written_out(rec, items, 3))


def test_list_summary_coverage_and_popularity():
    lists = _lists({"u1": ["a", "b"], "u2": ["a", "c"]})
    pop = pd.Series({"a": 10, "b": 2, "c": 0, "d": 5})
    s = list_summary(lists, _pairs({"u1": ["a"], "u2": ["z"]}), 2, pop, n_catalogue=4)
    assert s["hr@2"] == 0.5 and s["ndcg@2"] == pytest.approx(0.5)
    assert s["catalogue_coverage"] == pytest.approx(3 / 4)
    assert s["mean_popularity"] == pytest.approx((10 + 2 + 10 + 0) / 4)


def test_list_summary_of_no_lists():
    s = list_summary(
        _lists({}).reindex(columns=["user_id", "rank", "item_id"]),
        _pairs({"u1": ["a"]}),
        2,
        pd.Series({"a": 1}),
        n_catalogue=1,
    )
    assert s["hr@2"] == 0.0 and s["ndcg@2"] == 0.0 and s["catalogue_coverage"] == 0.0
    assert math.isnan(s["mean_popularity"])


def test_most_popular_excludes_rated_items():
    item_ids = np.array(["i0", "i1", "i2", "i3", "i4"], dtype=object)
    order = np.array([3, 0, 4, 1, 2])
    out = most_popular_lists(["u", "v"], order, item_ids, {"u": np.array([3, 4])}, 2)
    assert out[out["user_id"] == "u"]["item_id"].tolist() == ["i0", "i1"]
    assert out[out["user_id"] == "v"]["item_id"].tolist() == ["i3", "i0"]
    assert out["rank"].tolist() == [1, 2, 1, 2]


def test_random_lists_are_seeded_order_free_and_exclude_rated():
    item_ids = np.array([f"i{k}" for k in range(50)], dtype=object)
    exclude = {"u1": np.arange(0, 40)}
    a = random_lists(["u1", "u2", "u3"], 50, item_ids, exclude, 5, seed=7)
    b = random_lists(["u3", "u1", "u2"], 50, item_ids, exclude, 5, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(random_lists(["u1", "u2", "u3"], 50, item_ids, exclude, 5, seed=8))
    u1 = a[a["user_id"] == "u1"]["item_id"]
    assert len(u1) == 5 and u1.nunique() == 5 and not set(u1) & {f"i{k}" for k in range(40)}
