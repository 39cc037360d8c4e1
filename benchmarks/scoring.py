"""Scoring throughput on a published bundle: pairs/s (onnxruntime vs PyTorch eager) and top-10 users/s.

    .venv/bin/python benchmarks/scoring.py [--scale medium] [--threads 1,2] [--pairs 1000000] [--users 5000]
    .venv/bin/python benchmarks/scoring.py --store file:///path/store --workspace /path/work/<run id>

Without --store it builds its own bundle once (library pipeline, no Prefect): the `<scale>` sample
(generated into benchmarks/out/<scale> if absent) -> ingest -> split + Word2Vec -> gmf_logistic (3 epochs)
-> ONNX bundle published to benchmarks/out/scoring/store and promoted. Later runs reuse it.
The workspace (of the run that published the bundle) is only needed for the PyTorch comparison.
Writes benchmarks/out/scoring/scoring_<scale>.json and prints a markdown summary.
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

from musicrec.scoring.bundle import download_bundle, load_bundle, resolve_version
from musicrec.scoring.candidates import build_candidate_index
from musicrec.scoring.rank import rank_users
from musicrec.scoring.runtime import load_session, predict_ratings
from musicrec.store import layout, open_store

MODEL = "gmf_logistic"


def build_store(out: Path, scale: str, epochs: int) -> tuple[str, Path]:
    """(store URI, workspace) of a published gmf_logistic bundle; trained once, then reused."""
    from musicrec.pipeline import ingest, prepare, publish, train
    from musicrec.pipeline.workspace import Workspace

    store_uri, ws = (out / "store").resolve().as_uri(), Workspace.create(out / "work", f"bench-{scale}")
    store = open_store(store_uri)
    if store.exists(layout.CHAMPION) and (ws.root / "models" / MODEL).exists():
        return store_uri, ws.root
    sample, _, _ = ensure_sample(ROOT / "benchmarks" / "out", scale, 0)
    t0 = time.perf_counter()
    run = ingest.ingest(ws, [sample / "reviews.json.gz"], [sample / "meta.json.gz"])
    prep = prepare.prepare(ws, 0)
    row = train.train_one(ws, MODEL, {"epochs": epochs, "seed": 0}, threads=os.cpu_count() or 1)
    meta = publish.build_bundle(ws, row, prepare.load_train_data(ws), {**run, "split": prep["split"]})
    published = publish.publish_bundle(store, ws, meta["version"])
    import pandas as pd

    publish.promote(store, published, row["test_rmse"], pd.read_parquet(ws.splits / "test.parquet"))
    print(
        f"built bundle {meta['version']} in {time.perf_counter() - t0:.1f}s (test RMSE {row['test_rmse']:.4f})"
    )
    return store_uri, ws.root


def best_of(repeat: int, fn: Any) -> float:
    """Fastest of `repeat` timed calls: on a shared machine the minimum is the least disturbed run."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_onnx(
    model: Path, u: np.ndarray, i: np.ndarray, threads: int, batch: int, repeat: int
) -> dict[str, Any]:
    session = load_session(model, threads=threads)
    predict_ratings(session, u[:batch], i[:batch], batch)  # warm-up
    s = best_of(repeat, lambda: predict_ratings(session, u, i, batch))
    return {
        "engine": "onnxruntime",
        "threads": threads,
        "batch": batch,
        "seconds": round(s, 3),
        "pairs_per_second": round(len(u) / s),
        "load": round(os.getloadavg()[0], 2),
    }


def time_torch(
    root: Path, name: str, u: np.ndarray, i: np.ndarray, threads: int, batch: int, repeat: int
) -> dict[str, Any]:
    """PyTorch eager on the same pairs: IdIndex lookups (string -> index) timed apart from the forward passes."""
    import torch

    from musicrec.pipeline.prepare import load_train_data
    from musicrec.pipeline.train import load_model
    from musicrec.pipeline.workspace import Workspace

    torch.set_num_threads(threads)
    ws = Workspace(root)
    data = load_train_data(ws)
    model = load_model(ws, name, data).eval()
    lookup = best_of(repeat, lambda: (data.users.lookup(u), data.items.lookup(i)))
    uu, ii = torch.from_numpy(data.users.lookup(u)), torch.from_numpy(data.items.lookup(i))

    def forward_all() -> None:
        for s in range(0, len(u), batch):
            model(uu[s : s + batch], ii[s : s + batch])

    with torch.inference_mode():
        model(uu[:batch], ii[:batch])  # warm-up
        forward = best_of(repeat, forward_all)
    return {
        "engine": "pytorch eager",
        "threads": threads,
        "batch": batch,
        "seconds": round(lookup + forward, 3),
        "lookup_seconds": round(lookup, 3),
        "forward_seconds": round(forward, 3),
        "pairs_per_second": round(len(u) / (lookup + forward)),
        "load": round(os.getloadavg()[0], 2),
    }


