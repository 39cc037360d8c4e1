"""musicrec's implicit models over several seeds on one leave-last-out split, beside EASE (deterministic), and
the sum of the three models' scores (an inner-product ensemble: the concatenated vectors give the summed score).

    python benchmarks/topn_seeds.py [--data mi-ratings] [--seeds 0,1,2,3,4] [--set '{"implicit_bpr": {...}}']

One seed's test NDCG@10 on 1,429 MI users moves by about +-0.003 with the training seed alone, so a claim
of "above EASE" (0.052) needs the mean over seeds, not one run. Prints per model: validation and test NDCG@10
(mean +- std over seeds), the best epochs, and each seed's test value.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import topn

MODELS = ("implicit_pointwise", "implicit_bpr", "implicit_hinge")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mi-ratings")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument(
        "--set", default="{}", help='per-model overrides as JSON, e.g. {"implicit_bpr": {"lr": 1.0}}'
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    seeds, overrides = [int(s) for s in args.seeds.split(",")], json.loads(args.set)
    with tempfile.TemporaryDirectory() as tmp:
        ratings, _ = topn.load_ratings(args.data, Path(tmp))
    split = topn.build_split(ratings, 10_000)
    print(
        f"data {args.data}: {split.shape[0]:,} users, {split.shape[1]:,} items, train {split.X.nnz:,}; "
        f"seeds {seeds}; overrides {overrides}"
    )
    if split.shape[1] <= topn.EASE_MAX_ITEMS:
        for lam in (200, 500):
            fn = topn.ease(split, lam)
            print(
                f"EASE lambda {lam}: val {topn.evaluate(split, fn, 'validation')['ndcg@10']:.4f} "
                f"test {topn.evaluate(split, fn, 'test')['ndcg@10']:.4f}"
            )
    rows: dict[str, list[tuple[float, float, int]]] = {m: [] for m in (*MODELS, "sum of the three")}
    for seed in seeds:
        fns = []
        for name in MODELS:
            fn = topn.musicrec_model(split, args.threads, seed, name, **overrides.get(name, {}))
            fns.append(fn)
            rows[name].append(
                (
                    topn.evaluate(split, fn, "validation")["ndcg@10"],
                    topn.evaluate(split, fn, "test")["ndcg@10"],
                    topn.musicrec_model.last.best_epoch,
                )
            )

        def summed(users: np.ndarray, fns: list = fns) -> np.ndarray:
            return sum(f(users).copy() for f in fns)  # copy: each score_fn reuses its buffer

        rows["sum of the three"].append(
            (
                topn.evaluate(split, summed, "validation")["ndcg@10"],
                topn.evaluate(split, summed, "test")["ndcg@10"],
                -1,
            )
        )
    print("| model | val NDCG@10 | test NDCG@10 | best epochs | test per seed |\n|---|---|---|---|---|")
    for name, r in rows.items():
        v, t, e = (np.array(x) for x in zip(*r, strict=False))
        print(
            f"| {name} | {v.mean():.4f} ± {v.std():.4f} | {t.mean():.4f} ± {t.std():.4f} | "
            f"{' '.join(map(str, e)) if e.min() >= 0 else '-'} | {' '.join(f'{x:.4f}' for x in t)} |"
        )


if __name__ == "__main__":
    main()
