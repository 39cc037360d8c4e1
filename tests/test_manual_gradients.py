"""The closed-form gradients of the dot-product family equal autograd's, so the fast path trains the same model."""

import pytest
import torch

from musicrec.rating.build import build_model, model_config


@pytest.mark.parametrize("name", ["gmf", "nnmf"])
def test_manual_gradients_match_autograd(name):
    torch.manual_seed(0)
    model = build_model(name, 30, 20, 4.2, model_config(name, {"init_std": 0.3, "weight_decay": 0.7}))
    with torch.no_grad():
        model.user_bias.weight.normal_(0, 0.2)
        model.item_bias.weight.normal_(0, 0.2)
    u = torch.tensor([1, 2, 2, 0, 5, 29])  # repeats and the unknown row included
    i = torch.tensor([3, 3, 4, 0, 19, 1])
    r = torch.tensor([5.0, 4.0, 1.0, 3.0, 5.0, 2.0])
    wu, wi = torch.rand(6) + 0.1, torch.rand(6) + 0.1
    params = [
        model.user_bias.weight,
        model.item_bias.weight,
        model.user_factors.weight,
        model.item_factors.weight,
    ]

    loss = model.manual_gradients(u, i, r, wu, wi)
    manual = [p.grad.to_dense().clone() for p in params]
    for p in params:
        p.grad = None
    data_loss = model.loss(model.score(u, i), r)
    ((data_loss + model.regularization(u, i, wu, wi, 0.5)) * len(u)).backward()  # the trainer's summed loss
    for got, p in zip(manual, params, strict=False):
        torch.testing.assert_close(got, p.grad.to_dense(), rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(data_loss.item(), rel=1e-6)


def test_generalized_models_use_autograd():
    model = build_model("gmf_regression", 5, 5, 4.0, model_config("gmf_regression"))
    one = torch.tensor([1])
    assert model.manual_gradients(one, one, torch.tensor([5.0]), torch.ones(1), torch.ones(1)) is None
