"""The bounded evaluation of an inner-product scorer gives evaluate_scorer's numbers exactly, and settles most
users without their full score row when the scores have a common order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicrec.ranking import bounded
from musicrec.ranking.bounded import evaluate_inner_product
from musicrec.ranking.metrics import evaluate_scorer, interaction_matrix


def _case(seed: int, n_users: int, n_items: int, f: int, integer: bool, bias_scale: float):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n_users, f)).astype(np.float32)
    x = rng.normal(size=(n_items, f)).astype(np.float32)
    b = (rng.normal(size=n_items) * bias_scale).astype(np.float32)
    if integer:  # many exact ties: the index rule decides
        q, x, b = np.round(q), np.round(x), np.round(b)
    n_held = n_users + n_users // 5  # some users hold several items
    held = interaction_matrix(rng.integers(0, n_users, n_held), rng.integers(0, n_items, n_held), n_users, n_items)
    n_ex = n_users * 30
    excl = interaction_matrix(rng.integers(0, n_users, n_ex), rng.integers(0, n_items, n_ex), n_users, n_items)
    return q, x, b, held, excl


def _full(q: np.ndarray, x: np.ndarray, b: np.ndarray):
    return lambda rows: torch.addmm(torch.from_numpy(b), torch.from_numpy(q[rows]), torch.from_numpy(x).T).numpy()


@pytest.mark.parametrize(("seed", "n_items", "f", "integer", "bias_scale"), [
    (0, 20_000, 16, False, 3.0), (1, 9_000, 4, True, 1.0), (2, 70_000, 8, False, 0.0), (3, 30, 3, True, 0.0),
    (4, 5_000, 1, False, 10.0)])
def test_same_numbers_as_scoring_every_item(seed: int, n_items: int, f: int, integer: bool, bias_scale: float) -> None:
    q, x, b, held, excl = _case(seed, 300, n_items, f, integer, bias_scale)
    users = np.arange(0, 300, 2)
    want = evaluate_scorer(_full(q, x, b), users, held, excl, n_items, coverage=False)
    got = evaluate_inner_product(lambda r: q[r], x, b, users, held, excl)
    assert got == want
    assert evaluate_inner_product(lambda r: q[r], x, b, None, held, excl, k=5, recall_k=20) == evaluate_scorer(
        _full(q, x, b), None, held, excl, n_items, k=5, recall_k=20, coverage=False)


def test_a_held_out_item_that_is_also_excluded_is_still_ranked() -> None:
    q, x, b, held, excl = _case(5, 200, 10_000, 8, False, 2.0)
    both = (excl + held).tocsr()
    both.data[:] = 1.0
    assert evaluate_inner_product(lambda r: q[r], x, b, None, held, both) == evaluate_scorer(
        _full(q, x, b), None, held, both, 10_000, coverage=False)


def test_a_nan_held_out_score_is_an_error_as_in_full_scoring() -> None:
    q, x, b, held, excl = _case(6, 50, 2_000, 4, False, 1.0)
    b[held.indices[0]] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_inner_product(lambda r: q[r], x, b, None, held, excl)


def test_users_whose_item_ranks_far_down_never_get_a_full_score_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A strong bias puts most users' higher items in the first block: only the few whose held-out item is
    near the top go to the exact path."""
    rng = np.random.default_rng(7)
    n_users, n_items = 400, 60_000
    q = rng.normal(size=(n_users, 8)).astype(np.float32) * 0.1
    x = rng.normal(size=(n_items, 8)).astype(np.float32)
    b = -np.log1p(np.arange(n_items, dtype=np.float32))  # popularity-like
    items = np.where(rng.random(n_users) < 0.1, rng.integers(0, 20, n_users), rng.integers(0, n_items, n_users))
    held = interaction_matrix(np.arange(n_users), items, n_users, n_items)
    excl = interaction_matrix(rng.integers(0, n_users, 4000), rng.integers(0, 200, 4000), n_users, n_items)
    exact_rows: list[int] = []
    real = bounded._exact_ranks
    monkeypatch.setattr(bounded, "_exact_ranks", lambda q_, *a: exact_rows.append(len(q_)) or real(q_, *a))
    got = evaluate_inner_product(lambda r: q[r], x, b, None, held, excl)
    assert got == evaluate_scorer(_full(q, x, b), None, held, excl, n_items, coverage=False)
    assert got["hr@10"] > 0  # the near-top users are measured, exactly
    assert 0 < sum(exact_rows) < n_users // 4
