"""knn_baseline: the prediction is Surprise's KNNBaseline formula (and Surprise's own numbers where it is
installed), the fit is the baselines then the kNN term, the ONNX table serves it, a too-large table is a
leaderboard note, and the refit reads every rating."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from musicrec import registry
from musicrec.data.split import Split, split_ratings
from musicrec.errors import Skipped
from musicrec.pipeline.refit import REFIT_DIR
from musicrec.pipeline.report import format_leaderboard, leaderboard
from musicrec.pipeline.train import load_model, save_model, train_one
from musicrec.pipeline.workspace import Workspace
from musicrec.rating.data import prepare_data
from musicrec.rating.export import export_onnx, verify_onnx
from musicrec.rating.train import fit_model, predict
from musicrec.scoring.runtime import load_session, predict_flagged

REGS = 10.0  # both baseline weights, so Surprise's ALS baseline (reg_u = reg_i) is the same fit


@pytest.fixture(scope="module")
def tiny_split(tiny):
    return split_ratings(tiny[0], seed=0)


@pytest.fixture(scope="module")
def tiny_data(tiny_split):
    return prepare_data(tiny_split)


@pytest.fixture(scope="module")
def fitted(tiny_data):
    return fit_model("knn_baseline", tiny_data, {"bias_decay": REGS, "k": 10, "shrinkage": 20.0})


def reference(data, k: int, shrinkage: float, min_support: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """KNNBaseline written out as Surprise's loops compute it, in numpy on the model's baselines: the
    pearson-baseline similarity over each pair's common users, then the top-k positive neighbours."""

    def predict_rows(model, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        mu = float(model.global_mean)
        b_u = model.user_bias.weight.detach()[:, 0].double().numpy()
        b_i = model.item_bias.weight.detach()[:, 0].double().numpy()
        train = data.parts["train"]
        u_tr, i_tr, r_tr = (x.numpy() for x in (train.user_idx, train.item_idx, train.rating))
        n_items = data.items.size
        e = np.full((data.users.size, n_items), np.nan)
        e[u_tr, i_tr] = r_tr - (mu + b_u[u_tr] + b_i[i_tr])
        rated = ~np.isnan(e)
        sim = np.zeros((n_items, n_items))
        for i in range(n_items):
            for j in range(n_items):
                both = rated[:, i] & rated[:, j]
                n = both.sum()
                if i == j:
                    sim[i, j] = 1.0
                elif n >= min_support and n > 0:
                    x, y = e[both, i], e[both, j]
                    den = np.sqrt((x**2).sum() * (y**2).sum())
                    sim[i, j] = (x * y).sum() / den * (n - 1) / (n - 1 + shrinkage) if den > 0 else 0.0
        out = []
        for u, i in zip(users, items, strict=True):
            base = mu + b_u[u] + b_i[i]
            mine = np.flatnonzero(rated[u])
            if u == 0 or i == 0 or len(mine) == 0:
                out.append(base)
                continue
            top = mine[np.argsort(-sim[i, mine], kind="stable")[:k]]
            s = sim[i, top]
            pos = s > 0
            out.append(base + ((s[pos] * e[u, top][pos]).sum() / s[pos].sum() if pos.any() else 0.0))
        return np.clip(out, *data.rating_range)

    return predict_rows  # type: ignore[return-value]


def test_the_prediction_is_the_knn_baseline_formula(tiny_data, fitted):
    data, model = tiny_data, fitted.model
    val = data.parts["validation"]
    users = np.concatenate([val.user_idx.numpy()[:150], [0, 3]])
    items = np.concatenate([val.item_idx.numpy()[:150], [5, 0]])
    expected = reference(data, k=10, shrinkage=20.0)(model, users, items)
    got = predict(model, _part(users, items))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the kNN term moves most predictions off the baseline
    assert (
        np.mean(
            np.abs(got - model.biases(torch.from_numpy(users), torch.from_numpy(items)).detach().numpy())
            > 1e-3
        )
        > 0.5
    )


def test_it_matches_scikit_surprise(tiny_split, tiny_data, fitted):
    surprise = pytest.importorskip("surprise")
    train = tiny_split.train
    reader = surprise.Reader(rating_scale=tiny_data.rating_range)
    trainset = surprise.Dataset.load_from_df(
        train[["user_id", "item_id", "rating"]], reader
    ).build_full_trainset()
    algo = surprise.KNNBaseline(
        k=10,
        sim_options={"name": "pearson_baseline", "user_based": False, "shrinkage": 20},
        bsl_options={"method": "als", "reg_u": REGS, "reg_i": REGS, "n_epochs": 10},
        verbose=False,
    )
    algo.fit(trainset)
    val = tiny_split.validation
    expected = np.array([algo.predict(u, i).est for u, i in zip(val.user_id, val.item_id, strict=True)])
    got = predict(fitted.model, tiny_data.parts["validation"])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_epoch_zero_is_the_baselines_and_epoch_one_improves_them(fitted):
    history = fitted.history
    assert fitted.best_epoch == 1
    assert history[1]["val_rmse"] < history[0]["val_rmse"] - 1e-3


def test_the_onnx_table_serves_the_model_for_known_users(tiny_data, fitted, tmp_path: Path):
    data, model = tiny_data, fitted.model
    users, items = list(data.users.ids), list(data.items.ids)
    path = tmp_path / "model.onnx"
    export_onnx(model, users, items, path)
    test = data.parts["test"]
    u_idx, i_idx = test.user_idx.numpy(), test.item_idx.numpy()
    sample_u = [*(users[k - 1] if k else "NEW-USER" for k in u_idx), "NEW-USER"]
    sample_i = [*(items[k - 1] if k else "NEW-ITEM" for k in i_idx), items[0]]
    check = verify_onnx(path, model, sample_u, sample_i, user_ids=users, item_ids=items)
    assert check["max_abs_diff"] <= 1e-5 and check["unknown_users"] >= 1
    got, unknown_user, _ = predict_flagged(
        load_session(path), np.array(sample_u[:-1], dtype=object), np.array(sample_i[:-1], dtype=object)
    )
    known = ~unknown_user
    assert known.sum() > 100
    expected = predict(model, test)
    np.testing.assert_allclose(got[known], expected[known], atol=1e-5)
    # the kNN term is in the graph, not only the baselines
    base = model.biases(test.user_idx, test.item_idx).clamp(*data.rating_range).detach().numpy()
    assert np.abs(got[known] - base[known]).max() > 1e-2


def test_a_table_above_the_cap_is_a_leaderboard_note(tiny_data, tmp_path: Path):
    with pytest.raises(Skipped, match="max_table_cells 1,000"):
        fit_model("knn_baseline", tiny_data, {"max_table_cells": 1000})
    ws = Workspace.create(tmp_path, "run")
    row = train_one(ws, "knn_baseline", {"max_table_cells": 1000}, data=tiny_data)
    assert "skipped" in row["skipped"] and "val_rmse" not in row
    rows = [row, {"name": "gmf", "val_rmse": 0.9, "best_epoch": 3}]
    assert registry.choose_champion(rows, "rating", 1.0) == "gmf"
    board = format_leaderboard(leaderboard(rows, [{"name": "bias", "val_rmse": 1.0}]), "gmf")
    line = next(x for x in board.splitlines() if x.startswith("knn_baseline"))
    assert "skipped:" in line and "max_table_cells" in line


def test_the_refit_reads_every_rating(tiny_split, tmp_path: Path):
    """The refit's data holds every rating as training rows: its kNN reads the user's validation and test
    ratings too, and the saved refit loads with them."""
    split = tiny_split
    every = pd.concat([split.train, split.validation, split.test], ignore_index=True)
    full = prepare_data(Split(every, every.iloc[:0], every.iloc[:0]))
    refit = fit_model("knn_baseline", full, {"bias_decay": REGS}, fixed_epochs=1)
    assert refit.best_epoch == 1 and int(refit.model.neighbours) == 40
    assert len(refit.model.residuals) == len(every.drop_duplicates(["user_id", "item_id"]))
    ws = Workspace.create(tmp_path, "run")
    save_model(ws, REFIT_DIR, refit.model, refit.config)
    loaded = load_model(ws, "knn_baseline", full, directory=REFIT_DIR)
    rows = full.parts["train"]
    np.testing.assert_array_equal(predict(loaded, rows), predict(refit.model, rows))


def _part(users: np.ndarray, items: np.ndarray):
    from musicrec.rating.data import Part

    n = len(users)
    return Part(
        torch.from_numpy(users.astype(np.int64)),
        torch.from_numpy(items.astype(np.int64)),
        torch.zeros(n),
        np.zeros(n, bool),
        np.zeros(n, bool),
    )
