import numpy as np
import pytest
import torch

from musicrec.data.split import split_ratings
from musicrec.dataset import prepare_data
from musicrec.evaluation import evaluate
from musicrec.models.registry import MODELS
from musicrec.models.baselines import fit_bias_baseline, fit_global_mean
from musicrec.models.registry import model_config
from musicrec.text import Word2VecConfig, item_documents, item_vectors, train_word2vec
from musicrec.training import fit_model

NAMES = ["gmf", "gmf_regression", "gmf_logistic", "nnmf", "mlp", "w2v_mlp"]


@pytest.fixture(scope="module")
def data(tiny):
    ratings, items = tiny
    split = split_ratings(ratings, seed=0)
    cfg = Word2VecConfig()
    docs = item_documents(split.train, items, cfg)
    ids = list(items.item_id) + ["COLD_WITH_TEXT"]
    docs["COLD_WITH_TEXT"] = docs.iloc[0]
    vec = item_vectors(docs, train_word2vec(docs, cfg), ids, cfg)
    return prepare_data(split, ids, vec)


def test_registry_has_the_six_models():
    assert sorted(MODELS) == sorted(NAMES)


def test_unknown_hyperparameter_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown hyperparameter.*lerning_rate"):
        model_config("gmf", {"lerning_rate": 0.1})


@pytest.mark.parametrize("name", NAMES)
def test_model_learns_and_handles_unknown_ids(name, data):
    result = fit_model(name, data, {"epochs": 6, "patience": 6, "weight_decay": 0.01, "lr": 0.01})
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    model = result.model
    u = torch.tensor([1, 0, 1, 0])
    i = torch.tensor([1, 1, 0, 0])
    out = model(u, i)
    assert out.shape == (4,)
    assert torch.all((out >= 1) & (out <= 5))
    metrics = evaluate(model, data)
    mean_rmse = evaluate(fit_global_mean(data), data)["test_rmse"]
    assert metrics["test_rmse"] < mean_rmse


def test_nnmf_factors_stay_non_negative(data):
    model = fit_model("nnmf", data, {"epochs": 3}).model
    assert model.user_factors.weight.min() >= 0
    assert model.item_factors.weight.min() >= 0


def test_training_is_seeded(data):
    a = fit_model("gmf", data, {"epochs": 2}).model
    b = fit_model("gmf", data, {"epochs": 2}).model
    torch.testing.assert_close(a.user_factors.weight, b.user_factors.weight)


def test_early_stopping_restores_best_epoch(data):
    result = fit_model("gmf", data, {"epochs": 30, "patience": 2, "weight_decay": 0.0, "lr": 0.05})
    curve = [result.initial_val_rmse] + [h["val_rmse"] for h in result.history]
    best = min(curve)
    assert result.best_epoch == int(np.argmin(curve))
    assert len(result.history) < 30  # stopped early
    assert evaluate(result.model, data)["val_rmse"] == pytest.approx(best, abs=1e-4)


def test_cold_item_with_text_uses_its_text(data):
    model = fit_model("w2v_mlp", data, {"epochs": 4}).model
    cold = data.items.lookup(["COLD_WITH_TEXT"])[0]
    assert cold > 0 and not data.trained_items[cold]
    users = torch.arange(1, 50)
    with_text = model(users, torch.full_like(users, cold))
    unknown = model(users, torch.zeros_like(users))
    assert not torch.allclose(with_text, unknown)


def test_bias_baseline_beats_global_mean(data):
    assert evaluate(fit_bias_baseline(data), data)["test_rmse"] < evaluate(fit_global_mean(data), data)["test_rmse"]
