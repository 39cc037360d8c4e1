"""Every model musicrec trains, in one table: name -> family, typed config, implementation.

Adding a model is one file (its config class and its model class) and one line in MODELS. What the rest of
the code knows about models comes from here: the CLI's and the flows' model lists, the deployment's defaults,
the configs every override is checked against, the search spaces tuning reads, and the contract tests.

This module imports nothing of the families: a config ("module:Class", pydantic, no torch) is imported when
it is first asked for, and an implementation (torch) only when model_class() is; so arguments are checked
before anything slow starts, and the families can read this table without an import circle.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from musicrec.errors import ConfigError
from musicrec.fit.space import Dim

Family = Literal["rating", "retrieval"]


@dataclass(frozen=True)
class Entry:
    """One registered model: its family, its config class and its implementation (each a class, or the
    "module:Class" path of one, imported on first use)."""

    family: Family
    config: str | type[BaseModel]
    impl: str | type


@dataclass(frozen=True)
class Judge:
    """How a family's models are judged on validation: the leaderboard metric, its direction, and the
    baseline row a model must beat to be eligible as champion."""

    metric: str
    bigger_is_better: bool
    bar: str
    epoch_metric: str  # the same metric's key in a fit's per-epoch history (musicrec.fit.loop)


FAMILIES: dict[Family, Judge] = {
    "rating": Judge("val_rmse", bigger_is_better=False, bar="bias", epoch_metric="val_rmse"),
    "retrieval": Judge("val_ndcg_at_10", bigger_is_better=True, bar="most_popular", epoch_metric="ndcg@10"),
}

# a blend (a row with members) is champion only when it beats the best single model by this share of that
# model's metric: a blend refits and serves every member, so a gain within validation noise does not pay
BLEND_MARGIN = 0.001

MODELS: dict[str, Entry] = {
    "gmf": Entry("rating", "musicrec.rating.configs:FactorConfig", "musicrec.rating.gmf:GMF"),
    "gmf_regression": Entry(
        "rating", "musicrec.rating.configs:FactorConfig", "musicrec.rating.gmf_regression:GMFRegression"
    ),
    "gmf_logistic": Entry(
        "rating", "musicrec.rating.configs:LogisticConfig", "musicrec.rating.gmf_logistic:GMFLogistic"
    ),
    "nnmf": Entry("rating", "musicrec.rating.configs:NNMFConfig", "musicrec.rating.nnmf:NNMF"),
    "svdpp": Entry("rating", "musicrec.rating.configs:SVDppConfig", "musicrec.rating.svdpp:SVDpp"),
    "knn_baseline": Entry(
        "rating", "musicrec.rating.configs:KNNBaselineConfig", "musicrec.rating.knn_baseline:KNNBaseline"
    ),
    "mlp": Entry("rating", "musicrec.rating.configs:MLPConfig", "musicrec.rating.mlp:MLP"),
    "w2v_mlp": Entry("rating", "musicrec.rating.configs:W2VMLPConfig", "musicrec.rating.w2v_mlp:W2VMLP"),
    "implicit_pointwise": Entry(
        "retrieval", "musicrec.implicit.configs:PointwiseConfig", "musicrec.implicit.train:SGDRetrieval"
    ),
    "implicit_bpr": Entry(
        "retrieval", "musicrec.implicit.configs:BPRConfig", "musicrec.implicit.train:SGDRetrieval"
    ),
    "implicit_hinge": Entry(
        "retrieval", "musicrec.implicit.configs:HingeConfig", "musicrec.implicit.train:SGDRetrieval"
    ),
    "ease": Entry("retrieval", "musicrec.implicit.configs:EASEConfig", "musicrec.implicit.ease:EASE"),
    "als": Entry("retrieval", "musicrec.implicit.configs:ALSConfig", "musicrec.implicit.als:ALS"),
    "transitions": Entry(
        "retrieval",
        "musicrec.implicit.configs:TransitionsConfig",
        "musicrec.implicit.transitions:Transitions",
    ),
    "sasrec": Entry("retrieval", "musicrec.implicit.configs:SASRecConfig", "musicrec.implicit.sasrec:SASRec"),
}


def names(family: Family) -> list[str]:
    """The registered models of a family, in table order (the default selection of a run)."""
    return [n for n, e in MODELS.items() if e.family == family]


def entry(name: str) -> Entry:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}", hint=f"choose from {', '.join(MODELS)}")
    return MODELS[name]


def family_of(name: str) -> Family:
    return entry(name).family


def config_class(name: str) -> type[BaseModel]:
    return _load(entry(name).config)


def search_space(name: str) -> dict[str, Dim]:
    """The hyperparameters tuning searches for a model, with their ranges (declared on its config)."""
    return dict(getattr(config_class(name), "search_space", {}))


def model_class(name: str) -> Any:
    """The model's implementation, imported on first use (this is where torch loads)."""
    return _load(entry(name).impl)


