"""svdpp: the history term is the formula, it carries what ids alone cannot, the export serves it, and the
refit reads every rating's history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from musicrec.data.split import Split, split_ratings
from musicrec.pipeline.refit import REFIT_DIR
from musicrec.pipeline.train import load_model, save_model
from musicrec.pipeline.workspace import Workspace
from musicrec.rating.build import build_for, model_config
from musicrec.rating.data import prepare_data
from musicrec.rating.export import export_onnx, verify_onnx
from musicrec.rating.train import fit_model, predict
from musicrec.scoring.runtime import load_session, predict_flagged


def _frame(users: list[str], items: list[str], ratings: list[float]) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "rating": np.asarray(ratings, dtype=float),
            "timestamp": pd.array([1_500_000_000 + k for k in range(n)], dtype="Int64"),
            "review_text": [""] * n,
            "reviewer_name": [""] * n,
        }
    )


@pytest.fixture(scope="module")
def tiny_data(tiny):
    return prepare_data(split_ratings(tiny[0], seed=0))


def test_the_prediction_is_the_svdpp_formula(tiny_data):
    """mu + b_u + b_i + q_i . (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j), N(u) the user's training items."""
    data = tiny_data
    model = build_for("svdpp", data, model_config("svdpp", {"factors": 5}))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for table in (*model.user_tables(), *model.item_tables()):
            table.weight.copy_(torch.from_numpy(rng.normal(0, 0.3, table.weight.shape).astype(np.float32)))
    train = data.parts["train"]
    u_tr, i_tr = train.user_idx.numpy(), train.item_idx.numpy()
    users = np.array([0, 1, 2, 3, 7, 1, 40, 0])
    items = np.array([1, 2, 0, 5, 9, 9, 3, 0])
    w = {k: v.numpy() for k, v in model.state_dict().items()}
    expected = []
    for u, i in zip(users, items, strict=True):
        rated = np.unique(i_tr[u_tr == u])
        h = w["history_factors.weight"][rated].sum(0) / np.sqrt(len(rated)) if len(rated) else 0.0
        x = w["user_factors.weight"][u] + h
        s = w["global_mean"] + w["user_bias.weight"][u, 0] + w["item_bias.weight"][i, 0]
        expected.append(s + w["item_factors.weight"][i] @ x)
    with torch.no_grad():
        got = model(torch.from_numpy(users), torch.from_numpy(items)).numpy()
    np.testing.assert_allclose(got, np.clip(expected, 1.0, 5.0), atol=1e-5)


def _who_rated_what(seed: int = 0) -> Split:
    """Two groups of users whose training ratings are all 3 stars, on group A's or group B's items: by ids
    and stars alone every user looks alike. Half of each group also rated item X in training (A: 5, B: 1);
    the other half's X ratings are the validation rows. Only what a user rated tells their group."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, float]] = []
    val: list[tuple[str, str, float]] = []
    for g, star in (("A", 5.0), ("B", 1.0)):
        for k in range(60):
            user = f"{g}{k}"
            rows += [(user, f"{g}-item{j}", 3.0) for j in rng.choice(12, 6, replace=False)]
            (rows if k % 2 == 0 else val).append((user, "X", star))
    train, validation = (_frame(*map(list, zip(*part, strict=True))) for part in (rows, val))
    return Split(train, validation, validation.iloc[:0])


def test_what_a_user_rated_carries_what_their_id_cannot():
    data = prepare_data(_who_rated_what())
    val = data.parts["validation"]
    common = {"epochs": 40, "patience": 40, "factors": 4, "id_dropout": 0.0}
    # the history step is the default's tenfold: six items a user, 420 rows, 40 epochs
    overrides = {"gmf": common, "svdpp": {**common, "history_lr": 0.03}}
    rmse = {}
    for name in ("gmf", "svdpp"):
        result = fit_model(name, data, overrides[name])
        rmse[name] = result.history[result.best_epoch]["val_rmse"]
    # the bias model predicts about 3 for every X row (off by 2); gmf's rows only partly tell the groups
    # apart through the items they share with the labelled half; svdpp reads the groups off the histories
    assert rmse["gmf"] > 1.0
    assert rmse["svdpp"] < 0.3
    assert np.sqrt(np.mean((predict(result.model, val) - val.rating.numpy()) ** 2)) == pytest.approx(
        rmse["svdpp"], abs=1e-5
    )


def test_the_onnx_graph_serves_the_history_term(tiny_data, tmp_path: Path):
    data = tiny_data
    model = fit_model("svdpp", data, {"epochs": 3}).model
    users, items = list(data.users.ids), list(data.items.ids)
    path = tmp_path / "model.onnx"
    export_onnx(model, users, items, path)
    test = data.parts["test"]
    u_idx, i_idx = test.user_idx.numpy(), test.item_idx.numpy()
    sample_u = [*(users[k - 1] if k else "NEW-USER" for k in u_idx), "NEW-USER"]
    sample_i = [*(items[k - 1] if k else "NEW-ITEM" for k in i_idx), items[0]]
    check = verify_onnx(path, model, sample_u, sample_i, user_ids=users, item_ids=items)
    assert check["max_abs_diff"] <= 1e-4 and check["unknown_users"] >= 1
    got, unknown_user, _ = predict_flagged(
        load_session(path), np.array(sample_u[:-1], dtype=object), np.array(sample_i[:-1], dtype=object)
    )
    known = ~unknown_user
    assert known.sum() > 100
    np.testing.assert_allclose(got[known], predict(model, test)[known], atol=1e-4)
    # the history term is in the graph: without it the known users' predictions move
    with torch.no_grad():
        model.history_factors.weight.zero_()
    assert np.abs(got[known] - predict(model, test)[known]).max() > 1e-3


def test_the_refit_reads_the_histories_of_every_rating(tiny, tmp_path: Path):
    """The refit's data (musicrec.pipeline.refit.full_data) holds every rating as training rows: the refit
    model's N(u) includes the user's validation and test items, which the held-out fit never saw; the bundle
    loads the saved refit with the same histories."""
    split = split_ratings(tiny[0], seed=0)
    held_out = fit_model("svdpp", prepare_data(split), {"epochs": 1}).model
    every = pd.concat([split.train, split.validation, split.test], ignore_index=True)
    full = prepare_data(Split(every, every.iloc[:0], every.iloc[:0]))
    fitted = fit_model("svdpp", full, {"epochs": 1}, fixed_epochs=1)
    ws = Workspace.create(tmp_path, "run")
    save_model(ws, REFIT_DIR, fitted.model, fitted.config)
    refit = load_model(ws, "svdpp", full, directory=REFIT_DIR)
    pairs = full.parts["train"]
    np.testing.assert_array_equal(predict(refit, pairs), predict(fitted.model, pairs))

    def histories(model, data) -> set[tuple[str, str]]:
        ptr, items = model.history_ptr.numpy(), model.history_items.numpy()
        users = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
        return {(data.users.ids[u - 1], data.items.ids[i - 1]) for u, i in zip(users, items, strict=True)}

    as_pairs = {(u, i) for u, i in zip(every.user_id, every.item_id, strict=True)}
    assert histories(refit, full) == as_pairs
    trained = set(zip(split.train.user_id, split.train.item_id, strict=True))
    assert histories(held_out, prepare_data(split)) == trained
    assert len(as_pairs) > len(split.train)
