"""The kinds that win on dense interaction data (ease, als) and the sequence-aware baseline (transitions):
what each computes, checked against a direct computation or a crafted data set, beyond the contract that
tests/test_model_contract.py runs for every registered model."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from synth import clustered_ratings
from test_model_contract import _clusters

from musicrec import registry
from musicrec.implicit.base import Interactions, Skipped
from musicrec.implicit.itemitem import truncated_svd
from musicrec.metrics.topn import interaction_matrix


def _scores(model, n_users: int, n_items: int) -> np.ndarray:
    """Every (user, item) score of a fitted model, users x items (spot-checked against its forward)."""
    with torch.no_grad():
        out = (model.query(torch.arange(n_users)) @ model.item_vectors().T + model.item_bias).numpy()
        u, i = torch.tensor([0, n_users - 1]), torch.tensor([n_items - 1, 1])
        np.testing.assert_allclose(model(u, i).numpy(), out[u, i], atol=1e-5)
    return out


def _unseen_top(scores: np.ndarray, seen: np.ndarray, k: int = 10) -> np.ndarray:
    """Each user's k best items among those they have not interacted with (item 0 never)."""
    masked = np.where(seen > 0, -np.inf, scores)
    masked[:, 0] = -np.inf
    return np.argsort(-masked, axis=1, kind="stable")[:, :k]


# --- ease ---


def test_ease_serves_exactly_the_direct_numpy_ease_on_a_small_catalogue():
    rng = np.random.default_rng(0)
    n_users, n_items, l2 = 40, 13, 4.0
    x = (rng.random((n_users, n_items)) < 0.3).astype(np.float64)
    x[:, 0] = 0.0  # index 0 is the unknown item
    users, items = np.nonzero(x)
    data = Interactions(users, items, n_users, n_items)
    model = registry.model_class("ease").refit("ease", registry.parse_config("ease", {"l2": l2}), data, 1)
    p = np.linalg.inv(x.T @ x + l2 * np.eye(n_items))
    b = np.eye(n_items) - p / np.diag(p)[None, :]
    expected = x @ b
    bias = model.item_bias.numpy()
    np.testing.assert_allclose(_scores(model, n_users, n_items) - bias, expected, atol=1e-5)
    assert model.item_vectors().shape[1] == n_items - 1  # exact: one column per item (not the unknown)