def _load(target: str | type) -> Any:
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)
    return target


def parse_config(
    name: str, overrides: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None
) -> Any:
    """The model's typed config: its defaults, then `defaults` (e.g. tuned values), then the user's overrides.
    Raises ConfigError naming the model, the key and what it accepts."""
    cls = config_class(name)
    if not isinstance(overrides or {}, dict):
        raise ConfigError(f"overrides for {name!r} must be a JSON object, got {type(overrides).__name__}")
    merged = {**(defaults or {}), **(overrides or {})}
    unknown = sorted(set(merged) - set(cls.model_fields))
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown hyperparameter(s) {', '.join(unknown)}",
            hint=f"{name} takes: {', '.join(cls.model_fields)}",
        )
    try:
        return cls(**merged)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}={err.get('input')!r}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"model {name!r}: {problems}", hint="fix the value in --overrides") from None


def check_overrides(models: list[str], overrides: dict[str, Any]) -> None:
    """Every override names a model being trained and parses for it (the CLI's pre-flight check)."""
    if not isinstance(overrides, dict):
        raise ConfigError(
            "--overrides must be a JSON object of model -> {key: value}",
            hint='e.g. --overrides \'{"gmf": {"epochs": 5}}\'',
        )
    for name, values in overrides.items():
        family = family_of(name)
        if name not in models:
            flag = "--models" if family == "rating" else "--retrieval-models"
            raise ConfigError(
                f"--overrides names {name!r}, which is not among the models trained "
                f"({', '.join(m for m in models if family_of(m) == family) or 'none'})",
                hint=f"add it to {flag} or remove its overrides",
            )
        parse_config(name, values)


def relative_gain(value: float, than: float, bigger_is_better: bool) -> float:
    """How much better `value` is than `than`, as a share of |than| (positive: better, in the metric's
    direction): the blend margin here, the minimum gain of a search (musicrec.tuning.records)."""
    sign = 1.0 if bigger_is_better else -1.0
    return sign * (value - than) / max(abs(than), 1e-12)


def choose_champion(rows: list[dict[str, Any]], family: Family, bar: float) -> str | None:
    """The family's champion on validation: the best metric (ties by name) among trained models that beat the
    family's baseline (`bar`, its validation value). Trained: some epoch beat the start (best_epoch >= 1), or
    a blend of trained models; a blend must also beat the best single model by BLEND_MARGIN of its metric.
    None when no model is eligible. The test split is reported, never used here."""
    judge = FAMILIES[family]
    sign = -1.0 if judge.bigger_is_better else 1.0

    def eligible(r: dict[str, Any]) -> bool:
        value = r.get(judge.metric)
        trained = bool(r.get("members")) or r.get("best_epoch", 1) >= 1
        return (
            not r.get("skipped")
            and value is not None
            and value == value
            and trained
            and sign * value < sign * bar
        )

    def best(candidates: list[dict[str, Any]]) -> dict[str, Any]:
        # ties: the last name for a rising metric, the first for a falling
        pick = max if judge.bigger_is_better else min
        return pick(candidates, key=lambda r: (round(r[judge.metric], 10), r["name"]))

    ok = [r for r in rows if eligible(r)]
    singles = [r for r in ok if not r.get("members")]
    if singles:
        top = best(singles)[judge.metric]
        blends = [r for r in ok if r.get("members")]
        ok = singles + [
            r for r in blends if relative_gain(r[judge.metric], top, judge.bigger_is_better) > BLEND_MARGIN
        ]
    return best(ok)["name"] if ok else None
