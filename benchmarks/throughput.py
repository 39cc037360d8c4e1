"""Training throughput: musicrec's dot-product family against scikit-surprise's SVD on the same split, in one
process, and the ratio.

    .venv/bin/python benchmarks/throughput.py [--data seed|medium|small] [--epochs 3] [--factors 32]

--data seed reads /tmp/seed/data (musicrec sample-data /tmp/seed/data --scale seed) when it is there, else
generates the sample under benchmarks/out/. The ratings go through musicrec's ingest and split; then, on the
training split: gmf with `--factors` factors for `--epochs` epochs without validation (the refit path, so the
seconds are training only) on the torch path (fused=false) and on the fused numba kernel (musicrec.rating.fused, the
default), each on 1 and on 2 threads, and Surprise's SVD (Cython SGD, single-threaded) with the same factors and
epochs. Ratings per second = training rows x epochs / seconds; the ratio is the fused path on 2 threads over
Surprise. RMSE: each at its defaults on the same validation and test rows (gmf early-stopped on both paths,
SVD 20 epochs), so a speed gain that costs accuracy shows. Needs the benchmark extra:
pip install scikit-surprise==1.1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_models import code_state, ensure_sample, machine

SEED_SAMPLE = Path("/tmp/seed/data")


def split_data(sample: Path, tmp: Path) -> tuple[Any, Any, dict[str, Any]]:
    from musicrec.data.split import read_splits
    from musicrec.pipeline import ingest, prepare
    from musicrec.pipeline.workspace import Workspace

    ws = Workspace.create(tmp, "throughput")
    run = ingest.ingest(ws, [str(sample / "reviews.json.gz")], [str(sample / "meta.json.gz")])
    prepare.split(ws, 0)
    return prepare.load_train_data(ws, text=False), read_splits(ws.splits), run


def gmf_rate(data: Any, factors: int, epochs: int, threads: int, fused: bool) -> dict[str, Any]:
    from musicrec.rating.train import fit_model

    overrides = {"factors": factors, "seed": 0, "fused": fused}
    fit_model(
        "gmf", data, overrides, threads=threads, fixed_epochs=1
    )  # warm-up (and numba's compile or cache load)
    result = fit_model("gmf", data, overrides, threads=threads, fixed_epochs=epochs)
    n = len(data.parts["train"])
    return {
        "rows": n,
        "seconds": round(result.fit_seconds, 2),
        "ratings_per_second": round(n * epochs / result.fit_seconds),
    }


def gmf_accuracy(data: Any, factors: int, threads: int, fused: bool) -> dict[str, Any]:
    from musicrec.rating.evaluate import evaluate
    from musicrec.rating.train import fit_model

    result = fit_model("gmf", data, {"factors": factors, "seed": 0, "fused": fused}, threads=threads)
    return {
        **{k: round(v, 4) for k, v in evaluate(result.model, data).items() if k.endswith("rmse")},
        "best_epoch": result.best_epoch,
        "fit_seconds": round(result.fit_seconds, 1),
    }


def surprise_runs(split: Any, factors: int, epochs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from surprise import SVD, Dataset, Reader

    train = split.train
    reader = Reader(rating_scale=(float(train["rating"].min()), float(train["rating"].max())))
    trainset = Dataset.load_from_df(train[["user_id", "item_id", "rating"]], reader).build_full_trainset()
    t0 = time.perf_counter()
    SVD(n_factors=factors, n_epochs=epochs, random_state=0).fit(trainset)
    seconds = time.perf_counter() - t0
    rate = {
        "rows": len(train),
        "seconds": round(seconds, 2),
        "ratings_per_second": round(len(train) * epochs / seconds),
    }
    algo = SVD(n_factors=factors, random_state=0).fit(trainset)
    acc: dict[str, Any] = {"best_epoch": 20}
    for part, key in ((split.validation, "val_rmse"), (split.test, "test_rmse")):
        pred = np.array([algo.predict(u, i).est for u, i in zip(part["user_id"], part["item_id"], strict=False)])
        acc[key] = round(float(np.sqrt(np.mean((pred - part["rating"].to_numpy()) ** 2))), 4)
    return rate, acc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="seed", choices=["small", "medium", "seed"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--factors", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "throughput"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data == "seed" and (SEED_SAMPLE / "meta.json.gz").exists():
        sample = SEED_SAMPLE
    else:
        sample, _, _ = ensure_sample(ROOT / "benchmarks" / "out", args.data, 0)
    with tempfile.TemporaryDirectory() as tmp:
        data, split, run = split_data(sample, Path(tmp))
        rates = {}
        for path, fused in (("torch", False), ("fused", True)):
            for threads in (1, 2):
                rates[f"musicrec gmf, {path}, {threads} thread(s)"] = gmf_rate(
                    data, args.factors, args.epochs, threads, fused
                )
        accuracy = {
            f"musicrec gmf ({path})": gmf_accuracy(data, args.factors, 2, fused)
            for path, fused in (("fused", True), ("torch", False))
        }
        rate, accuracy["surprise SVD"] = surprise_runs(split, args.factors, args.epochs)
        rates["surprise SVD, 1 thread (Cython SGD)"] = rate
    surprise = rate["ratings_per_second"]
    ratio = rates["musicrec gmf, fused, 2 thread(s)"]["ratings_per_second"] / surprise
    torch_ratio = rates["musicrec gmf, torch, 2 thread(s)"]["ratings_per_second"] / surprise
    rows = [{"name": name, **row} for name, row in rates.items()]
    report = {
        "data": args.data,
        "fingerprint": run["fingerprint"],
        "ratings": run["ratings"],
        "epochs": args.epochs,
        "factors": args.factors,
        "rows": rows,
        "accuracy": accuracy,
        "ratio_2_threads_vs_surprise": round(ratio, 3),
        "ratio_torch_2_threads_vs_surprise": round(torch_ratio, 3),
        "machine": machine(),
        "code": code_state(),
        "cpu_count": os.cpu_count(),
    }
    (out / f"throughput_{args.data}.json").write_text(json.dumps(report, indent=2))
    print(
        f"| {args.data}: {len(split.train):,} training rows, {args.factors} factors, {args.epochs} epochs | seconds | ratings/s |"
    )
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['seconds']} | {r['ratings_per_second']:,} |")
    print(
        f"\ngmf fused on 2 threads / Surprise SVD: {ratio:.2f}x (target >= 2); torch path on 2 threads: "
        f"{torch_ratio:.2f}x"
    )
    for name, acc in accuracy.items():
        print(
            f"{name} at its defaults: val RMSE {acc['val_rmse']}, test RMSE {acc['test_rmse']} (epochs {acc['best_epoch']})"
        )


if __name__ == "__main__":
    main()
