"""Implicit models: losses against hand-computed values,
negative sampling, configs, and learning at defaults."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from musicrec.errors import ConfigError
from musicrec.implicit.losses import batch_loss, bpr, hinge, pointwise
from musicrec.implicit.sampling import NegativeSampler
from musicrec.implicit.train import SGDRetrieval, fit_implicit
from musicrec.metrics.full import evaluate_scorer
from musicrec.metrics.topn import interaction_matrix
from musicrec.registry import model_class, names, parse_config


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_losses_match_hand_computed_values() -> None:
    pos, neg = torch.tensor([2.0, -1.0]), torch.tensor([[0.5], [1.0]])
    assert pointwise(pos, neg)[:, 0].tolist() == pytest.approx(
        [-math.log(_sig(2.0)) - math.log(1 - _sig(0.5)), -math.log(_sig(-1.0)) - math.log(1 - _sig(1.0))],
        rel=1e-5,
    )
    assert bpr(pos, neg)[:, 0].tolist() == pytest.approx(
        [-math.log(_sig(1.5)), -math.log(_sig(-2.0))], rel=1e-5
    )
    assert hinge(pos, neg, 1.0)[:, 0].tolist() == pytest.approx([0.0, 3.0])
    assert hinge(pos, neg, 2.0)[:, 0].tolist() == pytest.approx([0.5, 4.0])
    many = torch.tensor([[0.0, 1.5, -1.0]])
    assert batch_loss(hinge, torch.tensor([2.0]), many, "max", 1.0).item() == pytest.approx(0.5)  # adaptive
    assert batch_loss(hinge, torch.tensor([2.0]), many, "mean", 1.0).item() == pytest.approx(0.5 / 3)


def test_uniform_and_popularity_negatives_follow_their_distribution() -> None:
    counts = np.array([1000, 100, 10, 1, 0], float)
    n = 200_000
    uni = NegativeSampler(5, torch.Generator().manual_seed(0)).draw((n,))
    assert np.bincount(uni.numpy(), minlength=5) / n == pytest.approx(np.full(5, 0.2), abs=0.005)
    pop = NegativeSampler(5, torch.Generator().manual_seed(0), counts, 0.75).draw((n,))
    expected = counts**0.75 / (counts**0.75).sum()
    assert np.bincount(pop.numpy(), minlength=5) / n == pytest.approx(expected, abs=0.005)
    assert (pop == 4).sum() == 0  # a never-seen item is never a popularity negative


def test_sampling_is_seeded_and_redraws_positives() -> None:
    users, items = np.repeat(np.arange(50), 9), np.tile(np.arange(9), 50)  # every user has items 0..8 of 10
    s = NegativeSampler(10, torch.Generator().manual_seed(3), positives=(users, items))
    t = NegativeSampler(10, torch.Generator().manual_seed(3), positives=(users, items))
    u = torch.arange(50)
    a, b = s.sample(u, 20), t.sample(u, 20)
    assert torch.equal(a, b)
    assert (
        a == 9
    ).float().mean() > 0.15  # plain uniform draws give 0.1; one redraw of the 90% hits adds 0.09
    assert s.is_positive(torch.tensor([0]), torch.tensor([[3, 9]])).tolist() == [[True, False]]
    # against the pairs themselves: uneven histories, repeated pairs, users with none, one past the last user
    rng = np.random.default_rng(0)
    pu, pi = rng.integers(0, 30, 400) * (rng.random(400) < 0.8), rng.integers(0, 40, 400)
    known = set(zip(pu.tolist(), pi.tolist(), strict=False))
    r = NegativeSampler(40, torch.Generator(), positives=(pu, pi))
    qu, qi = torch.as_tensor(rng.integers(0, 31, 500)), torch.as_tensor(rng.integers(0, 40, (500, 6)))
    expected = [[(u, x) in known for x in row] for u, row in zip(qu.tolist(), qi.tolist(), strict=False)]
    assert r.is_positive(qu, qi).tolist() == expected and sum(map(sum, expected)) > 100


def test_configs_are_typed_and_closed() -> None:
    assert parse_config("implicit_hinge").negative_pick == "max"
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        parse_config("implicit_bpr", {"factor": 8})
    with pytest.raises(ConfigError):
        parse_config("implicit_bpr", {"neg_sampling": "zipf"})
    with pytest.raises(ConfigError, match="unknown model"):
        parse_config("implicit_warp")


def _clusters(seed: int = 0, n_users: int = 500) -> tuple[np.ndarray, np.ndarray, object, int, int]:
    """Users in 6 clusters, each preferring one item cluster 8:1, under a Zipf-like popularity."""
    rng = np.random.default_rng(seed)
    n_items, c = 240, 6
    uc, ic = rng.integers(0, c, n_users), np.arange(n_items) % c
    pop = 1.0 / (np.arange(n_items) + 10.0) ** 0.5
    rows = []
    for u in range(n_users):
        p = pop * np.where(ic == uc[u], 8.0, 1.0)
        rows.append(rng.choice(n_items, 12, replace=False, p=p / p.sum()))
    items = np.array(rows)
    val = interaction_matrix(np.arange(n_users), items[:, 11], n_users, n_items)
    return np.repeat(np.arange(n_users), 11), items[:, :11].ravel(), val, n_users, n_items


SGD_KINDS = [n for n in names("retrieval") if model_class(n) is SGDRetrieval]  # the losses


@pytest.mark.parametrize("name", SGD_KINDS)
def test_each_loss_learns_beyond_most_popular_at_its_defaults(name: str) -> None:
    users, items, val, n_users, n_items = _clusters()
    excl = interaction_matrix(users, items, n_users, n_items)
    counts = np.bincount(items, minlength=n_items).astype(np.float32)
    popular = evaluate_scorer(lambda u: np.tile(counts, (len(u), 1)), None, val, excl, n_items)["ndcg@10"]
    r = fit_implicit(name, (users, items), n_users, n_items, val, overrides={"epochs": 30})
    assert r.best_epoch >= 1
    assert r.best["ndcg@10"] > 1.5 * r.history[0]["ndcg@10"]
    assert r.best["ndcg@10"] > 1.2 * popular
    assert {"loss", "ndcg@10", "hr@10", "seconds"} <= set(r.history[1])


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_fit_is_deterministic_on_one_thread_and_restores_the_best_epoch(where: str, monkeypatch) -> None:
    if where == "disk":  # the seed-size path: the best epoch is kept in files (musicrec.fit.checkpoint)
        monkeypatch.setattr("musicrec.fit.checkpoint.SPILL_BYTES", 0)
    users, items, val, n_users, n_items = _clusters(1)
    over = {"epochs": 40, "factors": 8, "patience": 2}
    a = fit_implicit("implicit_bpr", (users, items), n_users, n_items, val, overrides=over, threads=1)
    b = fit_implicit("implicit_bpr", (users, items), n_users, n_items, val, overrides=over, threads=1)
    assert torch.equal(a.model.item, b.model.item) and a.history[-1]["loss"] == b.history[-1]["loss"]
    assert (
        1 <= a.best_epoch < len(a.history) - 1
    )  # it trained past its best epoch: the restore is what is tested
    assert a.history[-1]["ndcg@10"] < a.best["ndcg@10"]
    from musicrec.implicit.train import validate

    again = validate(a.model, np.arange(n_users), val, interaction_matrix(users, items, n_users, n_items))
    assert again["ndcg@10"] == pytest.approx(a.best["ndcg@10"])


def test_text_vectors_give_items_without_interactions_a_row() -> None:
    users, items, val, n_users, n_items = _clusters(2)
    text = np.eye(6, dtype=np.float32)[np.arange(n_items) % 6]
    r = fit_implicit(
        "implicit_bpr",
        (users, items),
        n_users,
        n_items,
        val,
        overrides={"epochs": 3, "use_text": True},
        text=text,
    )
    assert r.model.text_proj is not None and float(r.model.text_proj.abs().sum()) > 0
    table = r.model.item_table()
    assert table.shape == (n_items, r.config.factors + 1)
    u = r.model.user_table(torch.tensor([0, 1]))
    assert torch.allclose(
        u @ table[:5].T,
        torch.stack([r.model(torch.tensor([k] * 5), torch.arange(5)) for k in (0, 1)]),
        atol=1e-5,
    )


def test_the_epoch_cap_shrinks_with_the_data_and_the_fit_keeps_to_it():
    from musicrec.implicit.configs import max_epochs

    cfg = parse_config("implicit_bpr")
    assert max_epochs(cfg, 10_000) == cfg.epochs  # small data: the configured maximum
    assert max_epochs(cfg, 1_263_464) == 19  # the seed's training interactions
    assert max_epochs(parse_config("implicit_bpr", {"max_epoch_rows": 0}), 1_263_464) == cfg.epochs
    assert max_epochs(parse_config("implicit_bpr", {"max_epoch_rows": 1}), 1_263_464) == 1


def test_patience_shrinks_on_large_data_and_the_fit_stops_by_it():
    from musicrec.implicit.configs import patience_for

    cfg = parse_config("implicit_bpr")
    assert patience_for(cfg, 10_000) == cfg.patience == 8  # MI and the medium sample: the configured patience
    assert patience_for(cfg, 1_263_464) == 3  # the seed's rating split; its leave-last-out train (1.21M): 4
    assert patience_for(cfg, 1_210_000) == 4 and patience_for(cfg, 160_000) == 8  # the medium sample keeps 8
    assert patience_for(parse_config("implicit_bpr", {"max_patience_rows": 0}), 1_263_464) == 8
    assert (
        patience_for(parse_config("implicit_bpr", {"max_patience_rows": 1}), 1_263_464) == 2
    )  # never below 2
    users, items, val, n_users, n_items = _clusters()
    over = {"epochs": 40, "factors": 8, "lr": 2.0}  # a step this large peaks early and then only gets worse
    runs = [
        fit_implicit(
            "implicit_bpr",
            (users, items),
            n_users,
            n_items,
            val,
            overrides={**over, "max_patience_rows": rows},
        )
        for rows in (0, 2 * len(users))
    ]
    assert [len(r.history) - 1 - r.best_epoch for r in runs] == [8, 2]
    users, items, val, n_users, n_items = _clusters()
    r = fit_implicit(
        "implicit_bpr",
        (users, items),
        n_users,
        n_items,
        val,
        overrides={"epochs": 50, "patience": 50, "max_epoch_rows": 3 * len(users)},
    )
    assert len(r.history) - 1 == 3 and r.history[-1]["epochs"] == 3


def test_score_fn_scores_every_batch_right_while_reusing_its_buffer() -> None:
    from musicrec.implicit.model import ImplicitMF
    from musicrec.implicit.train import score_fn

    model = ImplicitMF(30, 12, 4, 0.5, 0)
    torch.nn.init.normal_(model.item_bias)
    scores = score_fn(model)
    for users in ([0, 5, 7], [1, 2, 3], [29]):  # same size twice (the buffer is reused), then another size
        got = scores(np.array(users)).copy()
        want = model(torch.tensor(users).repeat_interleave(12), torch.arange(12).repeat(len(users)))
        np.testing.assert_allclose(got, want.detach().numpy().reshape(len(users), 12), rtol=1e-5, atol=1e-6)


def test_a_user_is_the_weighted_sum_of_their_items_context_rows_and_training_leaves_the_target_out() -> None:
    from musicrec.implicit.model import ImplicitMF
    from musicrec.implicit.train import Trainer, user_histories

    users, items = np.array([0, 0, 0, 1, 3]), np.array([2, 5, 7, 4, 2])  # user 2 has no history
    model = ImplicitMF(4, 9, 3, 0.5, 0, history=user_histories(users, items, 4, 9), history_alpha=0.5)
    torch.nn.init.normal_(model.context)
    torch.nn.init.normal_(model.item_bias)
    y, p = model.context.detach(), model.user.detach()
    want = torch.stack([p[0] + (y[2] + y[5] + y[7]) / 3**0.5, p[1] + y[4], p[2], p[3] + y[2]])
    assert torch.allclose(model.query(torch.arange(4)), want, atol=1e-6)
    # the retrieval export: user table . item table == the model's score, history included
    table = model.item_table()
    assert torch.allclose(
        model.user_table(torch.arange(4)) @ table.T,
        torch.stack([model(torch.full((9,), u), torch.arange(9)) for u in range(4)]),
        atol=1e-5,
    )
    # in training, the positive being predicted is not part of its own user's context
    trainer = Trainer(parse_config("implicit_bpr"), model, users, items, 9)
    query, _, _ = trainer.queries(torch.tensor([0, 1]), torch.tensor([5, 4]))
    assert torch.allclose(query[0], p[0] + (y[2] + y[7]) / 2**0.5, atol=1e-6)
    assert torch.allclose(query[1], p[1], atol=1e-6)  # a one-item user has no other item to borrow from


def test_item_history_users_beat_free_user_rows_on_few_interactions_per_user() -> None:
    """The default (a user is their items' context rows) against one free row per user, both at the default
    step sizes, on the clustered data: 11 interactions per user, too few to learn a free row as well."""
    users, items, val, n_users, n_items = _clusters(3)
    fism = fit_implicit("implicit_bpr", (users, items), n_users, n_items, val, overrides={"epochs": 30})
    free = fit_implicit(
        "implicit_bpr",
        (users, items),
        n_users,
        n_items,
        val,
        overrides={"epochs": 30, "user_history": False, "free_user": True},
    )
    assert fism.config.user_history and not fism.config.free_user
    assert fism.best["ndcg@10"] > 1.1 * free.best["ndcg@10"]


def test_the_ensemble_scores_the_sum_of_its_members_as_one_inner_product() -> None:
    from musicrec.implicit.model import ImplicitEnsemble
    from musicrec.implicit.train import score_fn

    users, items, val, n_users, n_items = _clusters(4)
    members = [
        fit_implicit(name, (users, items), n_users, n_items, val, overrides={"epochs": 2}).model
        for name in ("implicit_bpr", "implicit_hinge")
    ]
    ensemble = ImplicitEnsemble(members)
    some = np.array([0, 3, 17, 499])
    summed = sum(score_fn(m)(some).copy() for m in members)
    np.testing.assert_allclose(score_fn(ensemble)(some), summed, rtol=1e-5, atol=1e-5)
    tables = ensemble.user_table(torch.as_tensor(some)) @ ensemble.item_table().T
    np.testing.assert_allclose(tables.numpy(), summed, rtol=1e-5, atol=1e-4)
    assert ensemble.item_table().shape == (n_items, 2 * members[0].item.shape[1] + 1)


def test_the_ensemble_weighs_each_member_and_drops_the_zero_weighted() -> None:
    from musicrec.implicit.model import ImplicitEnsemble
    from musicrec.implicit.train import score_fn

    users, items, val, n_users, n_items = _clusters(4)
    members = [
        fit_implicit(name, (users, items), n_users, n_items, val, overrides={"epochs": 2}).model
        for name in ("implicit_bpr", "implicit_hinge", "implicit_pointwise")
    ]
    blend = ImplicitEnsemble(members, [0.5, 0.0, 3.0])
    some = np.array([0, 3, 17, 499])
    expected = 0.5 * score_fn(members[0])(some).copy() + 3.0 * score_fn(members[2])(some).copy()
    np.testing.assert_allclose(score_fn(blend)(some), expected, rtol=1e-5, atol=1e-5)
    tables = blend.user_table(torch.as_tensor(some)) @ blend.item_table().T
    np.testing.assert_allclose(tables.numpy(), expected, rtol=1e-5, atol=1e-4)
    assert len(blend.members) == 2 and blend.item_table().shape[1] == 2 * members[0].item.shape[1] + 1
    with pytest.raises(ValueError):
        ImplicitEnsemble(members[:2], [0.0, 0.0])


def test_a_blend_fitted_on_validation_drops_a_useless_member() -> None:
    """A trained model and one of random vectors: the fitted blend puts no weight on the random one and
    validates at least as well as the trained one alone; each scale is the spread of the member's scores."""
    from musicrec.implicit.blend import fit_blend, score_scale
    from musicrec.implicit.model import ImplicitEnsemble
    from musicrec.implicit.train import new_model, validate

    users, items, val, n_users, n_items = _clusters(6, n_users=2000)  # halves of 1,000 users: little noise
    excl = interaction_matrix(users, items, n_users, n_items)
    good = fit_implicit("implicit_bpr", (users, items), n_users, n_items, val, overrides={"epochs": 15}).model
    cfg = parse_config("implicit_pointwise", {"user_history": False, "free_user": True, "init_std": 1.0})
    useless = new_model(cfg, n_users, n_items, users, items).eval()
    everyone = np.arange(n_users)
    blend = fit_blend({"good": good, "useless": useless}, everyone, val, excl)
    assert blend.weights["useless"] <= 0.1 and blend.weights["good"] == pytest.approx(
        1 - blend.weights["useless"]
    )
    assert blend.check["check_ndcg_at_10"]["fitted"] > blend.check["check_ndcg_at_10"]["equal"]
    assert blend.scales["useless"] == pytest.approx(score_scale(useless, everyone, n_items), rel=1e-6)
    assert blend.scales["useless"] == pytest.approx(float(np.sqrt(cfg.factors)), rel=0.1)  # N(0, 1) rows
    fitted = ImplicitEnsemble([good, useless], blend.coefficients())
    alone = validate(good, everyone, val, excl)["ndcg@10"]
    assert validate(fitted, everyone, val, excl)["ndcg@10"] >= alone - 1e-9
    equal = ImplicitEnsemble([good, useless], [1 / s for s in blend.scales.values()])
    assert validate(equal, everyone, val, excl)["ndcg@10"] < alone


def test_a_model_without_free_user_rows_holds_no_user_table() -> None:
    """The default model's users are their items: its user table holds no memory (at seed size it would be
    840K x 64 floats per model), not even the storage of the rows drawn to keep the item rows seeded."""
    from musicrec.implicit.train import new_model

    users, items = np.array([0, 1, 2]), np.array([3, 4, 5])
    model = new_model(parse_config("implicit_bpr"), 5000, 10, users, items)
    assert model.user.shape == (0, 64) and model.user.untyped_storage().nbytes() == 0
    free = new_model(parse_config("implicit_bpr", {"free_user": True}), 5000, 10, users, items)
    assert torch.equal(model.item, free.item)  # the same seeded item rows either way


@pytest.mark.parametrize(
    "name,text,limit",
    [
        ("implicit_pointwise", False, 0),
        ("implicit_bpr", True, 0),
        ("implicit_hinge", True, 0),
        ("implicit_bpr", False, 4),
    ],
)
def test_the_fused_step_is_the_torch_step(name: str, text: bool, limit: int) -> None:
    """Two steps of the compiled kernel change every table (context, item, bias, text projection, AdaGrad
    accumulators) as the torch step does, with the same loss: hardest-negative picks, the positive left out
    of its own user's history, decay per occurrence, duplicates summed. With limit 4 the 11-item histories
    are sampled (the draws differ, so only the shapes of the update are compared: the same rows change)."""
    from musicrec.implicit.train import Trainer, new_model

    users, items, _, n_users, n_items = _clusters()
    vectors = (
        torch.from_numpy(np.random.default_rng(1).normal(size=(n_items, 6)).astype(np.float32))
        if text
        else None
    )
    trainers = []
    for fused in (True, False):
        cfg = parse_config(name, {"fused": fused, "history_limit": limit, "use_text": text})
        model = new_model(cfg, n_users, n_items, users, items, vectors)
        if model.text_proj is not None:
            model.text_proj.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
        model.context.normal_(
            0, 0.1, generator=torch.Generator().manual_seed(3)
        )  # zeros: no query, no signal
        trainers.append(Trainer(cfg, model, users, items, n_items))
    assert trainers[0].fused and not trainers[1].fused
    rng = np.random.default_rng(4)
    for _ in range(2):
        rows = torch.from_numpy(rng.choice(len(users), 300, replace=False))
        u, i = torch.from_numpy(users)[rows], torch.from_numpy(items)[rows]
        neg = trainers[1].sampler.sample(u, trainers[1].cfg.negatives)
        losses = [t.fused_step(u, i, neg.clone()) if t.fused else t.step(u, i, neg.clone()) for t in trainers]
    (a, b) = (
        dict(t.model.named_parameters()) | {f"acc_{k}": v for k, v in t.opt.acc.items()} for t in trainers
    )
    before = new_model(trainers[1].cfg, n_users, n_items, users, items, vectors).item
    if limit == 0:
        assert losses[0] == pytest.approx(losses[1], rel=1e-4)
        for key in b:
            assert torch.allclose(a[key], b[key], atol=2e-5, rtol=1e-4), key
    else:
        changed = [(t.model.item != before).any(1) for t in trainers]
        assert torch.equal(changed[0], changed[1]) and int(changed[0].sum()) > 50
        assert losses[0] == pytest.approx(losses[1], rel=0.2)


def test_the_untrained_start_is_validated_as_one_global_order_with_the_same_numbers() -> None:
    """Every context row zero: each user's scores are the item bias, so validation takes the static path;
    its numbers equal the full users x items scoring's, with ties (equal biases) broken by index alike."""
    from musicrec.implicit.train import bias_only, new_model, score_fn, validate

    users, items, val, n_users, n_items = _clusters()
    model = new_model(parse_config("implicit_bpr"), n_users, n_items, users, items)
    model.item_bias.copy_(
        torch.from_numpy(np.random.default_rng(5).integers(0, 4, n_items).astype(np.float32))
    )
    exclude = interaction_matrix(users, items, n_users, n_items)
    rows = np.arange(n_users)
    assert bias_only(model)
    full = evaluate_scorer(score_fn(model), rows, val, exclude, n_items, coverage=False)
    assert validate(model, rows, val, exclude) == full and full["ndcg@10"] > 0
    model.context[3, 0] = 0.5  # one trained row: the full scoring again
    assert not bias_only(model)


def test_fits_side_by_side_train_with_one_blas_thread_from_a_fresh_process_until_the_last_ends() -> None:
    """The fused step's np.dot runs on scipy's OpenBLAS, which numba loads only at the kernel's first call:
    the limit must hold for that library in a process that has not loaded it yet, and a fit that ends must not
    lift it under fits still running in other threads."""
    script = """
import threading
from threadpoolctl import threadpool_info
from musicrec.fit.threads import cpu_threads

def blas():
    libs = [x for x in threadpool_info() if x["user_api"] == "blas"]
    return len(libs), sorted({x["num_threads"] for x in libs})

seen, first_in, second_in, first_out = [], threading.Event(), threading.Event(), threading.Event()

def first():
    with cpu_threads(1):
        seen.append(("first", blas()))
        first_in.set()
        second_in.wait()
    first_out.set()

def second():
    first_in.wait()
    with cpu_threads(1):
        second_in.set()
        first_out.wait()
        seen.append(("second after first ended", blas()))

threads = [threading.Thread(target=f) for f in (first, second)]
[t.start() for t in threads]
[t.join() for t in threads]
print(seen)
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "2"},
        check=True,
    ).stdout
    # numpy's OpenBLAS and scipy's (loaded by the first fit), both at one thread while any fit runs
    assert out.strip() == "[('first', (2, [1])), ('second after first ended', (2, [1]))]"


@pytest.mark.parametrize("name,text,limit", [("implicit_hinge", True, 4), ("implicit_pointwise", False, 0)])
def test_the_fused_step_on_two_threads_is_the_one_thread_step(name: str, text: bool, limit: int) -> None:
    """The two-thread step (history sums split by user, queries and hardest negatives by row, the updates on
    one thread) changes every table as the one-thread step does, sampled histories included."""
    from musicrec.implicit.train import Trainer, new_model

    users, items, _, n_users, n_items = _clusters()
    vectors = (
        torch.from_numpy(np.random.default_rng(1).normal(size=(n_items, 6)).astype(np.float32))
        if text
        else None
    )
    trainers = []
    for threads in (1, 2):
        cfg = parse_config(name, {"history_limit": limit, "use_text": text, "batch_size": 200})
        model = new_model(cfg, n_users, n_items, users, items, vectors)
        model.context.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
        trainers.append(Trainer(cfg, model, users, items, n_items, threads=threads))
    losses = [[t.train_epoch() for _ in range(2)] for t in trainers]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    (a, b) = (
        dict(t.model.named_parameters()) | {f"acc_{k}": v for k, v in t.opt.acc.items()} for t in trainers
    )
    start = new_model(trainers[0].cfg, n_users, n_items, users, items, vectors)
    assert not torch.allclose(a["item"], start.item)  # it trained
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key


@pytest.mark.parametrize(
    "name,fused", [("implicit_pointwise", True), ("implicit_hinge", True), ("implicit_bpr", False)]
)
def test_weights_of_one_give_the_same_model_bit_for_bit(name: str, fused: bool) -> None:
    """Ratings train without weights; a fit with every weight 1 (the product taken) is the same model, table
    for table, in the fused and in the torch step; other weights change it."""
    users, items, val, n_users, n_items = _clusters()
    over = {"epochs": 2, "fused": fused, "patience": 5}

    def tables(weights: np.ndarray | None) -> dict[str, torch.Tensor]:
        r = fit_implicit(name, (users, items), n_users, n_items, val, overrides=over, weights=weights)
        return {k: v.detach().clone() for k, v in r.model.state_dict().items()}

    plain, ones = tables(None), tables(np.ones(len(users), np.float32))
    assert plain.keys() == ones.keys()
    assert all(torch.equal(plain[k], ones[k]) for k in plain)
    counts = np.random.default_rng(0).integers(1, 500, len(users))
    weighted = tables(1.0 + np.log1p(counts).astype(np.float32))
    assert not torch.equal(plain["item"], weighted["item"])


@pytest.mark.parametrize("name", ["implicit_pointwise", "implicit_bpr", "implicit_hinge"])
def test_the_fused_step_weighs_each_positive_as_the_torch_step(name: str) -> None:
    """With confidence weights the compiled step's update and loss equal the torch step's."""
    from musicrec.implicit.train import Trainer, new_model

    users, items, _, n_users, n_items = _clusters()
    weights = (1.0 + np.log1p(np.random.default_rng(6).integers(0, 300, len(users)))).astype(np.float32)
    trainers = []
    for fused in (True, False):
        cfg = parse_config(name, {"fused": fused, "history_limit": 0, "use_text": False})
        model = new_model(cfg, n_users, n_items, users, items)
        model.context.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
        trainers.append(Trainer(cfg, model, users, items, n_items, weights=weights))
    rng = np.random.default_rng(4)
    for _ in range(2):
        rows = torch.from_numpy(rng.choice(len(users), 300, replace=False))
        u, i = torch.from_numpy(users)[rows], torch.from_numpy(items)[rows]
        w = torch.from_numpy(weights)[rows]
        neg = trainers[1].sampler.sample(u, trainers[1].cfg.negatives)
        losses = [
            t.fused_step(u, i, neg.clone(), w) if t.fused else t.step(u, i, neg.clone(), w) for t in trainers
        ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    a, b = (
        {**dict(t.model.named_parameters()), **{f"acc_{k}": v for k, v in t.opt.acc.items()}}
        for t in trainers
    )
    for key in b:
        assert torch.allclose(a[key], b[key], atol=2e-5, rtol=1e-4), key