def test_ease_low_rank_keeps_the_exact_ranking_at_full_rank_and_nearly_at_half():
    c = _clusters()  # its items shifted by one: index 0 is the unknown item, without interactions
    d = Interactions(c.users, c.items + 1, c.n_users, c.n_items + 1)
    cfg = {"l2": 30.0}
    kind = registry.model_class("ease")
    exact = kind.refit("ease", registry.parse_config("ease", cfg), d, 1)
    seen = interaction_matrix(d.users, d.items, d.n_users, d.n_items).toarray()
    scores = _scores(exact, d.n_users, d.n_items)
    want = _unseen_top(scores, seen)
    # rank n_items - 1: B's rank (the unknown item's row and column are zero), so the same scores
    full = kind.refit("ease", registry.parse_config("ease", {**cfg, "factors": d.n_items - 1}), d, 1)
    assert full.item_vectors().shape[1] == d.n_items - 1
    np.testing.assert_allclose(_scores(full, d.n_users, d.n_items), scores, atol=1e-4)
    low = kind.refit("ease", registry.parse_config("ease", {**cfg, "factors": d.n_items // 2}), d, 1)
    got = _unseen_top(_scores(low, d.n_users, d.n_items), seen)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
    assert overlap > 0.8


def test_truncated_svd_matches_the_exact_decomposition_of_a_low_rank_matrix_dense_and_sparse():
    rng = np.random.default_rng(3)
    n, rank = 600, 12
    low = (rng.normal(size=(n, rank)) * np.geomspace(10, 1, rank)) @ rng.normal(size=(rank, n))
    noisy = (low + 0.01 * rng.normal(size=(n, n))).astype(np.float32)
    u0, s0, vt0 = np.linalg.svd(noisy.astype(np.float64))
    for matrix in (noisy, sp.csr_matrix(noisy)):
        u, s, v = truncated_svd(matrix, rank)
        assert u.shape == v.shape == (n, rank) and u.dtype == v.dtype == np.float32
        np.testing.assert_allclose(s, s0[:rank], rtol=1e-4)
        np.testing.assert_allclose(u.T @ u, np.eye(rank), atol=1e-4)
        np.testing.assert_allclose(v.T @ v, np.eye(rank), atol=1e-4)
        best = (u0[:, :rank] * s0[:rank]) @ vt0[:rank]
        np.testing.assert_allclose((u * s) @ v.T, best, atol=2e-3 * np.abs(best).max())
    # a rank-deficient input: the basis drops the empty directions instead of dividing by zero
    u, s, v = truncated_svd(sp.csr_matrix(np.outer(np.arange(50.0), np.ones(50))), 5)
    assert np.isfinite(u).all() and np.isfinite(v).all() and s[0] > 0 and np.allclose(s[1:], 0, atol=1e-3)


def test_ease_chooses_its_l2_on_validation_and_refits_at_it():
    d = _clusters()
    result = registry.model_class("ease").fit("ease", registry.parse_config("ease"), d)
    tried = [row["ndcg@10"] for row in result.history[1:]]
    assert result.best_epoch == 1 + int(np.argmax(tried)) and len(tried) == 7
    assert result.config.l2 is not None  # the chosen one: what a refit builds
    assert registry.parse_config("ease").l2 is None


def test_ease_above_max_items_fits_the_most_popular_items_and_ranks_the_rest_by_popularity():
    d = _clusters()  # index 0, the unknown item, is the fixture's item 0 here: never kept, bias 0
    x = interaction_matrix(d.users, d.items, d.n_users, d.n_items).toarray().astype(np.float64)
    counts = x.sum(0)
    keep = np.sort(np.argsort(-counts[1:], kind="stable")[:100] + 1)
    assert counts[keep].min() >= np.delete(counts[1:], keep - 1).max()  # the 100 most popular
    cfg = registry.parse_config("ease", {"max_items": 100, "l2": 20.0})
    model = registry.model_class("ease").refit("ease", cfg, d, 1)
    xk = x[:, keep]
    p = np.linalg.inv(xk.T @ xk + 20.0 * np.eye(len(keep)))
    b = np.eye(len(keep)) - p / np.diag(p)[None, :]
    scores = _scores(model, d.n_users, d.n_items) - model.item_bias.numpy()
    np.testing.assert_allclose(scores[:, keep], xk @ b, atol=1e-4)  # exact EASE on the kept items
    rest = np.setdiff1d(np.arange(1, d.n_items), keep)
    assert not scores[:, rest].any() and not model.item_vectors()[rest].any()  # the rest: the bias alone
    bias = model.item_bias.numpy()[rest]
    assert (np.diff(bias[np.argsort(-counts[rest], kind="stable")]) <= 0).all()  # by popularity
    # narrower than the kept items: their truncated SVD, the other rows still zero
    low = registry.model_class("ease").refit("ease", cfg.model_copy(update={"factors": 50}), d, 1)
    assert low.item_vectors().shape[1] == 50 and not low.item_vectors()[rest].any()
    got, want = (_unseen_top(s[:, keep], x[:, keep]) for s in (_scores(low, d.n_users, d.n_items), scores))
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)]) > 0.7


def test_ease_above_max_items_trains_in_the_run_and_beats_most_popular(tmp_path):
    from musicrec.pipeline.report import format_ranking
    from musicrec.pipeline.retrieval import train_implicit
    from musicrec.pipeline.workspace import Workspace

    result = registry.model_class("ease").fit(
        "ease", registry.parse_config("ease", {"max_items": 100}), _clusters()
    )
    assert (
        result.best_epoch >= 1 and result.history[result.best_epoch]["ndcg@10"] > result.history[0]["ndcg@10"]
    )
    ws = Workspace.create(tmp_path / "work", "run")
    clustered_ratings().to_parquet(ws.ratings, index=False)
    row = train_implicit(ws, "ease", {"max_items": 100})
    assert "skipped" not in row and row["val_ndcg_at_10"] > 0 and row["best_epoch"] >= 1
    note = "ease: fitted on the 100 items with the most interactions of 150 (max_items; "
    assert note in format_ranking({"models": [row], "champion": "ease"})


# --- als ---


