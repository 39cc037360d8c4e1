import numpy as np
import pytest
import torch

from musicrec.data.split import split_ratings
from musicrec.errors import ConfigError
from musicrec.rating.baselines import bias_regs, fit_bias_baseline, fit_global_mean
from musicrec.rating.build import build_model, model_config
from musicrec.rating.data import prepare_data
from musicrec.rating.evaluate import evaluate
from musicrec.rating.train import fit_model
from musicrec.registry import names, parse_config
from musicrec.text import Word2VecConfig, item_documents, item_vectors, train_word2vec

NAMES = names("rating")


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


def test_registry_has_the_seed_models():
    assert set(NAMES) >= {"gmf", "gmf_regression", "gmf_logistic", "nnmf", "mlp", "w2v_mlp"}


def test_unknown_hyperparameter_is_a_clear_error_naming_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown hyperparameter.*lerning_rate") as e:
        model_config("gmf", {"lerning_rate": 0.1})
    assert "factors" in str(e.value) and "lr" in str(e.value)


def test_a_key_of_another_family_is_refused():
    with pytest.raises(ConfigError, match="'mlp': unknown hyperparameter.*factors"):
        parse_config("mlp", {"factors": 64})
    with pytest.raises(ConfigError, match="'gmf': unknown hyperparameter.*hidden"):
        parse_config("gmf", {"hidden": [8]})


def test_a_wrong_type_names_the_key_and_value():
    with pytest.raises(ConfigError, match="epochs='five'"):
        parse_config("nnmf", {"epochs": "five"})


@pytest.mark.parametrize("name", NAMES)
def test_model_at_its_defaults_learns_beyond_its_start(name, data):
    """At the family's default hyperparameters, on data with real low-rank signal: at least one epoch beats
    the starting point (the tuned bias baseline), and the restored model is better than where it started."""
    result = fit_model(name, data)
    assert result.best_epoch >= 1, result.history
    val = evaluate(result.model, data)["val_rmse"]
    assert val < result.initial_val_rmse - 1e-3
    bias_val = evaluate(fit_bias_baseline(data), data)["val_rmse"]
    assert val < bias_val - 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_model_starts_at_the_bias_baseline_and_handles_unknown_ids(name, data):
    result = fit_model(name, data, {"epochs": 1})
    bias_val = evaluate(fit_bias_baseline(data), data)["val_rmse"]
    assert result.initial_val_rmse == pytest.approx(bias_val, abs=0.01)
    out = result.model(torch.tensor([1, 0, 1, 0]), torch.tensor([1, 1, 0, 0]))
    assert out.shape == (4,) and torch.all((out >= 1) & (out <= 5))


@pytest.mark.parametrize("name", NAMES)
def test_model_predicts_in_the_runs_rating_range(name, data):
    cfg = model_config(name)
    model = build_model(name, data.users.size, data.items.size, 5.5, cfg, data.item_text, (0.5, 10.0))
    with torch.no_grad():
        model.user_bias.weight.fill_(100.0)
    out = model(torch.tensor([1, 2]), torch.tensor([1, 2]))
    assert torch.all(out == 10.0)


