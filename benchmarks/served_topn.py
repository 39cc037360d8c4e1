"""The lists musicrec serves, beside EASE, implicit's ALS and most-popular on the same leave-last-out split.

    .venv/bin/python benchmarks/served_topn.py [--data mi-ratings|medium|lastfm|cm100k] \
        [--out benchmarks/out/served]

Runs the commands a user runs, each in a fresh process with its own temporary Prefect server:
1. `musicrec train --no-refit` on the data set: the bundle serves the models fitted on the run's training
   part (the leave-last-out train for the retrieval champion), so its lists can be measured on held-out items;
2. `musicrec evaluate --run RUN`: the lists batch scoring (`musicrec score --users`) writes,
   retrieve-then-rank through the bundle's retrieval champion, on the run's leave-last-out test users (train
   and validation items excluded), plus most-popular and random;
3. in this process, on the run's own published ranking_splits: EASE and implicit ALS, each with its
   hyperparameters chosen on validation NDCG@10 (benchmarks/topn.py's grids), fitted on the train part.
   On play counts (lastfm) ALS reads the confidence weights musicrec trains with, 1 + log(1 + plays),
   times its alpha.
Needs the benchmark extra (implicit==0.7.3). Prints one markdown table and writes <out>/served-<data>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import topn
from rating_models import EXTRA_FLAGS, LASTFM, inputs

from musicrec.metrics.topn import interaction_matrix

MUSICREC = str(ROOT / ".venv" / "bin" / "musicrec")


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """Run one command in cwd (its output goes to this process's stderr); its wall seconds."""
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=sys.stderr)
    return time.perf_counter() - t0


def served(data: str, tmp: Path) -> tuple[dict[str, Any], dict[str, Any], Path, float]:
    """(training report, ranking.json, the run's folder in the store, train seconds) of train + evaluate."""
    reviews, meta = (
        inputs(data, tmp)
        if data != "medium"
        else ([str(topn.MEDIUM / "reviews.json.gz")], [str(topn.MEDIUM / "meta.json.gz")])
    )
    env = {
        **os.environ,
        "HOME": str(tmp / "home"),
        "PREFECT_HOME": str(tmp / "prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    store = tmp / "store"
    seconds = run(
        [
            MUSICREC,
            "train",
            "--reviews",
            *reviews,
            "--meta",
            *meta,
            *EXTRA_FLAGS.get(data, []),
            "--no-refit",
            "--store",
            str(store),
            "--report",
            str(tmp / "report.json"),
        ],
        env,
        tmp,
    )
    report = json.loads((tmp / "report.json").read_text())
    run([MUSICREC, "evaluate", "--run", report["run_id"], "--store", str(store)], env, tmp)
    folder = store / "runs" / report["run_id"]
    return report, json.loads((folder / "ranking.json").read_text()), folder, seconds


def reference_split(folder: Path) -> topn.Split:
    """The run's own leave-last-out parts (ranking_splits), indexed like benchmarks/topn.py's Split."""
    parts = {
        p: pd.read_parquet(folder / "ranking_splits" / f"{p}.parquet").astype(str)
        for p in ("train", "validation", "test")
    }
    every = pd.concat(parts.values())
    users, items = pd.Index(np.sort(every["user_id"].unique())), pd.Index(np.sort(every["item_id"].unique()))
    shape = (len(users), len(items))

    def codes(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return users.get_indexer(df["user_id"]), items.get_indexer(df["item_id"])

    tu, ti = codes(parts["train"])
    val, test = (interaction_matrix(*codes(parts[p]), *shape) for p in ("validation", "test"))
    return topn.Split(
        parts["train"], items.to_numpy(), tu, ti, interaction_matrix(tu, ti, *shape), val, test, 0, 10_000
    )


def play_weights(split: topn.Split, folder: Path) -> topn.Split:
    """The split with X holding Last.fm's confidence weights 1 + log(1 + plays) instead of ones."""
    plays = pd.read_csv(LASTFM / "user_artists.dat", sep="\t", dtype=str)
    key = plays["userID"] + "\x00" + plays["artistID"]
    weight = pd.Series(1.0 + np.log1p(plays["weight"].astype(float).to_numpy()), index=key.to_numpy())
    train = split.train_ratings
    w = weight.reindex((train["user_id"] + "\x00" + train["item_id"]).to_numpy()).fillna(1.0).to_numpy()
    X = sp.csr_matrix((w.astype(np.float32), (split.train_u, split.train_i)), shape=split.shape)
    return dataclasses.replace(split, X=X)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mi-ratings")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "served"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report, ranking, folder, seconds = served(args.data, Path(tmp))
        split = reference_split(folder)
        als_split = play_weights(split, folder) if args.data == "lastfm" else split
        grids = topn.grids(split.X.nnz, quick=False)
        opts = SimpleNamespace(threads=args.threads, seed=0)
        refs = [
            topn.tune("EASE", topn.ease, grids["EASE"], split, opts)[0],
            topn.tune("implicit ALS", topn.implicit_als, grids["implicit ALS"], als_split, opts)[0],
        ]
    champion = report["retrieval"]["champion"]
    rows = [
        {"method": m["method"], "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"], "users": ranking["test_users"]}
        for m in ranking["methods"]
    ]
    rows += [
        {
            "method": f"{r['model']} ({', '.join(f'{k} {v}' for k, v in r['params'].items())})",
            "hr@10": r["test"]["hr@10"],
            "ndcg@10": r["test"]["ndcg@10"],
            "users": int(r["test"]["users"]),
        }
        for r in refs
    ]
    lines = [
        f"data {args.data}: `musicrec train --no-refit` {seconds:.1f} s, retrieval champion {champion}; "
        f"served lists measured by `musicrec evaluate` on {ranking['test_users']:,} test users",
        "",
        "| method | test HR@10 | test NDCG@10 | users |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['method']} | {r['hr@10']:.4f} | {r['ndcg@10']:.4f} | {r['users']:,} |" for r in rows]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"served-{args.data}.json").write_text(
        json.dumps({"rows": rows, "champion": champion, "train_seconds": seconds}, indent=2)
    )


if __name__ == "__main__":
    main()