def time_topn(directory: Path, n_users: int, threads: int) -> dict[str, Any]:
    bundle = load_bundle(directory, threads=threads)
    t0 = time.perf_counter()
    index = build_candidate_index(bundle)
    index_s = time.perf_counter() - t0
    users = list(index.history)[:n_users]
    t1 = time.perf_counter()
    out = rank_users(bundle, index, users, 10)
    s = time.perf_counter() - t1
    return {
        "threads": threads,
        "users": len(users),
        "build_index_seconds": round(index_s, 3),
        "seconds": round(s, 3),
        "users_per_second": round(len(users) / s),
        "rows": len(out),
        "load": round(os.getloadavg()[0], 2),
    }


def time_ranking_eval(directory: Path, root: Path, threads: int) -> dict[str, Any]:
    """The ranking evaluation (champion + most-popular + random top-10 for every test user) on this run."""
    from musicrec.pipeline.ranking_eval import evaluate_paths

    splits = {s: str(root / "splits" / f"{s}.parquet") for s in ("train", "validation", "test")}
    t0 = time.perf_counter()
    out = evaluate_paths(str(directory), splits, threads=threads)
    return {**out, "seconds": round(time.perf_counter() - t0, 2), "load": round(os.getloadavg()[0], 2)}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        (
            f"Machine: {m['nproc']} CPUs, {m['memory_gb']} GB, {m['cpu']}, Python {m['python']}; {m['date']}; "
            f"load average at start {m['loadavg']}, at end {res['loadavg_end']}."
        ),
        "",
        (
            f"Bundle {res['version']} ({res['model']}): {res['n_users']:,} users, {res['n_items']:,} items; "
            f"{res['pairs']:,} random known (user, item) pairs."
        ),
        "",
        "| engine | threads | batch | seconds | pairs/s | load |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["pairs_results"]:
        extra = (
            f" (lookup {r['lookup_seconds']} s + forward {r['forward_seconds']} s)"
            if "lookup_seconds" in r
            else ""
        )
        lines.append(
            f"| {r['engine']} | {r['threads']} | {r['batch']:,} | {r['seconds']}{extra} | "
            f"{r['pairs_per_second']:,} | {r['load']} |"
        )
    lines += [
        "",
        "| top-10 threads | users | build_index s | rank s | users/s | load |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['threads']} | {r['users']:,} | {r['build_index_seconds']} | {r['seconds']} | "
        f"{r['users_per_second']:,} | {r['load']} |"
        for r in res["topn_results"]
    ]
    ev = res.get("ranking_eval")
    if ev:
        lines += [
            "",
            f"Ranking evaluation: {ev['test_users']:,} test users, {ev['seconds']} s (load {ev['load']}).",
            "",
            "| method | hr@10 | ndcg@10 | coverage | mean popularity | s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {m['method']} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | {m['catalogue_coverage']:.4f} | "
            f"{m['mean_popularity']:.1f} | {m['seconds']} |"
            for m in ev["methods"]
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="", help="use this store's bundle instead of building one")
    ap.add_argument("--version", default="")
    ap.add_argument("--workspace", default="", help="run workspace for the PyTorch comparison")
    ap.add_argument("--scale", default="medium")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts to measure")
    ap.add_argument("--batches", default="65536,262144", help="comma-separated onnxruntime batch sizes")
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats of the pair scoring (best is kept)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "scoring"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"machine": machine(), "code": code_state()}
    store_uri, workspace = (args.store, Path(args.workspace) if args.workspace else None)
    if not store_uri:
        store_uri, workspace = build_store(out, args.scale, args.epochs)
    threads = [int(x) for x in args.threads.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    store = open_store(store_uri)
    with tempfile.TemporaryDirectory() as tmp:
        version, sha = resolve_version(store, args.version)
        download_bundle(store, version, Path(tmp), sha)
        bundle = load_bundle(Path(tmp))
        rng = np.random.default_rng(0)
        u = rng.choice(np.asarray(bundle.users, dtype=object), args.pairs)
        i = rng.choice(np.asarray(bundle.items, dtype=object), args.pairs)
        res.update(
            version=version,
            model=bundle.meta["model"],
            n_users=len(bundle.users),
            n_items=len(bundle.items),
            pairs=args.pairs,
        )
        rows = [
            time_onnx(Path(tmp) / "model.onnx", u, i, t, b, args.repeat) for t in threads for b in batches
        ]
        if workspace is not None:
            rows += [
                time_torch(workspace, bundle.meta["model"], u, i, t, 65536, args.repeat) for t in threads
            ]
        res["pairs_results"] = rows
        res["topn_results"] = [time_topn(Path(tmp), args.users, t) for t in threads]
        if workspace is not None and (workspace / "splits" / "test.parquet").exists():
            res["ranking_eval"] = time_ranking_eval(Path(tmp), workspace, 1)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    (out / f"scoring_{args.scale}.json").write_text(json.dumps(res, indent=2, default=str))
    print(markdown(res))


if __name__ == "__main__":
    main()