def test_als_improves_validation_ndcg_past_most_popular_and_refits_its_best_iterations():
    from musicrec.metrics.full import evaluate_static

    d = _clusters()
    popular = np.bincount(d.items, minlength=d.n_items).astype(np.float32)
    bar = evaluate_static(popular, None, d.validation, d.exclude)["ndcg@10"]
    result = registry.model_class("als").fit("als", registry.parse_config("als"), d)
    ndcg = [row["ndcg@10"] for row in result.history]
    assert result.best_epoch >= 2 and ndcg[result.best_epoch] == max(ndcg) > max(bar, ndcg[1]) + 0.005
    again = registry.model_class("als").refit("als", result.config, d, result.best_epoch, threads=2)
    np.testing.assert_allclose(again.item.numpy(), result.model.item.numpy(), atol=1e-5)


def test_an_als_step_solves_the_confidence_weighted_least_squares_of_each_user():
    from musicrec.implicit.als import Alternation, new_model

    rng = np.random.default_rng(0)
    n_users, n_items, f, alpha, reg = 6, 9, 4, 2.0, 0.3
    users, items = np.repeat(np.arange(1, n_users), 3), rng.integers(1, n_items, 3 * (n_users - 1))
    weights = rng.uniform(1.0, 5.0, len(users)).astype(np.float32)
    data = Interactions(users, items, n_users, n_items, weights=weights)
    cfg = registry.parse_config("als", {"factors": f, "alpha": alpha, "regularization": reg, "cg_steps": 16})
    model = new_model(cfg, data)
    y = rng.normal(size=(n_items, f)).astype(np.float32)
    step = Alternation(cfg, model, data, threads=1)
    rows = np.zeros((n_users, f), np.float32)
    step._solve(step.by_user, y, rows)
    pairs = {(u, i): weights[(users == u) & (items == i)].mean() for u, i in zip(users, items, strict=True)}
    mean = np.mean(list(pairs.values()))  # duplicates average their weights; alpha applies to w / mean w
    for u in range(1, n_users):
        mine = users == u
        conf = np.ones(n_items)
        target = np.zeros(n_items)
        for i in np.unique(items[mine]):
            conf[i] = 1.0 + alpha * pairs[(u, i)] / mean
            target[i] = 1.0
        a = y.T @ (conf[:, None] * y) + reg * np.eye(f)
        np.testing.assert_allclose(rows[u], np.linalg.solve(a, y.T @ (conf * target)), rtol=1e-3, atol=1e-4)
    unweighted = np.zeros_like(rows)
    plain = Alternation(cfg, model, Interactions(users, items, n_users, n_items), threads=1)
    plain._solve(plain.by_user, y, unweighted)
    assert np.abs(unweighted - rows).max() > 0.01  # the weights are read
    scaled = np.zeros_like(rows)  # only their shape: weights 10x as large give the same solve
    tenfold = Alternation(cfg, model, Interactions(users, items, n_users, n_items, weights=10 * weights), 1)
    tenfold._solve(tenfold.by_user, y, scaled)
    np.testing.assert_allclose(scaled, rows, rtol=1e-4, atol=1e-5)


# --- transitions ---


def _chains() -> tuple[list[list[int]], int]:
    """Sequences in which item k is followed by k + 1 (users start at 1..8), each user's first item the
    popular item 11, which never follows anything; and the catalogue size (index 0 unknown)."""
    return [[11, k, k + 1, k + 2] for u in range(40) for k in [1 + u % 8]], 13


def _sequence_data(sequences: list[list[int]], n_items: int) -> Interactions:
    users = np.concatenate([np.full(len(s), u) for u, s in enumerate(sequences)])
    items = np.concatenate(sequences)
    order = np.concatenate([np.arange(len(s)) for s in sequences])
    return Interactions(users, items, len(sequences), n_items, order=order)


def _first_unseen(model, user: int, seen: list[int]) -> int:
    with torch.no_grad():
        scores = (model.query(torch.tensor([user])) @ model.item_vectors().T + model.item_bias)[0].numpy()
    scores[[0, *seen]] = -np.inf
    return int(np.argmax(scores))


