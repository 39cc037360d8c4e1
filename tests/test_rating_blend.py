"""The rating blend: the ridge recovers a known mixture and reports an honest out-of-fold RMSE, the blend of
real models is chosen without the test split, one ONNX graph serves it, and the refit serves its members."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from musicrec import registry
from musicrec.data.split import split_ratings
from musicrec.pipeline.champion_rating import ensemble_rating
from musicrec.pipeline.train import load_model, train_one
from musicrec.pipeline.workspace import Workspace
from musicrec.rating.blend import ENSEMBLE, fit_ridge_blend
from musicrec.rating.data import prepare_data
from musicrec.rating.export import export_onnx, verify_onnx
from musicrec.rating.train import predict
from musicrec.scoring.runtime import load_session, predict_flagged

RANGE = (1.0, 5.0)


def _mixture(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three 'models': two noisy views of the truth and one unrelated; ratings 0.5 + 0.6 a + 0.3 b + noise."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(3.0, 0.8, n)
    a, b = truth + rng.normal(0, 0.4, n), truth + rng.normal(0, 0.4, n)
    junk = rng.normal(3.0, 0.8, n)
    y = 0.5 + 0.6 * a + 0.3 * b + rng.normal(0, 0.2, n)
    return np.column_stack([a, b, junk]), np.clip(y, *RANGE)


def test_the_ridge_recovers_a_known_mixture():
    x, y = _mixture()
    fit = fit_ridge_blend(x, y, ["a", "b", "junk"], (-10.0, 20.0))
    assert set(fit.weights) == {"a", "b"}  # the unrelated column adds nothing out of fold: left out
    assert fit.weights["a"] == pytest.approx(0.6, abs=0.03)
    assert fit.weights["b"] == pytest.approx(0.3, abs=0.03)
    assert fit.intercept == pytest.approx(0.5, abs=0.1)
    assert len(fit.folds) == 5 and all(f["members"] for f in fit.folds)


def test_the_out_of_fold_rmse_is_no_better_than_in_sample():
    rng = np.random.default_rng(1)
    x, y = _mixture(2000, seed=1)
    x = np.column_stack([x, rng.normal(3.0, 0.8, (len(y), 6))])  # more columns: more room to overfit
    fit = fit_ridge_blend(x, y, [f"m{k}" for k in range(x.shape[1])], RANGE)
    assert fit.oof_rmse >= fit.in_sample_rmse
    pred = fit.predict({n: x[:, k] for k, n in enumerate(fit.candidates)})
    assert float(np.sqrt(np.mean((pred - y) ** 2))) == pytest.approx(fit.in_sample_rmse)
    assert pred.min() >= RANGE[0] and pred.max() <= RANGE[1]


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """Two small real models trained and saved in a workspace, with the data they saw: gmf and knn_baseline,
    whose errors differ enough on this data for both to keep a weight."""
    data = prepare_data(split_ratings(tiny[0], seed=0))
    ws = Workspace.create(tmp_path_factory.mktemp("blend"), "run")
    rows = [train_one(ws, name, {"epochs": 4}, data=data) for name in ("gmf", "knn_baseline")]
    assert all(r["best_epoch"] >= 1 for r in rows)
    return ws, data, rows


def test_the_blend_is_chosen_without_the_test_split(trained):
    ws, data, rows = trained
    row = ensemble_rating(ws, rows, data=data)
    assert row["name"] == ENSEMBLE and {m["name"] for m in row["members"]} == {"gmf", "knn_baseline"}
    assert all(m["weight"] > 0 for m in row["members"])
    assert row["val_rmse"] >= row["val_rmse_in_sample"]  # out of fold: the honest number
    assert row["val_rmse"] < min(r["val_rmse"] for r in rows)  # on this data the blend beats both
    # other test ratings: the same members, weights and validation RMSE; only the test columns move
    shuffled = copy.copy(data)
    shuffled.parts = {**data.parts, "test": copy.copy(data.parts["test"])}
    shuffled.parts["test"].rating = torch.flip(data.parts["test"].rating, [0])
    again = ensemble_rating(ws, rows, data=shuffled)
    assert again["blend"] == row["blend"] and again["val_rmse"] == row["val_rmse"]
    assert again["test_rmse"] != row["test_rmse"]
    assert registry.choose_champion([*rows, row], "rating", 10.0) == ENSEMBLE


def test_one_onnx_graph_serves_the_blend(trained, tmp_path: Path):
    ws, data, rows = trained
    ensemble_rating(ws, rows, data=data)
    model = load_model(ws, ENSEMBLE, data)
    # the loaded blend is the formula over its members, each as served alone
    test = data.parts["test"]
    fit = ws.read_json(f"models/{ENSEMBLE}/blend.json")
    alone = {n: predict(load_model(ws, n, data), test) for n in fit["weights"]}
    expected = np.clip(fit["intercept"] + sum(w * alone[n] for n, w in fit["weights"].items()), *RANGE)
    np.testing.assert_allclose(predict(model, test), expected, atol=1e-5)
    users, items = list(data.users.ids), list(data.items.ids)
    path = tmp_path / "model.onnx"
    export_onnx(model, users, items, path)
    u_idx, i_idx = test.user_idx.numpy(), test.item_idx.numpy()
    sample_u = [*(users[k - 1] if k else "NEW-USER" for k in u_idx), "NEW-USER"]
    sample_i = [*(items[k - 1] if k else "NEW-ITEM" for k in i_idx), "NEW-ITEM"]
    check = verify_onnx(path, model, sample_u, sample_i, user_ids=users, item_ids=items)
    assert check["max_abs_diff"] <= 1e-4 and check["unknown_users"] >= 1
    got, unknown_user, unknown_item = predict_flagged(
        load_session(path), np.array(sample_u, dtype=object), np.array(sample_i, dtype=object)
    )
    assert unknown_user[-1] and unknown_item[-1]
    np.testing.assert_allclose(got[:-1], predict(model, test), atol=1e-4)


def test_the_card_and_the_leaderboard_show_a_blend():
    from musicrec.pipeline.report import format_leaderboard, leaderboard, model_card

    row = {
        "name": ENSEMBLE,
        "val_rmse": 0.7247,
        "val_rmse_in_sample": 0.7231,
        "test_rmse": 0.7194,
        "members": [{"name": "svdpp", "weight": 0.51}, {"name": "gmf", "weight": 0.35}],
        "blend": {
            "intercept": 0.37,
            "alpha": 0.001,
            "folds": [{}] * 5,
            "candidates": ["svdpp", "gmf", "bias"],
        },
    }
    bias = {"name": "bias", "val_rmse": 0.7813, "test_rmse": 0.7767}
    card = model_card(
        {
            "champion": {"name": ENSEMBLE},
            "models": [row],
            "baselines": [bias],
            "refit": {"rows": 93058, "epochs": {"svdpp": 5, "gmf": 3}},
        }
    )
    assert "a blend of 2 member(s)" in card and "0.3700 + 0.510 x svdpp + 0.350 x gmf" in card
    assert "out of fold 0.7247 (in sample 0.7231)" in card and "svdpp 5, gmf 3 epochs" in card
    board = format_leaderboard(leaderboard([row], [bias]), ENSEMBLE).splitlines()
    assert board[2].startswith(f"{ENSEMBLE} *") and "0.7247" in board[2] and "untrained" not in board[2]
