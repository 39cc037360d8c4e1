"""Served rating quality: what a user gets from the published bundle, beside scikit-surprise on the same rows.

    .venv/bin/python benchmarks/served_quality.py --data cm100k|mi-ratings|mi-reviews|small|medium
        [--cut 0.1] [--seed 0]

1. The input file is read as musicrec reads it; a seeded share (--cut, 10%) of its ratings is cut out first.
2. `musicrec train` runs on the rest exactly as a user runs it (no earlier tune; its own validation split).
3. `musicrec score --pairs` scores the cut (user, item) pairs with the published champion (unknown users or
   items get the bundle's fallback, as a user's job would).
4. Surprise's BaselineOnly, SVD, SVD++ and KNNBaseline (item-based, pearson_baseline) fit the same rest
   rows at their defaults and predict the cut rows (KNNBaseline only where its dense item x item
   similarities fit in KNN_MAX_BYTES: on medium they would take 26 GB).
Prints one markdown table of RMSE on the cut rows (served and each reference, ratio to the best reference)
and writes <out>/served-quality-<data>.json. Needs the benchmark extra (scikit-surprise==1.1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from rating_models import EXTRA_FLAGS, inputs

from musicrec.data.readers import load_dataset

MUSICREC = str(ROOT / ".venv" / "bin" / "musicrec")
KNN_MAX_BYTES = 4e9  # Surprise's KNNBaseline above this many bytes of item similarities is left out


def rmse(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(truth, float) - np.asarray(pred, float)) ** 2)))


def served(
    rest: pd.DataFrame, cut: pd.DataFrame, meta: list[str], extra: list[str], tmp: Path
) -> dict[str, Any]:
    """Train on the rest as a user would, score the cut pairs with the published bundle."""
    env = {
        **os.environ,
        "HOME": str(tmp / "home"),
        "PREFECT_HOME": str(tmp / "prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    rest_file, pairs = tmp / "rest.csv", tmp / "pairs.csv"
    rest[["user_id", "item_id", "rating", "timestamp"]].to_csv(rest_file, index=False)
    cut[["user_id", "item_id"]].to_csv(pairs, index=False)
    store = tmp / "store"
    t0 = time.perf_counter()
    cmd = [MUSICREC, "train", "--reviews", str(rest_file), *[a for m in meta for a in ("--meta", m)], *extra]
    subprocess.run(
        [*cmd, "--store", str(store), "--report", str(tmp / "report.json")],
        env=env,
        cwd=tmp,
        check=True,
        stdout=sys.stderr,
    )
    seconds = time.perf_counter() - t0
    out = tmp / "scored"
    subprocess.run(
        [
            MUSICREC,
            "score",
            "--pairs",
            str(pairs),
            "--store",
            str(store),
            "--out",
            out.as_uri(),
            "--format",
            "csv",
        ],
        env=env,
        cwd=tmp,
        check=True,
        stdout=sys.stderr,
    )
    scored = pd.concat(
        [pd.read_csv(p, dtype={"user_id": str, "item_id": str}) for p in sorted(out.glob("*.csv"))]
    )
    merged = cut.merge(scored, on=["user_id", "item_id"], how="left")
    report = json.loads((tmp / "report.json").read_text())
    return {
        "rmse": rmse(merged["rating"], merged["predicted_rating"]),
        "champion": report["champion"]["name"],
        "train_seconds": round(seconds, 1),
        "unscored": int(merged["predicted_rating"].isna().sum()),
        # the "every model improves on its start": each model's best epoch and validation RMSE
        "models": {
            m["name"]: {k: m.get(k) for k in ("val_rmse", "initial_val_rmse", "best_epoch", "skipped")}
            for m in report["models"]
        },
    }


def references(
    rest: pd.DataFrame, cut: pd.DataFrame, scale: tuple[float, float], seed: int
) -> dict[str, float]:
    """RMSE on the cut rows of Surprise's algorithms fitted on the rest, at their defaults."""
    from surprise import SVD, BaselineOnly, Dataset, KNNBaseline, Reader, SVDpp

    train = Dataset.load_from_df(rest[["user_id", "item_id", "rating"]], Reader(rating_scale=scale))
    trainset = train.build_full_trainset()
    algos = {
        "BaselineOnly": BaselineOnly(verbose=False),
        "SVD": SVD(random_state=seed),
        "SVD++": SVDpp(random_state=seed, cache_ratings=True),
        "KNNBaseline": KNNBaseline(
            sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False
        ),
    }
    items = rest["item_id"].nunique()
    if items**2 * 8 > KNN_MAX_BYTES:  # its dense item x item similarities (medium: 26 GB, killed by the OOM)
        del algos["KNNBaseline"]
        print(f"KNNBaseline: skipped, {items:,} items need {items**2 * 8 / 1e9:.1f} GB", file=sys.stderr)
    out = {}
    for name, algo in algos.items():
        algo.fit(trainset)
        pred = [algo.predict(u, i).est for u, i in zip(cut["user_id"], cut["item_id"], strict=True)]
        out[name] = rmse(cut["rating"], pred)
        print(f"{name}: {out[name]:.4f}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="cm100k")
    ap.add_argument("--cut", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "served"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reviews, meta = inputs(args.data, Path(tmp))
        ratings = load_dataset(reviews).ratings
        ratings["timestamp"] = ratings["timestamp"].astype("Int64")
        cut_mask = np.random.default_rng(args.seed).random(len(ratings)) < args.cut
        rest, cut = ratings[~cut_mask].reset_index(drop=True), ratings[cut_mask].reset_index(drop=True)
        scale = (float(ratings["rating"].min()), float(ratings["rating"].max()))
        ours = served(rest, cut, meta, EXTRA_FLAGS.get(args.data, []), Path(tmp))
        print(f"served ({ours['champion']}): {ours['rmse']:.4f}", file=sys.stderr, flush=True)
        refs = references(rest, cut, scale, args.seed)
    best = min(refs, key=refs.get)
    lines = [
        f"data {args.data}: {len(rest):,} rows trained on, {len(cut):,} cut rows scored ({ours['unscored']} "
        f"unscored); `musicrec train` {ours['train_seconds']} s, champion {ours['champion']}",
        "",
        "| method | RMSE on the cut rows | vs best Surprise |",
        "|---|---|---|",
        f"| musicrec served ({ours['champion']}) | {ours['rmse']:.4f} | {ours['rmse'] / refs[best]:.3f}x |",
    ]
    lines += [f"| Surprise {k} | {v:.4f} | {v / refs[best]:.3f}x |" for k, v in refs.items()]
    lines += ["", "| model | val RMSE at start | val RMSE | best epoch |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {m['initial_val_rmse']} | {m['val_rmse']} | {m['best_epoch']} |"
        if not m.get("skipped")
        else f"| {name} | - | - | {m['skipped']} |"
        for name, m in ours["models"].items()
    ]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"served-quality-{args.data}.json").write_text(
        json.dumps({"served": ours, "surprise": refs}, indent=2)
    )


if __name__ == "__main__":
    main()
