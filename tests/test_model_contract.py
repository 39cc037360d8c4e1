"""The contract every registered model inherits, whatever its family (as benfred/implicit's
RecommenderBaseTestMixin): it fits on a low-rank fixture and improves on its start, exports with parity,
refits on every row, and round-trips its config. The model lists come from musicrec.registry, so a new
model is tested by adding its registry line.

Two throwaway models show what adding a model costs: a rating model and a closed-form retrieval model, each
one class below and one registry entry (set with monkeypatch), pass the same contract and train through the
same entry points as the registered ones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from musicrec import registry
from musicrec.data.split import split_ratings
from musicrec.implicit.base import ImplicitResult, Interactions, RetrievalModel
from musicrec.implicit.configs import ImplicitConfig
from musicrec.implicit.export import export_tables, verify_retrieval, write_retrieval
from musicrec.implicit.model import InnerProductTables
from musicrec.implicit.train import fit_implicit, validate
from musicrec.metrics.topn import interaction_matrix
from musicrec.rating.base import DotProductGradients, FactorTables, RatingModel, factor_tables
from musicrec.rating.configs import FactorConfig
from musicrec.rating.data import prepare_data
from musicrec.rating.export import export_onnx, verify_onnx
from musicrec.rating.train import fit_model

# --- a throwaway model of each family: one class each, plus the registry line in the fixture below ---


class ScaledDot(DotProductGradients, FactorTables, RatingModel):
    """mu + b_u + b_i + p_u . q_i: the smallest factor model the rating contract takes."""

    name = "throwaway_dot"
    config_class = FactorConfig

    def __init__(
        self, n_users: int, n_items: int, global_mean: float, cfg: FactorConfig, **kw: object
    ) -> None:
        super().__init__(n_users, n_items, global_mean, cfg, **kw)
        self.user_factors, self.item_factors = factor_tables(n_users, n_items, cfg.factors, cfg.init_std)

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        dot = (self.user_factors(user_idx) * self.item_factors(item_idx)).sum(-1)
        return self.biases(user_idx, item_idx) + dot


class CoOccurrence(InnerProductTables, torch.nn.Module):
    """Item-item cosine co-occurrence (a closed form, no epochs): score(u, i) = sum over the user's items j of
    sim(i, j), plus a small popularity tie-break: the user's item indicator times the item rows."""

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        self.register_buffer("history", torch.zeros(n_users, n_items))
        self.register_buffer("similar", torch.zeros(n_items, n_items))
        self.register_buffer("item_bias", torch.zeros(n_items))

    def query(self, users: torch.Tensor) -> torch.Tensor:
        return self.history[users]

    def item_vectors(self) -> torch.Tensor:
        return self.similar

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.query(user_idx) * self.similar[item_idx]).sum(-1) + self.item_bias[item_idx]


class CoOccurrenceKind(RetrievalModel):
    """The contract's three class methods for CoOccurrence."""

    @classmethod
    def fit(cls, name, cfg, data, *, threads=1, on_epoch=None):
        model = CoOccurrence(data.n_users, data.n_items)
        users = np.flatnonzero(np.diff(data.validation.indptr))
        start = validate(model, users, data.validation, data.exclude)
        cls._count(model, data)
        fitted = validate(model, users, data.validation, data.exclude)
        better = fitted["ndcg@10"] > start["ndcg@10"]
        history = [{"epoch": 0, **start}, {"epoch": 1, **fitted}]
        return ImplicitResult(name, cfg, model, int(better), history[int(better)], history)

    @classmethod
    def refit(cls, name, cfg, data, epochs, *, threads=1):
        model = CoOccurrence(data.n_users, data.n_items)
        cls._count(model, data)
        return model

    @classmethod
    def rebuild(cls, cfg, n_users, n_items, state, text):
        model = CoOccurrence(n_users, n_items)
        model.load_state_dict(state)
        return model

    @staticmethod
    def _count(model: CoOccurrence, data: Interactions) -> None:
        x = interaction_matrix(data.users, data.items, data.n_users, data.n_items)
        co = (x.T @ x).toarray()
        counts = np.diag(co).copy()
        np.fill_diagonal(co, 0.0)
        norm = np.sqrt(np.maximum(counts, 1.0))
        model.history.copy_(torch.from_numpy(x.toarray()))
        model.similar.copy_(torch.from_numpy((co / norm[:, None] / norm[None, :]).astype(np.float32)))
        model.item_bias.copy_(torch.from_numpy(1e-3 * np.log1p(counts).astype(np.float32)))


class CoOccurrenceConfig(ImplicitConfig):
    """Nothing to set beyond the family's fields (the search space is empty: nothing to tune)."""

    search_space = {}


@pytest.fixture(autouse=True)
def throwaways(monkeypatch):
    monkeypatch.setitem(registry.MODELS, "throwaway_dot", registry.Entry("rating", FactorConfig, ScaledDot))
    monkeypatch.setitem(
        registry.MODELS,
        "throwaway_cooccurrence",
        registry.Entry("retrieval", CoOccurrenceConfig, CoOccurrenceKind),
    )


RATING = [*registry.names("rating"), "throwaway_dot"]
RETRIEVAL = [*registry.names("retrieval"), "throwaway_cooccurrence"]
# --- the contract: the rating family ---


@pytest.fixture(scope="module")
def ratings(tiny):
    table, items = tiny
    split = split_ratings(table, seed=0)
    vectors = np.random.default_rng(0).normal(size=(len(items), 8)).astype(np.float32)
    return prepare_data(split, list(items.item_id), vectors)