@pytest.mark.parametrize("name", NAMES)
def test_every_embedding_table_is_declared_and_penalised(name, data):
    model = build_model(name, data.users.size, data.items.size, 4.0, model_config(name), data.item_text)
    tables = {id(m) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    declared = {id(t) for t in (*model.user_tables(), *model.item_tables())}
    assert declared == tables
    assert {id(p.table) for p in model.penalties()} == tables


def test_gmf_regression_cannot_dodge_the_penalty_by_scaling_the_combine_layer(data):
    """Scaling combine up by a^2 and the factors down by a keeps predictions: the penalty must not shrink."""
    model = build_model(
        "gmf_regression", data.users.size, data.items.size, 4.0, model_config("gmf_regression")
    )
    with torch.no_grad():
        model.user_factors.weight.normal_(0, 0.3)
        model.item_factors.weight.normal_(0, 0.3)
    u, i = torch.arange(1, 50), torch.arange(1, 50)
    ones = torch.ones(49)

    def penalty() -> float:
        return float(model.regularization(u, i, ones, ones, 1.0))

    before, pred = penalty(), model.score(u, i).detach()
    with torch.no_grad():
        model.combine.weight.mul_(100.0)
        model.user_factors.weight.div_(10.0)
        model.item_factors.weight.div_(10.0)
    torch.testing.assert_close(model.score(u, i).detach(), pred)
    assert penalty() > before


def test_the_mlp_without_its_bilinear_term_is_the_seeds_mlp_and_learns_less(data):
    """interaction=false drops W (no parameter left) and scores by the MLP alone; at the same defaults the
    bilinear term is what lets the MLP learn this low-rank signal."""
    with_term = fit_model("mlp", data)
    alone = fit_model("mlp", data, {"interaction": False})
    assert alone.model.interaction is None
    assert with_term.model.interaction.weight.shape == (8, 5)  # user_dim x item_dim
    assert (
        sum(p.numel() for p in with_term.model.parameters())
        - sum(p.numel() for p in alone.model.parameters())
        == 8 * 5
    )
    best = [min(h["val_rmse"] for h in r.history) for r in (with_term, alone)]
    assert best[0] < best[1] - 0.01, best


def test_nnmf_factors_stay_non_negative(data):
    model = fit_model("nnmf", data, {"epochs": 3}).model
    assert model.user_factors.weight.min() >= 0
    assert model.item_factors.weight.min() >= 0


def test_training_is_seeded(data):
    a = fit_model("gmf", data, {"epochs": 2}).model
    b = fit_model("gmf", data, {"epochs": 2}).model
    torch.testing.assert_close(a.user_factors.weight, b.user_factors.weight)


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_early_stopping_restores_best_epoch(data, where, monkeypatch):
    if where == "disk":  # the seed-size path: the best epoch is kept in files (musicrec.fit.checkpoint)
        monkeypatch.setattr("musicrec.fit.checkpoint.SPILL_BYTES", 0)
    result = fit_model("gmf", data, {"epochs": 30, "patience": 2, "weight_decay": 0.0, "lr": 0.2})
    curve = [h["val_rmse"] for h in result.history]  # epoch 0 is the start
    best = min(curve)
    assert result.best_epoch == int(np.argmin(curve))
    assert result.epochs < 30  # stopped early
    assert evaluate(result.model, data)["val_rmse"] == pytest.approx(best, abs=1e-4)


def test_refit_runs_exactly_the_given_epochs(data):
    result = fit_model("gmf", data, fixed_epochs=3)
    assert result.epochs == 3 and result.best_epoch == 3


def test_cold_item_with_text_uses_its_text(data):
    model = fit_model("w2v_mlp", data, {"epochs": 4}).model
    cold = data.items.lookup(["COLD_WITH_TEXT"])[0]
    assert cold > 0 and not data.trained_items[cold]
    users = torch.arange(1, 50)
    with_text = model(users, torch.full_like(users, cold))
    unknown = model(users, torch.zeros_like(users))
    assert not torch.allclose(with_text, unknown)


def test_bias_baseline_beats_global_mean_and_its_shrinkage_is_chosen_on_validation(data):
    assert (
        evaluate(fit_bias_baseline(data), data)["test_rmse"]
        < evaluate(fit_global_mean(data), data)["test_rmse"]
    )
    from musicrec.rating.baselines import REG_GRID, _fit_biases

    val = data.parts["validation"]
    regs = bias_regs(data)

    def val_rmse(ru: float, ri: float) -> float:
        b_u, b_i = _fit_biases(data, ru, ri)
        pred = np.clip(data.global_mean + b_u[val.user_idx.numpy()] + b_i[val.item_idx.numpy()], 1, 5)
        return float(np.sqrt(np.mean((pred - val.rating.numpy()) ** 2)))

    assert all(val_rmse(*regs) <= val_rmse(g, regs[1]) + 1e-9 for g in REG_GRID)
    assert val_rmse(*regs) < val_rmse(5.0, 5.0) or regs == (5.0, 5.0)
