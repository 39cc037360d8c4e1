"""Scoring throughput: pairs/s (onnxruntime vs PyTorch eager) and top-N users/s on a published bundle.

    .venv/bin/python benchmarks/scoring.py --store file:///path/store --workspace /path/work/<run id> [--threads 2]

The workspace (of the run that published the bundle) is only needed for the PyTorch comparison.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from musicrec.scoring.bundle import download_bundle, load_bundle, resolve_version
from musicrec.scoring.candidates import build_index
from musicrec.scoring.rank import rank_users
from musicrec.scoring.session import predict
from musicrec.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--version", default="")
    ap.add_argument("--workspace", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=5_000)
    args = ap.parse_args()
    store = open_store(args.store)
    with tempfile.TemporaryDirectory() as tmp:
        version, sha = resolve_version(store, args.version)
        download_bundle(store, version, Path(tmp), sha)
        bundle = load_bundle(Path(tmp), threads=args.threads)
        index = build_index(bundle)
        rng = np.random.default_rng(0)
        u = rng.choice(np.asarray(bundle.users, dtype=object), args.pairs)
        i = rng.choice(np.asarray(bundle.items, dtype=object), args.pairs)
        t0 = time.perf_counter()
        predict(bundle.session, u, i)
        print(f"onnxruntime: {args.pairs / (time.perf_counter() - t0):,.0f} pairs/s ({args.threads} threads)")
        users = list(index.history)[:args.users]
        t0 = time.perf_counter()
        rank_users(bundle, index, users, 10)
        print(f"top-10: {len(users) / (time.perf_counter() - t0):,.0f} users/s")
        if args.workspace:
            _torch(Path(args.workspace), bundle.meta["model"], u, i, args.threads)


def _torch(root: Path, name: str, u: np.ndarray, i: np.ndarray, threads: int) -> None:
    import torch

    from musicrec.pipeline.prepare import load_train_data
    from musicrec.pipeline.train import load_model
    from musicrec.pipeline.workspace import Workspace

    torch.set_num_threads(threads)
    ws = Workspace(root)
    data = load_train_data(ws)
    model = load_model(ws, name, data)
    t0 = time.perf_counter()
    uu, ii = torch.from_numpy(data.users.lookup(u)), torch.from_numpy(data.items.lookup(i))
    with torch.inference_mode():
        for s in range(0, len(u), 65536):
            model(uu[s:s + 65536], ii[s:s + 65536])
    print(f"pytorch eager (id lookup included): {len(u) / (time.perf_counter() - t0):,.0f} pairs/s")


if __name__ == "__main__":
    main()
