"""Full-ranking metrics at their limits: perfect ranker, known ranks, exclusions, ties, empty inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from musicrec.metrics.full import (
    _random_list,
    evaluate_random,
    evaluate_scorer,
    evaluate_static,
    sample_users,
)
from musicrec.metrics.topn import (
    dcg_gain,
    heldout_ranks,
    ideal_dcg,
    interaction_matrix,
    top_k,
    topk_ranks,
    user_metrics,
)


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    return interaction_matrix(
        users, np.concatenate([np.asarray(r, int) for r in rows] or [[]]), len(rows), n_items
    )


def test_perfect_ranker_scores_one() -> None:
    rng = np.random.default_rng(0)
    held = _csr([[int(i)] for i in rng.integers(0, 50, 20)], 50)
    excl = _csr([[] for _ in range(20)], 50)
    res = evaluate_scorer(lambda u: held[u].toarray() + rng.random((len(u), 50)) * 0.1, None, held, excl, 50)
    assert res["hr@10"] == res["ndcg@10"] == res["recall@50"] == 1.0
    assert res["users"] == 20


@pytest.mark.parametrize("rank", [1, 2, 5, 10, 11, 50])
def test_item_at_rank_r_gives_ndcg_one_over_log2_r_plus_1(rank: int) -> None:
    n = 60
    scores = np.arange(n, 0, -1, dtype=np.float32)[None, :]  # item j at 1-based rank j + 1
    held = _csr([[rank - 1]], n)
    m = user_metrics(heldout_ranks(scores, held, _csr([[]], n)), held)
    assert m["ndcg@10"][0] == pytest.approx(1 / np.log2(rank + 1) if rank <= 10 else 0.0)
    assert m["hr@10"][0] == float(rank <= 10)
    assert m["recall@50"][0] == float(rank <= 50)


def test_the_one_dcg_at_known_values() -> None:
    assert dcg_gain(np.arange(3)) == pytest.approx([1.0, 1 / np.log2(3), 0.5])
    two = 1 + 1 / np.log2(3)
    assert ideal_dcg(np.array([0, 1, 2, 5]), 2) == pytest.approx([0.0, 1.0, two, two])  # capped at k
    assert ideal_dcg(3, 0) == 0.0  # nothing can be listed at k = 0


def test_worst_ranker_scores_zero() -> None:
    n = 60
    held = _csr([[n - 1], [0]], n)
    scores = np.tile(np.arange(n, 0, -1, dtype=np.float32), (2, 1))  # item 0 best, item n - 1 last
    scores[1] = scores[1][::-1]
    res = evaluate_scorer(lambda u: scores[u], None, held, _csr([[], []], n), n)
    assert res["hr@10"] == res["ndcg@10"] == res["recall@50"] == 0.0
    assert res["coverage@10"] == pytest.approx(20 / n)  # the two lists share nothing


def test_excluded_items_never_count() -> None:
    scores = np.array([[9, 8, 7, 6, 5]], np.float32)
    held = _csr([[3]], 5)
    assert heldout_ranks(scores, held, _csr([[]], 5))[0] == 3
    assert heldout_ranks(scores, held, _csr([[0, 2]], 5))[0] == 1
    assert heldout_ranks(scores, held, _csr([[3]], 5))[0] == 3  # the held-out item itself is always ranked
    assert top_k(scores, _csr([[0, 2]], 5), 3).tolist() == [[1, 3, 4]]
    assert top_k(scores, _csr([[0, 1, 2]], 5), 3).tolist() == [[3, 4, -1]]  # fewer candidates than k


def test_top_k_drops_nan_and_minus_inf_and_keeps_plus_inf() -> None:
    scores = np.array(
        [
            [1, np.nan, np.inf, -np.inf, 2],  # NaN: never listed
            [1, 3, np.inf, -np.inf, 2],  # no NaN, but inf - inf makes the sum NaN: same answer
            [np.nan, np.nan, 0, np.nan, np.nan],
        ],
        np.float32,
    )
    none = _csr([[], [], []], 5)
    # -inf and NaN are no candidates (as excluded items are): -1 pads
    assert top_k(scores, none, 5).tolist() == [[2, 4, 0, -1, -1], [2, 1, 4, 0, -1], [2, -1, -1, -1, -1]]
    assert top_k(scores[:2], _csr([[2], [1]], 5), 2).tolist() == [[4, 0], [2, 4]]


def test_ties_are_broken_by_item_index_whatever_the_input_order() -> None:
    scores = np.zeros((1, 8), np.float32)
    scores[0, [2, 5, 7]] = 1.0
    assert top_k(scores, _csr([[]], 8), 4).tolist() == [[2, 5, 7, 0]]
    ranks = heldout_ranks(scores, _csr([[0, 5, 7]], 8), _csr([[]], 8))
    assert ranks.tolist() == [3, 1, 2]
    perm = np.random.default_rng(1).permutation(8)  # same scores listed in another order: same ranks per item
    inv = np.argsort(perm)
    assert heldout_ranks(scores[:, perm][:, inv], _csr([[0, 5, 7]], 8), _csr([[]], 8)).tolist() == [3, 1, 2]


def test_several_heldout_items_and_topk_input() -> None:
    scores = np.array([[5, 4, 3, 2, 1]], np.float32)
    held = _csr([[0, 4]], 5)
    m = user_metrics(heldout_ranks(scores, held, _csr([[]], 5)), held, k=2, recall_k=3)
    assert m["ndcg@2"][0] == pytest.approx(1.0 / (1 + 1 / np.log2(3)))
    assert m["recall@3"][0] == 0.5
    assert topk_ranks(np.array([[4, 0, 1]]), held).tolist() == [1, 0]


def test_empty_inputs_and_nan() -> None:
    empty = sp.csr_matrix((0, 10), dtype=np.float32)
    res = evaluate_scorer(lambda u: np.zeros((len(u), 10), np.float32), None, empty, empty, 10)
    assert res["users"] == 0 and res["hr@10"] == 0.0 and res["coverage@10"] == 0.0
    assert top_k(np.zeros((0, 10), np.float32), empty, 10).shape == (0, 10)
    with pytest.raises(ValueError, match="NaN"):
        heldout_ranks(np.full((1, 3), np.nan, np.float32), _csr([[1]], 3), _csr([[]], 3))


def test_batches_and_user_sample_are_deterministic() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 40
    held = interaction_matrix(np.arange(n_users), rng.integers(0, n_items, n_users), n_users, n_items)
    excl = interaction_matrix(rng.integers(0, n_users, 900), rng.integers(0, n_items, 900), n_users, n_items)
    table = rng.standard_normal((n_users, n_items)).astype(np.float32)
    whole = evaluate_scorer(lambda u: table[u], None, held, excl, n_items, batch=n_users)
    assert evaluate_scorer(lambda u: table[u], None, held, excl, n_items, batch=7) == pytest.approx(whole)
    assert 0.0 < whole["coverage@10"] <= 1.0
    a, b = sample_users(np.arange(n_users), 50, seed=3), sample_users(np.arange(n_users)[::-1], 50, seed=3)
    assert a.tolist() == b.tolist() and len(a) == 50


def _case(seed: int, n_users: int = 400, n_items: int = 60) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    extra = rng.integers(0, n_users, 40)  # a few users with two held-out items
    held = interaction_matrix(
        np.r_[np.arange(n_users), extra], rng.integers(0, n_items, n_users + 40), n_users, n_items
    )
    excl = interaction_matrix(
        rng.integers(0, n_users, 4000), rng.integers(0, n_items, 4000), n_users, n_items
    )
    return held, excl


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_static_scores_give_what_scoring_every_user_gives(seed: int) -> None:
    held, excl = _case(seed)
    rng = np.random.default_rng(seed)
    pop = rng.integers(0, 6, held.shape[1]).astype(np.float32)  # many ties: the index rule decides
    pop[3] = np.nan
    pop[7] = -np.inf
    keep = np.ones(held.shape[1], np.float32)
    keep[[3, 7]] = 0.0  # a held-out item's score must be a number
    held = sp.csr_matrix(held.multiply(keep[None, :]))
    held.eliminate_zeros()
    users = np.arange(0, held.shape[0], 3)
    generic = evaluate_scorer(lambda u: np.tile(pop, (len(u), 1)), users, held, excl, held.shape[1], batch=17)
    static = evaluate_static(pop, users, held, excl)
    assert static == pytest.approx(generic)
    assert evaluate_static(pop, None, held, excl, max_users=50, seed=4) == pytest.approx(
        evaluate_scorer(
            lambda u: np.tile(pop, (len(u), 1)), None, held, excl, held.shape[1], max_users=50, seed=4
        )
    )


def test_random_ranking_matches_scoring_with_random_numbers() -> None:
    held, excl = _case(5, n_users=3000, n_items=40)
    rng = np.random.default_rng(0)
    drawn = evaluate_random(None, held, excl, seed=1)
    scored = evaluate_scorer(lambda u: rng.random((len(u), 40)), None, held, excl, 40)
    cands = 40 - np.diff(excl.indptr) + np.asarray(held.multiply(excl).sum(1)).ravel()
    expected_hr = np.mean(np.minimum(1.0, 10 / cands[np.diff(held.indptr) == 1]))
    for result in (drawn, scored):  # both near the expectation (one held-out item: P(hit) = 10 / candidates)
        assert result["hr@10"] == pytest.approx(expected_hr, abs=0.03)
    assert drawn["users"] == scored["users"]
    assert drawn["coverage@10"] == 1.0  # 3,000 random lists of 10 cover 40 items
    assert drawn == evaluate_random(None, held, excl, seed=1)  # seeded


def test_random_lists_are_distinct_unexcluded_items() -> None:
    excl = _csr([[0, 1, 2, 3, 4, 5], list(range(1, 1000))], 1000)
    rng = np.random.default_rng(0)
    lst = _random_list(rng, excl, 0, 10, 1000)
    assert len(set(lst.tolist())) == 10 and min(lst) >= 6
    assert _random_list(rng, excl, 1, 10, 1000).tolist() == [0]  # fewer candidates than k: all of them


def _reference(
    scores: np.ndarray, held: sp.csr_matrix, excl: sp.csr_matrix, k: int
) -> tuple[list[int], list[list[int]]]:
    """The tie rule written out item by item: the slow, obvious version of ranks and top-k lists."""
    ranks, lists = [], []
    for r in range(scores.shape[0]):
        out = set(excl.indices[excl.indptr[r] : excl.indptr[r + 1]].tolist())
        row = [(float(s), j) for j, s in enumerate(scores[r])]
        for item in held.indices[held.indptr[r] : held.indptr[r + 1]]:
            t = float(scores[r, item])
            ranks.append(
                sum(1 for s, j in row if j not in out and j != item and (s > t or (s == t and j < item)))
            )
        ok = sorted(((-s, j) for s, j in row if j not in out and s > -np.inf), key=lambda x: x)
        lists.append([j for _, j in ok[:k]] + [-1] * (k - min(k, len(ok))))
    return ranks, lists


@pytest.mark.parametrize("seed", range(6))
def test_compiled_scan_matches_the_tie_rule_written_out(seed: int) -> None:
    """Few distinct values (masses of ties), NaN, +-inf, excluded held-out items, several held-out items per
    row and rows with fewer candidates than k: the one-pass kernel gives the written-out rule's answers."""
    rng = np.random.default_rng(seed)
    n_rows, n_items, k = 40, 30, 10
    scores = rng.integers(0, 4, (n_rows, n_items)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.05] = np.nan
    scores[rng.random(scores.shape) < 0.03] = np.inf
    scores[rng.random(scores.shape) < 0.03] = -np.inf
    held_rows = [
        sorted(set(rng.choice(np.flatnonzero(np.isfinite(scores[r])), rng.integers(0, 4)).tolist()))
        for r in range(n_rows)
    ]
    excl_rows = [sorted(set(rng.integers(0, n_items, rng.integers(0, 28)).tolist())) for _ in range(n_rows)]
    held, excl = _csr(held_rows, n_items), _csr(excl_rows, n_items)
    want_ranks, want_lists = _reference(scores, held, excl, k)
    assert heldout_ranks(scores, held, excl).tolist() == want_ranks
    assert top_k(scores, excl, k).tolist() == want_lists
    assert np.isnan(scores).any()  # not overwritten unless asked
