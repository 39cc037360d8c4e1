"""Top-N side by side on one temporal leave-last-out split: most-popular, random, EASE, implicit's ALS and BPR,
and musicrec's three implicit models (defaults, and a small grid chosen on validation NDCG@10).

    python benchmarks/topn.py --data mi-ratings|medium [--seed 0] [--threads 2] [--quick]

Every model is fitted on the training part only; hyperparameters are chosen on validation NDCG@10 (full
ranking, training items excluded), and the chosen fit is reported on test (training + validation items
excluded). Writes the markdown table to stdout and benchmarks/out/topn-<data>.md (+ .json).
Needs the benchmark extra: pip install implicit==0.7.3.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from rating_models import inputs

from musicrec.metrics.full import evaluate_scorer
from musicrec.metrics.protocol import leave_last_out
from musicrec.metrics.topn import interaction_matrix

ScoreFn = Callable[[np.ndarray], np.ndarray]
MEDIUM = ROOT / "benchmarks" / "out" / "medium" / "data"
EASE_MAX_ITEMS = 5_000  # a dense item x item inverse beyond this takes minutes on 2 shared cores


@dataclass
class Split:
    """Index-coded leave-last-out split: train pairs, per-part CSR matrices, and what to exclude per part."""

    train_ratings: pd.DataFrame
    item_ids: np.ndarray
    train_u: np.ndarray
    train_i: np.ndarray
    X: sp.csr_matrix
    val: sp.csr_matrix
    test: sp.csr_matrix
    single_users: int
    tune_users: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape

    def heldout(self, part: str) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(held-out matrix, exclusion matrix) for 'validation' or 'test'."""
        if part == "validation":
            return self.val, self.X
        excl = (self.X + self.val).tocsr()
        excl.data[:] = 1.0
        return self.test, excl


