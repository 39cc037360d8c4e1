"""The fused numba kernel (musicrec.rating.fused) trains the dot-product family exactly as the torch path does:
the same weights and loss after an epoch, the same on 1 and 2 threads, and it learns at the defaults."""

import pytest
import torch

from musicrec.data.split import split_ratings
from musicrec.rating import fused
from musicrec.rating.baselines import bias_regs, fit_biases
from musicrec.rating.build import build_model, model_config
from musicrec.rating.data import prepare_data
from musicrec.rating.evaluate import evaluate
from musicrec.rating.train import _optimizers, _row_weights, _run_epoch, batch_size_for, fit_model


@pytest.fixture(scope="module")
def data(tiny):
    return prepare_data(split_ratings(tiny[0], seed=0))


def _started(name, data, overrides):
    """A model at the trainer's starting point (tuned biases, seeded factors) and its fresh optimisers."""
    cfg = model_config(name, overrides)
    model = build_model(name, data.users.size, data.items.size, data.global_mean, cfg)
    model.bias_regs = bias_regs(data)
    model.start_from(data, *fit_biases(data, model.bias_regs))
    return model, _optimizers(model, cfg)


def _one_epoch(name, data, overrides, threads=1):
    model, optimizers = _started(name, data, overrides)
    train = data.parts["train"]
    gen = torch.Generator().manual_seed(model.cfg.seed)
    loss = _run_epoch(
        model,
        train,
        optimizers,
        batch_size_for(model.cfg, len(train)),
        gen,
        _row_weights(model, model.cfg, train),
        threads,
    )
    return model, optimizers, loss


CASES = [
    ("gmf", {}),
    ("gmf", {"batch_size": 64, "id_dropout": 0.2}),  # many batches, many unknown rows summed per batch
    ("gmf", {"batch_size": 2048, "bias_lr": 0.0}),  # big batches (many duplicate rows), frozen biases
    ("nnmf", {"batch_size": 128}),  # the factor floor after each step
]


@pytest.mark.parametrize(("name", "overrides"), CASES)
def test_one_fused_epoch_equals_one_torch_epoch(name, overrides, data):
    torch_model, torch_opts, torch_loss = _one_epoch(name, data, {**overrides, "fused": False})
    fused_model, fused_opts, fused_loss = _one_epoch(name, data, {**overrides, "fused": True})
    start, _ = _started(name, data, overrides)
    for key, want in torch_model.state_dict().items():
        got = fused_model.state_dict()[key]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=key)
        if key.endswith("factors.weight"):  # the epoch did move the tables: the comparison is not vacuous
            assert (want - start.state_dict()[key]).abs().max() > 1e-3, key
    assert fused_loss == pytest.approx(torch_loss, rel=1e-5)
    # the AdaGrad accumulators are the optimisers' own state, the same on both paths
    for t_opt, f_opt in zip(torch_opts, fused_opts, strict=False):
        for t_p, f_p in zip(t_opt.param_groups[0]["params"], f_opt.param_groups[0]["params"], strict=False):
            torch.testing.assert_close(f_opt.state[f_p]["sum"], t_opt.state[t_p]["sum"], rtol=1e-5, atol=1e-6)
    if name == "nnmf":
        assert all(
            (fused_model.state_dict()[k] >= 0).all() for k in ("user_factors.weight", "item_factors.weight")
        )


@pytest.mark.parametrize(("name", "overrides"), CASES)
def test_one_and_two_threads_give_identical_weights(name, overrides, data):
    one, _, loss_one = _one_epoch(name, data, {**overrides, "fused": True}, threads=1)
    two, _, loss_two = _one_epoch(name, data, {**overrides, "fused": True}, threads=2)
    three, _, _ = _one_epoch(name, data, {**overrides, "fused": True}, threads=3)
    for key, want in one.state_dict().items():
        assert torch.equal(two.state_dict()[key], want), key
        assert torch.equal(three.state_dict()[key], want), key
    assert loss_two == pytest.approx(loss_one, rel=1e-9)


def test_the_fused_path_is_the_default_for_the_dot_product_family_only(data):
    for name, expected in (
        ("gmf", True),
        ("nnmf", True),
        ("gmf_regression", False),
        ("gmf_logistic", False),
        ("mlp", False),
    ):
        model, optimizers = _started(name, data, {})
        assert fused.applies(model, optimizers) is expected, name
    model, optimizers = _started("gmf", data, {"fused": False})
    assert not fused.applies(model, optimizers)


def test_the_trainer_calls_the_kernel_by_default(data, monkeypatch):
    calls = []
    real = fused.run_epoch
    monkeypatch.setattr(fused, "run_epoch", lambda *a, **kw: calls.append(a[0].cfg.fused) or real(*a, **kw))
    fit_model("gmf", data, fixed_epochs=2, threads=2)
    fit_model("gmf", data, {"fused": False}, fixed_epochs=1)
    assert calls == [True, True]


def test_a_fused_fit_at_the_defaults_learns_beyond_its_start(data):
    """The real-signal check of tests/test_models.py, on the fused path with 2 threads: at least one epoch beats
    the tuned bias start, and the restored model is better than where it started."""
    result = fit_model("gmf", data, threads=2)
    assert result.config.fused and result.best_epoch >= 1, result.history
    val = evaluate(result.model, data)["val_rmse"]
    assert val < result.initial_val_rmse - 1e-3
    torch_result = fit_model("gmf", data, {"fused": False}, threads=2)
    assert result.best_epoch == torch_result.best_epoch
    assert val == pytest.approx(evaluate(torch_result.model, data)["val_rmse"], abs=1e-4)


def test_the_kernel_updates_the_models_tables_in_place(data):
    model, optimizers = _started("gmf", data, {})
    pointers = [
        t.weight.data_ptr()
        for t in (model.user_bias, model.item_bias, model.user_factors, model.item_factors)
    ]
    before = model.user_factors.weight.detach().clone()
    train = data.parts["train"]
    fused.run_epoch(
        model,
        train,
        optimizers,
        256,
        torch.Generator().manual_seed(0),
        _row_weights(model, model.cfg, train),
        2,
    )
    assert pointers == [
        t.weight.data_ptr()
        for t in (model.user_bias, model.item_bias, model.user_factors, model.item_factors)
    ]
    assert not torch.equal(model.user_factors.weight, before)


@pytest.mark.timeout(60)
def test_a_failing_thread_stops_the_others_instead_of_hanging(data, monkeypatch):
    model, optimizers = _started("gmf", data, {})
    real, calls = fused.accumulate, []

    def failing(t, *args):
        calls.append(t)
        if t == 1 and len(calls) > 3:
            raise RuntimeError("kernel failed")
        return real(t, *args)

    monkeypatch.setattr(fused, "accumulate", failing)
    train = data.parts["train"]
    with pytest.raises(RuntimeError, match="kernel failed"):  # the original error, not BrokenBarrierError
        fused.run_epoch(
            model,
            train,
            optimizers,
            64,
            torch.Generator().manual_seed(0),
            _row_weights(model, model.cfg, train),
            2,
        )