@pytest.mark.parametrize("name", RATING)
def test_a_rating_model_improves_on_its_start(name, ratings):
    result = fit_model(name, ratings, {"epochs": 12})
    assert result.best_epoch >= 1
    assert result.history[result.best_epoch]["val_rmse"] < result.history[0]["val_rmse"] - 1e-3


@pytest.mark.parametrize("name", RATING)
def test_a_rating_model_exports_with_parity_and_refits(name, ratings, tmp_path: Path):
    model = fit_model(name, ratings, {"epochs": 2}).model
    users, items = list(ratings.users.ids), list(ratings.items.ids)
    export_onnx(model, users, items, tmp_path / "model.onnx")
    sample_u = [*users[:50], "UNKNOWN-USER"]
    sample_i = [*items[:50], items[0]]
    check = verify_onnx(tmp_path / "model.onnx", model, sample_u, sample_i, user_ids=users, item_ids=items)
    assert check["max_abs_diff"] <= 1e-4 and check["unknown_users"] == 1
    refit = fit_model(name, ratings, {"epochs": 2}, fixed_epochs=2)
    assert refit.epochs == 2 and refit.best_epoch == 2 and math.isnan(refit.initial_val_rmse)


@pytest.mark.parametrize("name", RATING + RETRIEVAL)
def test_a_config_round_trips_through_json(name):
    cfg = registry.parse_config(name)
    assert registry.parse_config(name, json.loads(cfg.model_dump_json())) == cfg
    for key in registry.search_space(name):
        assert key in type(cfg).model_fields, f"{name} searches {key}, which its config lacks"


# --- the contract: the retrieval family ---


def _clusters(seed: int = 0) -> Interactions:
    """500 users in 6 clusters, each preferring one item cluster 8:1; the last item of each user validates,
    the others are in drawing order."""
    rng = np.random.default_rng(seed)
    n_users, n_items, c = 500, 240, 6
    uc, ic = rng.integers(0, c, n_users), np.arange(n_items) % c
    pop = 1.0 / (np.arange(n_items) + 10.0) ** 0.5
    rows = np.array(
        [
            rng.choice(n_items, 12, replace=False, p=(p := pop * np.where(ic == uc[u], 8.0, 1.0)) / p.sum())
            for u in range(n_users)
        ]
    )
    users, items = np.repeat(np.arange(n_users), 11), rows[:, :11].ravel()
    val = interaction_matrix(np.arange(n_users), rows[:, 11], n_users, n_items)
    seen = interaction_matrix(users, items, n_users, n_items)
    return Interactions(users, items, n_users, n_items, val, seen, order=np.tile(np.arange(11), n_users))


@pytest.fixture(scope="module")
def clusters() -> Interactions:
    return _clusters()


def _epochs(name: str, epochs: int) -> dict[str, int]:
    """{"epochs": epochs} for a kind that trains by epochs; nothing for a closed form (ease, transitions)."""
    return {"epochs": epochs} if "epochs" in registry.config_class(name).model_fields else {}


@pytest.mark.parametrize("name", RETRIEVAL)
def test_a_retrieval_model_improves_on_its_start(name, clusters):
    d = clusters
    pairs, overrides = (d.users, d.items), _epochs(name, 20)
    result = fit_implicit(
        name, pairs, d.n_users, d.n_items, d.validation, d.exclude, overrides=overrides, order=d.order
    )
    assert result.best_epoch >= 1
    assert result.history[result.best_epoch]["ndcg@10"] > result.history[0]["ndcg@10"]


@pytest.mark.parametrize("name", RETRIEVAL)
def test_a_retrieval_model_exports_with_parity_refits_and_rebuilds(name, clusters, tmp_path: Path):
    d = clusters
    cfg = registry.parse_config(name, _epochs(name, 2))
    kind = registry.model_class(name)
    model = kind.refit(name, cfg, d, 2)
    users, items = export_tables(model, d.n_users)
    user_ids, item_ids = [f"u{k}" for k in range(1, d.n_users)], [f"i{k}" for k in range(1, d.n_items)]
    write_retrieval(tmp_path, user_ids, users, item_ids, items[1:])
    check = verify_retrieval(tmp_path, user_ids, users, [*user_ids[:40], "UNKNOWN-USER"])
    assert check["max_abs_diff"] <= 1e-6 and check["unknown_users"] == 1
    known = (d.users > 0) & (d.items > 0)  # index 0 is the unknown row in an export
    u, i = d.users[known][:300], d.items[known][:300]
    with torch.no_grad():
        expected = model(torch.from_numpy(u), torch.from_numpy(i)).numpy()
    np.testing.assert_allclose((users[u] * items[i]).sum(1), expected, atol=1e-4)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    again = kind.rebuild(cfg, d.n_users, d.n_items, state, None)
    with torch.no_grad():
        np.testing.assert_array_equal(again(torch.from_numpy(u), torch.from_numpy(i)).numpy(), expected)


def test_the_throwaways_are_chosen_like_any_other_model():
    rows = [
        {"name": "throwaway_cooccurrence", "val_ndcg_at_10": 0.3, "best_epoch": 1},
        {"name": "implicit_bpr", "val_ndcg_at_10": 0.2, "best_epoch": 3},
    ]
    assert registry.choose_champion(rows, "retrieval", 0.1) == "throwaway_cooccurrence"
    assert registry.choose_champion(rows, "retrieval", 0.35) is None
    assert "throwaway_dot" in registry.names("rating")
