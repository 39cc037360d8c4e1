"""The bounded evaluation of an inner-product scorer gives evaluate_scorer's numbers exactly (ranks, lists and
coverage), and ranks most users over a short prefix of the items when the scores have a common order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicrec.metrics import bounded
from musicrec.metrics.bounded import evaluate_inner_product
from musicrec.metrics.full import evaluate_scorer
from musicrec.metrics.topn import interaction_matrix


def _case(seed: int, n_users: int, n_items: int, f: int, integer: bool, bias_scale: float):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n_users, f)).astype(np.float32)
    x = rng.normal(size=(n_items, f)).astype(np.float32)
    b = (rng.normal(size=n_items) * bias_scale).astype(np.float32)
    if integer:  # many exact ties: the index rule decides
        q, x, b = np.round(q), np.round(x), np.round(b)
    n_held = n_users + n_users // 5  # some users hold several items
    held = interaction_matrix(
        rng.integers(0, n_users, n_held), rng.integers(0, n_items, n_held), n_users, n_items
    )
    n_ex = n_users * 30
    excl = interaction_matrix(
        rng.integers(0, n_users, n_ex), rng.integers(0, n_items, n_ex), n_users, n_items
    )
    return q, x, b, held, excl


def _full(q: np.ndarray, x: np.ndarray, b: np.ndarray):
    return lambda rows: torch.addmm(
        torch.from_numpy(b), torch.from_numpy(q[rows]), torch.from_numpy(x).T
    ).numpy()


@pytest.mark.parametrize(
    ("seed", "n_items", "f", "integer", "bias_scale"),
    [
        (0, 20_000, 16, False, 3.0),
        (1, 9_000, 4, True, 1.0),
        (2, 70_000, 8, False, 0.0),
        (3, 30, 3, True, 0.0),
        (4, 5_000, 1, False, 10.0),
    ],
)
def test_same_numbers_as_scoring_every_item(
    seed: int, n_items: int, f: int, integer: bool, bias_scale: float
) -> None:
    q, x, b, held, excl = _case(seed, 300, n_items, f, integer, bias_scale)
    users = np.arange(0, 300, 2)
    for coverage in (False, True):
        want = evaluate_scorer(_full(q, x, b), users, held, excl, n_items, coverage=coverage)
        assert evaluate_inner_product(lambda r: q[r], x, b, users, held, excl, coverage=coverage) == want
    assert evaluate_inner_product(
        lambda r: q[r], x, b, None, held, excl, k=5, recall_k=20, max_users=100, seed=3, coverage=True
    ) == evaluate_scorer(_full(q, x, b), None, held, excl, n_items, k=5, recall_k=20, max_users=100, seed=3)


def test_a_held_out_item_that_is_also_excluded_is_still_ranked() -> None:
    q, x, b, held, excl = _case(5, 200, 10_000, 8, False, 2.0)
    both = (excl + held).tocsr()
    both.data[:] = 1.0
    for coverage in (False, True):
        assert evaluate_inner_product(
            lambda r: q[r], x, b, None, held, both, coverage=coverage
        ) == evaluate_scorer(_full(q, x, b), None, held, both, 10_000, coverage=coverage)


def test_a_nan_held_out_score_is_an_error_as_in_full_scoring() -> None:
    q, x, b, held, excl = _case(6, 50, 2_000, 4, False, 1.0)
    b[held.indices[0]] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_inner_product(lambda r: q[r], x, b, None, held, excl)


@pytest.mark.parametrize("coverage", [False, True])
def test_most_users_are_ranked_over_a_short_prefix(monkeypatch: pytest.MonkeyPatch, coverage: bool) -> None:
    """A strong, popularity-like bias puts every user's top items and most held-out items' betters early in
    the bias order: the cells scored exactly are a small part of users x items, and the numbers still agree."""
    rng = np.random.default_rng(7)
    n_users, n_items = 400, 60_000
    q = rng.normal(size=(n_users, 8)).astype(np.float32) * 0.1
    x = rng.normal(size=(n_items, 8)).astype(np.float32)
    b = -np.log1p(np.arange(n_items, dtype=np.float32))
    items = np.where(
        rng.random(n_users) < 0.1, rng.integers(0, 20, n_users), rng.integers(0, n_items, n_users)
    )
    held = interaction_matrix(np.arange(n_users), items, n_users, n_items)
    excl = interaction_matrix(rng.integers(0, n_users, 4000), rng.integers(0, 200, 4000), n_users, n_items)
    scored: list[int] = []
    real = bounded._ranks_over
    monkeypatch.setattr(
        bounded,
        "_ranks_over",
        lambda q_, x_, b_, cols, *a: scored.append(len(q_) * len(cols)) or real(q_, x_, b_, cols, *a),
    )
    got = evaluate_inner_product(lambda r: q[r], x, b, None, held, excl, coverage=coverage)
    assert got == evaluate_scorer(_full(q, x, b), None, held, excl, n_items, coverage=coverage)
    assert got["hr@10"] > 0  # the near-top users are measured, exactly
    assert 0 < sum(scored) < n_users * n_items // 10


def test_users_are_scored_in_batches_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    q, x, b, held, excl = _case(8, 300, 20_000, 8, False, 3.0)
    want = evaluate_scorer(_full(q, x, b), None, held, excl, 20_000)
    monkeypatch.setattr(bounded, "SCORE_BUDGET", 3 * bounded.FIRST_BLOCK)  # 3 users a block, 1 a full row
    assert evaluate_inner_product(lambda r: q[r], x, b, None, held, excl, coverage=True) == want