def load_ratings(name: str, tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical ratings and items of a benchmark data set (the medium sample is generated once, then cached)."""
    from musicrec.data.readers import load_dataset

    if name == "medium":
        if not (MEDIUM / "reviews.json.gz").exists():
            from musicrec.data.generate import generate_sample

            generate_sample(MEDIUM, scale="medium", seed=0)
        reviews, meta = [str(MEDIUM / "reviews.json.gz")], [str(MEDIUM / "meta.json.gz")]
    else:
        reviews, meta = inputs(name, tmp)
    data = load_dataset(reviews, meta)
    return data.ratings, data.items


def build_split(ratings: pd.DataFrame, tune_users: int) -> Split:
    """Leave-last-out, then dense indices over every user and item of the data set."""
    parts = leave_last_out(ratings)
    users = pd.Index(np.sort(ratings["user_id"].unique()))
    items = pd.Index(np.sort(ratings["item_id"].unique()))
    shape = (len(users), len(items))

    def codes(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return users.get_indexer(df["user_id"]), items.get_indexer(df["item_id"])

    tu, ti = codes(parts.train)
    mats = [interaction_matrix(*codes(df), *shape) for df in (parts.validation, parts.test)]
    return Split(
        parts.train,
        items.to_numpy(),
        tu,
        ti,
        interaction_matrix(tu, ti, *shape),
        mats[0],
        mats[1],
        len(parts.single_users),
        tune_users,
    )


def evaluate(split: Split, score: ScoreFn, part: str, max_users: int | None = None) -> dict[str, float]:
    held, excl = split.heldout(part)
    return evaluate_scorer(score, None, held, excl, split.shape[1], max_users=max_users, seed=0)


def most_popular(split: Split, **_: Any) -> ScoreFn:
    counts = np.asarray(split.X.sum(0)).ravel().astype(np.float32)
    return lambda users: np.tile(counts, (len(users), 1))


def random_scores(split: Split, seed: int = 0, **_: Any) -> ScoreFn:
    n = split.shape[1]
    return lambda users: np.random.default_rng([seed, int(users[0])]).random(
        (len(users), n), dtype=np.float32
    )


def ease(split: Split, lam: float, **_: Any) -> ScoreFn:
    """EASE (Steck 2019): B = I - P / diag(P), P = (X^T X + lam I)^-1, diagonal of B zero; score = x_u B.
    Large catalogues: only the EASE_MAX_ITEMS most popular items are scored, the rest rank last."""
    counts = np.asarray(split.X.sum(0)).ravel()
    keep = np.sort(np.argsort(-counts, kind="stable")[:EASE_MAX_ITEMS])
    Xk = split.X[:, keep]
    G = (Xk.T @ Xk).toarray().astype(np.float64)
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = (P / -np.diag(P)).astype(np.float32)
    np.fill_diagonal(B, 0.0)

    def score(users: np.ndarray) -> np.ndarray:
        out = np.tile(-1e6 - np.arange(split.shape[1], dtype=np.float32), (len(users), 1))  # distinct: no tie
        out[:, keep] = Xk[users] @ B  # storms (numpy's partition is very slow on masses of equal values)
        return out

    return score


def factor_scores(user_factors: np.ndarray, item_factors: np.ndarray) -> ScoreFn:
    U, V = np.ascontiguousarray(user_factors, np.float32), np.ascontiguousarray(item_factors, np.float32)
    return lambda users: U[users] @ V.T


def implicit_als(split: Split, threads: int, seed: int, **p: Any) -> ScoreFn:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(**p, num_threads=threads, random_state=seed)
    with threadpool_limits(1, "blas"):
        model.fit(split.X, show_progress=False)
    return factor_scores(model.user_factors, model.item_factors)


def implicit_bpr(split: Split, threads: int, seed: int, **p: Any) -> ScoreFn:
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    model = BayesianPersonalizedRanking(**p, num_threads=threads, random_state=seed)
    with threadpool_limits(1, "blas"):
        model.fit(split.X, show_progress=False)
    return factor_scores(model.user_factors, model.item_factors)


def musicrec_model(
    split: Split, threads: int, seed: int, name: str, text: np.ndarray | None = None, **overrides: Any
) -> ScoreFn:
    from musicrec.implicit.train import fit_implicit, score_fn

    result = fit_implicit(
        name,
        (split.train_u, split.train_i),
        *split.shape,
        split.val,
        overrides={"seed": seed, **overrides},
        threads=threads,
        text=text,
    )
    musicrec_model.last = result  # type: ignore[attr-defined]  # best epoch for the table
    return score_fn(result.model)


def blend(first: ScoreFn, second: ScoreFn, weight: float) -> ScoreFn:
    """(1 - w) z(first) + w z(second), each standardised per user over the catalogue."""

    def z(s: np.ndarray) -> np.ndarray:
        s = np.maximum(s, np.quantile(s, 0.01, axis=1, keepdims=True))  # rows of "rank last" sentinels
        return (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)

    return lambda users: (1 - weight) * z(first(users)) + weight * z(second(users))


def grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(space)
    return [dict(zip(keys, values, strict=False)) for values in itertools.product(*(space[k] for k in keys))]


def grids(n_ratings: int, quick: bool) -> dict[str, dict[str, list[Any]]]:
    """Search spaces; the large one (the medium sample) is smaller so that one run stays in minutes."""
    small = n_ratings < 50_000 and not quick
    return {
        "EASE": {"lam": [50, 100, 200, 500, 1000, 2000] if small else [100, 500, 2000]},
        "implicit ALS": {
            "factors": [16, 32, 64, 128] if small else [64],
            "regularization": [0.01, 0.1, 1.0],
            "alpha": [1.0, 5.0, 20.0],
            "iterations": [15],
        },
        "implicit BPR": {
            "factors": [32, 64, 128] if small else [64],
            "learning_rate": [0.01, 0.05, 0.1],
            "regularization": [0.001, 0.01],
            "iterations": [100, 300] if small else [100],
        },
        "musicrec": {}
        if quick
        else MUSICREC_GRID
        if small
        else {"lr": [0.2], "neg_sampling": ["uniform", "popularity"]},
    }


MUSICREC_GRID: dict[str, list[Any]] = {"lr": [0.2, 2.0], "neg_sampling": ["uniform", "popularity"]}


def tune(
    label: str,
    fit: Callable[..., ScoreFn],
    space: dict[str, list[Any]],
    split: Split,
    args: argparse.Namespace,
    fixed: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], ScoreFn]:
    """Fit every point of the grid, keep the best by validation NDCG@10, report it on test."""
    best: tuple[float, dict[str, Any], ScoreFn, float, Any] | None = None
    for params in grid(space) or [{}]:
        t = time.perf_counter()
        fn = fit(split, threads=args.threads, seed=args.seed, **(fixed or {}), **params)
        seconds = time.perf_counter() - t
        val = evaluate(split, fn, "validation", split.tune_users)["ndcg@10"]
        epoch = getattr(getattr(fit, "last", None), "best_epoch", None)
        if best is None or val > best[0]:
            best = (val, params, fn, seconds, epoch)
    assert best is not None
    _, params, fn, seconds, epoch = best
    row = {
        "model": label,
        "params": params,
        "grid": len(grid(space)),
        "best_epoch": epoch,
        "fit_seconds": round(seconds, 2),
        "val": evaluate(split, fn, "validation"),
        "test": evaluate(split, fn, "test"),
    }
    print(_line(row), flush=True)
    return row, fn


def text_vectors(split: Split, items: pd.DataFrame) -> np.ndarray:
    """Word2Vec item vectors from metadata and TRAINING reviews only (musicrec.text), rows in item index order."""
    from musicrec.text import Word2VecConfig, item_documents, item_vectors, train_word2vec

    cfg = Word2VecConfig()
    train = split.train_ratings.assign(review_text=split.train_ratings.get("review_text", "")).fillna(
        {"review_text": ""}
    )
    docs = item_documents(train, items, cfg)
    return item_vectors(docs, train_word2vec(docs, cfg), [str(x) for x in split.item_ids], cfg)


def _line(row: dict[str, Any]) -> str:
    t, v = row["test"], row["val"]
    params = ", ".join(f"{k} {x}" for k, x in row["params"].items()) or "defaults"
    epoch = f", best epoch {row['best_epoch']}" if row.get("best_epoch") is not None else ""
    return (
        f"| {row['model']} | {params}{epoch} | {v['ndcg@10']:.4f} | {t['hr@10']:.4f} | {t['ndcg@10']:.4f} | "
        f"{t['recall@50']:.4f} | {t['coverage@10']:.3f} | {row['fit_seconds']:.2f} |"
    )


HEADER = [
    "| model | chosen on validation (grid size in the text) | val NDCG@10 | test HR@10 | test NDCG@10 | "
    "test Recall@50 | coverage@10 | fit s |",
    "|---|---|---|---|---|---|---|---|",
]
MUSICREC = ("implicit_pointwise", "implicit_bpr", "implicit_hinge")


def run_all(split: Split, text: np.ndarray | None, args: argparse.Namespace) -> list[dict[str, Any]]:
    g = grids(split.X.nnz, args.quick)
    rows = [
        tune("random", random_scores, {}, split, args)[0],
        tune("most-popular", most_popular, {}, split, args)[0],
    ]
    ease_row, ease_fn = tune("EASE", ease, g["EASE"], split, args)
    rows += [
        ease_row,
        tune("implicit ALS", implicit_als, g["implicit ALS"], split, args)[0],
        tune("implicit BPR", implicit_bpr, g["implicit BPR"], split, args)[0],
    ]
    best: tuple[float, ScoreFn] | None = None
    for name in MUSICREC:
        variants = [("defaults", {}, {})] + ([("tuned", g["musicrec"], {})] if g["musicrec"] else [])
        if text is not None:
            variants.append(("use_text", {}, {"use_text": True}))
        for tag, space, fixed in variants:
            row, fn = tune(
                f"{name} ({tag})", musicrec_model, space, split, args, {"name": name, "text": text, **fixed}
            )
            rows.append(row)
            if best is None or row["val"]["ndcg@10"] > best[0]:
                best = (row["val"]["ndcg@10"], fn)
    if best is not None:
        rows.append(
            tune(
                "blend EASE + best musicrec (z-scores)",
                lambda s, threads, seed, weight: blend(ease_fn, best[1], weight),
                {"weight": [0.25, 0.5, 0.75]},
                split,
                args,
            )[0]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mi-ratings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="defaults only (no grids): a smoke run")
    ap.add_argument("--tune-users", type=int, default=10_000, help="validation users per grid point")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ratings, items = load_ratings(args.data, Path(tmp))
    split = build_split(ratings, args.tune_users)
    text = (
        text_vectors(split, items)
        if "review_text" in ratings and ratings["review_text"].str.len().gt(0).any()
        else None
    )
    head = (
        f"data {args.data}: {len(ratings):,} interactions, {split.shape[0]:,} users, {split.shape[1]:,} items; "
        f"train {split.X.nnz:,}, validation users {split.val.getnnz():,}, test users {split.test.getnnz():,}, "
        f"one-interaction users {split.single_users:,} (reported apart); seed {args.seed}, threads {args.threads}"
    )
    print(head, "", *HEADER, sep="\n", flush=True)
    rows = run_all(split, text, args)
    text_out = "\n".join([head, "", *HEADER, *(_line(r) for r in rows)])
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"topn-{args.data}.md").write_text(text_out + "\n")
    (out / f"topn-{args.data}.json").write_text(json.dumps(rows, indent=2, default=str))
    print("\n" + text_out)


if __name__ == "__main__":
    main()
