"""The retrieval champion's serving side: the ONNX user tower, the inner-product index, retrieve-then-rank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synth import clustered_ratings

from musicrec.implicit.export import build_user_tower, verify_retrieval, write_retrieval
from musicrec.scoring.index import build_item_index, recall_at
from musicrec.scoring.retrieve import EXTRA_MAX, Retriever, fetch_sizes, id_ranks, retrieve_and_rank
from musicrec.scoring.runtime import OnnxModelError, load_tower, read_item_table, user_vectors


def _tables(n_users: int = 50, n_items: int = 40, dim: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users + 1, dim)).astype(np.float32)
    users[0] = 0.0
    users[0, -1] = 1.0
    return (
        [f"u{k:03d}" for k in range(n_users)],
        users,
        [f"i{k:03d}" for k in range(n_items)],
        rng.normal(size=(n_items, dim)).astype(np.float32),
    )


def test_the_tower_maps_raw_ids_to_their_rows_and_unknown_ids_to_the_unknown_row(tmp_path):
    user_ids, users, item_ids, items = _tables()
    assert write_retrieval(tmp_path, user_ids, users, item_ids, items) == [
        "retrieval.onnx",
        "retrieval_items.parquet",
    ]
    vec, unknown = user_vectors(load_tower(tmp_path / "retrieval.onnx"), ["u007", "nobody", "u000"])
    assert np.array_equal(vec, users[[8, 0, 1]]) and unknown.tolist() == [False, True, False]
    ids, rows = read_item_table(tmp_path / "retrieval_items.parquet")
    assert ids.tolist() == item_ids and np.array_equal(rows, items)
    check = verify_retrieval(tmp_path, user_ids, users, [*user_ids, "x"])
    assert check["max_abs_diff"] == 0.0 and check["unknown_users"] == 1


def test_a_tower_whose_rows_do_not_match_fails_verification(tmp_path):
    user_ids, users, item_ids, items = _tables()
    write_retrieval(tmp_path, user_ids, users, item_ids, items)
    with pytest.raises(OnnxModelError, match="parity"):
        verify_retrieval(tmp_path, user_ids, users + 0.01, user_ids[:5])
    with pytest.raises(OnnxModelError, match="rows"):
        build_user_tower(user_ids, users[:-1])


def test_exact_index_returns_the_true_top_k_and_ivf_keeps_most_of_it():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 8))
    items = (centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 8))).astype(np.float32)
    queries = rng.normal(size=(50, 8)).astype(np.float32)
    exact = build_item_index(items)
    assert exact.kind == "exact"
    _, got = exact.search(queries, 10)
    truth = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(np.sort(got, 1), np.sort(truth, 1))
    ivf = build_item_index(items, exact_below=1000)
    assert ivf.kind.startswith("ivf")
    assert recall_at(ivf, items, queries, k=10) > 0.8


def test_the_ivf_index_keeps_its_recall_when_row_norms_span_three_orders_of_magnitude():
    """Clustering inner-product rows directly (faiss METRIC_INNER_PRODUCT) reaches recall@10 0.89 here; the
    L2 form of the index (one extra column per row) keeps the exact top-10."""
    rng = np.random.default_rng(0)
    n, d = 20_000, 16
    directions = rng.normal(size=(n, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    items = (directions * np.exp(rng.uniform(np.log(1e-3), 0, n))[:, None]).astype(np.float32)
    items[:, -1] = 0.01 * rng.random(n)
    queries = rng.normal(size=(200, d)).astype(np.float32)
    queries[:, -1] = 1.0
    index = build_item_index(items, exact_below=1000)
    assert index.kind.startswith("ivf") and index.norm is not None
    assert recall_at(index, items, queries, k=10) > 0.95
    scores, found = index.search(queries[:5], 10)
    np.testing.assert_allclose(scores, np.take_along_axis(queries[:5] @ items.T, found, 1), atol=1e-4)


def test_bias_only_rows_stay_out_of_the_ivf_lists_and_are_found_by_their_bias():
    """Items with no direction (zero but for the bias column) used to fill one IVF list that most queries
    scanned; they are searched by bias alone, with the same results as an exact search."""
    rng = np.random.default_rng(0)
    n, d = 6000, 9
    items = np.zeros((n, d), np.float32)
    centres = rng.normal(size=(30, d - 1))
    items[:3000, :-1] = centres[rng.integers(0, 30, 3000)] + 0.3 * rng.normal(size=(3000, d - 1))
    items[:, -1] = 2 * rng.random(n)
    items[-5:, -1] = -1e30  # items the model does not know
    queries = rng.normal(size=(90, d)).astype(np.float32)
    queries[:30, -1], queries[30:60, -1], queries[60:, -1] = 1.0, 8.0, -1.0  # the bias weighs more, or less
    index = build_item_index(items, exact_below=1000)
    assert index.kind.startswith("ivf") and index.kind.endswith("+bias")
    assert index.index.ntotal == 3000 and len(index.bias_rows) == 3000
    exact = build_item_index(items, exact_below=n + 1)
    assert recall_at(index, items, queries, k=10) > 0.9
    index.index.nprobe = index.index.nlist  # every list probed: the IVF part is exact, so the whole must be
    for k in (10, 100):
        got_s, got = index.search(queries, k)
        want_s, want = exact.search(queries, k)
        np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-5)
        assert np.mean(got == want) > 0.99  # ties may swap
    # the unknown items' -1e30 bias keeps them out of every list whose query weighs the bias positively
    assert not np.isin(index.search(queries[:60], 100)[1], np.arange(n - 5, n)).any()


def test_retrieve_then_rank_orders_by_the_inner_product_and_never_returns_a_rated_item():
    _, users, item_ids, items = _tables(n_users=3, n_items=30)
    table = np.vstack(
        [items, np.zeros((1, items.shape[1]), np.float32)]
    )  # a bundle item the model does not know
    known = np.r_[np.ones(30, bool), False]
    table[~known, -1] = -1e30
    ids = np.asarray([*item_ids, "cold"], dtype=object)

    class Tower:  # the user tower of three users
        def run(self, _outputs, feeds):
            rows = [int(u[1:]) + 1 for u in feeds["user_id"]]
            return users[rows], np.zeros(len(rows), bool)

    r = Retriever(Tower(), table, known, build_item_index(table), "m", id_ranks(ids))
    rated = [np.array([0, 1, 2]), np.array([5]), np.array([], np.int64)]
    out = retrieve_and_rank(
        r,
        ids,
        ["u000", "u001", "u002"],
        rated,
        np.array([0, 1]),
        np.array([30, 7]),
        np.array([0, 1]),
        ("also_bought", "word2vec", "popular"),
        5,
    )
    for k, user in enumerate(["u000", "u001", "u002"]):
        mine = out[out["user_id"] == user]
        assert len(mine) == 5 and mine["rank"].tolist() == [1, 2, 3, 4, 5]
        positions = pd.Index(ids).get_indexer(mine["item_id"])
        assert not set(positions) & set(rated[k].tolist()) and "cold" not in set(mine["item_id"])
        scores = table[positions] @ users[k + 1]
        assert np.allclose(mine["score"], scores, atol=1e-5) and np.all(np.diff(scores) <= 1e-6)
        unrated = np.setdiff1d(np.arange(30), rated[k])
        best = unrated[np.argsort(-(items[unrated] @ users[k + 1]), kind="stable")[:5]]
        assert set(positions) == set(best)
    mine = out[(out["user_id"] == "u001") & (out["item_id"] == ids[7])]
    assert mine["source"].tolist() in ([], ["word2vec"])  # found by another source too: that label wins


class _Fixed:
    """A user tower that gives every user the same query vector."""

    def __init__(self, vec: np.ndarray) -> None:
        self.vec = vec

    def run(self, _outputs, feeds):
        return np.tile(self.vec, (len(feeds["user_id"]), 1)), np.zeros(len(feeds["user_id"]), bool)


def test_equal_scores_are_ordered_by_item_id_not_by_position():
    ids = np.asarray(["i09", "i03", "i10", "i01", "i05", "i02"], dtype=object)  # positions not in id order
    table = np.ones((6, 3), np.float32)  # i10 and i05 score 3
    table[[0, 1, 3]] = 1.5  # i09, i03 and i01 tie at 4.5
    table[5] = 2.0  # i02 scores highest (6)
    index = build_item_index(table)
    r = Retriever(_Fixed(np.ones(3, np.float32)), table, np.ones(6, bool), index, "m", id_ranks(ids))
    out = retrieve_and_rank(
        r,
        ids,
        ["a", "b"],
        [np.array([1]), np.array([], np.int64)],
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.int8),
        ("popular",),
        4,
    )
    assert out[out.user_id == "b"]["item_id"].tolist() == ["i02", "i01", "i03", "i09"]
    assert out[out.user_id == "b"]["rank"].tolist() == [1, 2, 3, 4]
    assert out[out.user_id == "a"]["item_id"].tolist() == ["i02", "i01", "i09", "i05"]  # a rated i03


def test_a_user_who_rated_the_nearest_items_still_gets_n_and_light_users_fetch_little():
    assert fetch_sizes([np.arange(0), np.arange(3), np.arange(40), np.arange(10_000)], 10).tolist() == [
        16,
        16,
        64,
        10 + EXTRA_MAX,
    ]
    rng = np.random.default_rng(3)
    table = rng.normal(size=(500, 4)).astype(np.float32)
    q = rng.normal(size=4).astype(np.float32)
    best = np.argsort(-(table @ q), kind="stable")
    heavy, light = best[:60], np.array([], np.int64)  # the heavy user rated the 60 nearest items
    index = build_item_index(table)
    r = Retriever(_Fixed(q), table, np.ones(500, bool), index, "m", id_ranks(np.arange(500)))
    out = retrieve_and_rank(
        r,
        np.asarray([f"x{k:03d}" for k in range(500)], dtype=object),
        ["h", "l"],
        [heavy, light],
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.int8),
        ("popular",),
        10,
    )
    got = {
        u: pd.Index([f"x{k:03d}" for k in range(500)]).get_indexer(out[out.user_id == u]["item_id"])
        for u in "hl"
    }
    assert got["h"].tolist() == best[60:70].tolist()
    assert got["l"].tolist() == best[:10].tolist()


def test_validation_sample_shrinks_with_the_catalogue_so_an_epoch_stays_cheap():
    from musicrec.pipeline.retrieval import VALIDATION_CELLS, validation_users

    assert validation_users(900) == 5000  # small catalogues: the config's sample (or every user)
    assert validation_users(456_992) * 456_992 <= VALIDATION_CELLS  # the seed's catalogue: about 1,094 users
    assert validation_users(10**8) == 1000  # never fewer than 1,000 users (standard error stays usable)


def test_the_weakest_members_leave_the_ensemble_until_it_fits_the_serving_budget():
    from musicrec.pipeline.champion_retrieval import ENSEMBLE_CELLS, within_budget

    rows = [
        {"name": "implicit_hinge", "val_ndcg_at_10": 0.028},  # 65 wide
        {"name": "ease", "val_ndcg_at_10": 0.025},  # 513
        {"name": "implicit_bpr", "val_ndcg_at_10": 0.024},  # 65
        {"name": "transitions", "val_ndcg_at_10": 0.017},  # 513
        {"name": "als", "val_ndcg_at_10": 0.010},  # 65
    ]
    assert within_budget(rows, ENSEMBLE_CELLS // 1221) == rows  # 65 x 3 + 513 x 2 = 1,221 cells an item
    assert within_budget(rows, ENSEMBLE_CELLS // 1156) == rows[:4]  # als leaves first, then transitions
    assert within_budget(rows, ENSEMBLE_CELLS // 1000) == rows[:3]
    assert within_budget(rows, ENSEMBLE_CELLS // 64) == []


def test_the_ensemble_is_measured_refit_exported_and_compared_like_one_model(tmp_path, monkeypatch):
    """The library path of a run whose retrieval champion is the blend of two implicit models: its weights
    fitted and it measured on the members' validation and test users, saved as JSON that rebuilds the same
    scores, each member refit on every interaction, exported as one tower and item table (parity checked),
    and reloaded from its members for the promotion's fair comparison."""
    import json

    from musicrec.implicit.train import score_fn
    from musicrec.pipeline.champion_retrieval import (
        BLEND_FILE,
        ENSEMBLE,
        compare_retrieval,
        ensemble_implicit,
        export_retrieval,
        load_implicit,
        refit_implicit,
    )
    from musicrec.pipeline.retrieval import ranking_data, test_metrics, train_implicit
    from musicrec.pipeline.workspace import Workspace

    ratings = clustered_ratings()  # interactions with structure: both members learn (best epoch >= 1)
    ws = Workspace.create(tmp_path / "work", "run")
    ratings.to_parquet(ws.ratings, index=False)
    rows = [train_implicit(ws, name, {"epochs": 4}) for name in ("implicit_bpr", "implicit_pointwise")]
    row = ensemble_implicit(ws, rows)
    assert (
        row is not None
        and row["name"] == ENSEMBLE
        and [m["name"] for m in row["members"]] == [r["name"] for r in rows]
    )
    assert row["test_users"] == rows[0]["test_users"] > 100
    saved = json.loads((ws.model_dir(ENSEMBLE) / BLEND_FILE).read_text())
    assert {m["name"]: (m["weight"], m["scale"]) for m in row["members"]} == {
        n: (saved["weights"][n], saved["scales"][n]) for n in saved["members"]
    }
    assert sum(saved["weights"].values()) == pytest.approx(1.0) and min(saved["scales"].values()) > 0
    rebuilt, some = load_implicit(ws, ENSEMBLE), np.arange(1, 40)
    expected = sum(
        m["weight"] / m["scale"] * score_fn(load_implicit(ws, m["name"]))(some).copy() for m in row["members"]
    )
    np.testing.assert_allclose(score_fn(rebuilt)(some), expected, rtol=1e-5, atol=1e-5)
    assert test_metrics(rebuilt, ranking_data(ws))["test_ndcg_at_10"] == pytest.approx(row["test_ndcg_at_10"])
    assert ensemble_implicit(ws, rows[:1]) is None  # one model is not an ensemble
    weaker = min(r["val_ndcg_at_10"] for r in rows)  # a most-popular bar that only one model clears

    def bar(v: float) -> list[dict]:
        return [{"name": "most_popular", "val_ndcg_at_10": v}]

    assert ensemble_implicit(ws, rows, bar(weaker)) is None
    assert ensemble_implicit(ws, rows, bar(weaker - 1e-9))["members"] == row["members"]
    from musicrec.pipeline import champion_retrieval

    monkeypatch.setattr(champion_retrieval, "ENSEMBLE_CELLS", 151 * 130)  # items x (65 + 65): at the budget
    assert ensemble_implicit(ws, rows) is not None
    monkeypatch.setattr(
        champion_retrieval, "ENSEMBLE_CELLS", 151 * 130 - 1
    )  # one cell over: serving costs too much
    assert ensemble_implicit(ws, rows) is None
    monkeypatch.undo()

    refit = refit_implicit(ws, row)
    assert set(refit["epochs"]) == {"implicit_bpr", "implicit_pointwise"} and refit["rows"] == len(ratings)
    ws.bundle.mkdir(exist_ok=True)
    meta = export_retrieval(ws, row, refit)
    assert meta["model"] == ENSEMBLE and meta["onnx_check"]["score_max_abs_diff"] <= 1e-4
    # the held-out ensemble against the exported (refit) one, on every test user (none was fitted on)
    fair = compare_retrieval(ws, ENSEMBLE, ws.bundle, pd.DataFrame({"user_id": [], "item_id": []}))
    assert fair["comparable"] and fair["challenger_ndcg"] == pytest.approx(row["test_ndcg_at_10"])