def test_transitions_recommends_what_follows_the_users_latest_item_in_time_order():
    sequences, n_items = _chains()
    kind, cfg = registry.model_class("transitions"), registry.parse_config("transitions")
    model = kind.refit("transitions", cfg, _sequence_data([*sequences, [5, 2]], n_items), 1)
    assert _first_unseen(model, len(sequences), [5, 2]) == 3  # 2 is the latest: 3 follows it
    # the same pairs in the other time order: 5 is the latest, 6 follows it
    model = kind.refit("transitions", cfg, _sequence_data([*sequences, [2, 5]], n_items), 1)
    assert _first_unseen(model, len(sequences), [2, 5]) == 6
    # shuffling everyone's time order changes what follows what
    rng = np.random.default_rng(0)
    shuffled = [list(rng.permutation(s)) for s in sequences]
    model = kind.refit("transitions", cfg, _sequence_data([*shuffled, [5, 2]], n_items), 1)
    assert _first_unseen(model, len(sequences), [5, 2]) != 3


def test_transitions_chooses_window_and_decay_on_validation_and_is_skipped_without_times():
    d = _clusters()
    result = registry.model_class("transitions").fit("transitions", registry.parse_config("transitions"), d)
    assert len(result.history) == 1 + 9 and result.best_epoch >= 1
    chosen = result.history[result.best_epoch]["ndcg@10"]
    assert chosen == max(r["ndcg@10"] for r in result.history) > result.history[0]["ndcg@10"]
    picked = (result.config.window, result.config.decay)
    assert picked in {(w, dc) for w in (1, 3, 5) for dc in (0.25, 0.5, 1.0)}
    unordered = Interactions(d.users, d.items, d.n_users, d.n_items, d.validation, d.exclude)
    with pytest.raises(Skipped, match="no times"):
        registry.model_class("transitions").fit(
            "transitions", registry.parse_config("transitions"), unordered
        )


def test_the_run_passes_each_users_time_order_to_fit_and_refit(tmp_path):
    from musicrec.pipeline.retrieval import ranking_data
    from musicrec.pipeline.workspace import Workspace

    ratings = clustered_ratings()
    ratings = ratings.sample(frac=1.0, random_state=0).reset_index(drop=True)  # file order is not time order
    ws = Workspace.create(tmp_path / "work", "run")
    ratings.to_parquet(ws.ratings, index=False)
    data = ranking_data(ws)
    u, i = data.train
    by_time = ratings.sort_values("timestamp")
    for user in (1, 7):
        uid = data.users.ids[user - 1]
        mine = u == user
        in_order = i[mine][np.argsort(data.train_order[mine])]
        expected = by_time[by_time.user_id == uid].item_id.to_numpy()[:-2]  # the last two are held out
        assert [data.items.ids[k - 1] for k in in_order] == list(expected)
        held = [data.validation[user].indices[0], data.test[user].indices[0]]
        everything = data.order_of(np.full(len(held), user), np.array(held))
        assert list(everything) == [mine.sum() + 1, mine.sum() + 2]
    assert (data.order_of(u, i) == data.train_order).all()  # no repeated pair in this sample


def test_transitions_trains_refits_on_every_interaction_in_order_and_exports_with_parity(tmp_path):
    from musicrec.pipeline.champion_retrieval import (
        REFIT_DIR,
        export_retrieval,
        load_implicit,
        refit_implicit,
    )
    from musicrec.pipeline.retrieval import ranking_data, train_implicit
    from musicrec.pipeline.workspace import Workspace

    ws = Workspace.create(tmp_path / "work", "run")
    clustered_ratings().to_parquet(ws.ratings, index=False)
    row = train_implicit(ws, "transitions")
    assert row["best_epoch"] >= 1 and row["val_ndcg_at_10"] > 0
    assert row["hyperparameters"]["window"] in (1, 3, 5)  # the chosen setting is what a refit builds
    row["hyperparameters"]["decay"] = 0.5  # the latest item weighs most
    refit = refit_implicit(ws, row)
    assert refit["rows"] == len(clustered_ratings())
    served, data = load_implicit(ws, "transitions", REFIT_DIR), ranking_data(ws)
    user = 1
    test_item = int(data.test[user].indices[0])  # the refit's latest item of this user
    latest = served.row_items[served.row_ptr[user] : served.row_ptr[user + 1]]
    weights = served.row_values[served.row_ptr[user] : served.row_ptr[user + 1]]
    assert int(latest[int(torch.argmax(weights))]) == test_item
    ws.bundle.mkdir(exist_ok=True)
    assert export_retrieval(ws, row, refit)["onnx_check"]["score_max_abs_diff"] <= 1e-4
