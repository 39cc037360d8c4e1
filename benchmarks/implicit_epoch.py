"""Seconds per epoch of the implicit models at the seed's shape (synthetic ids, Zipf-like popularity).

    python benchmarks/implicit_epoch.py [--models implicit_bpr,...] [--epochs 2] [--threads 2] [--rows 1263464] [--text]

840,372 users x 456,992 items, 1,263,464 training interactions (the seed's training split), validation on a
fixed sample of users (the config's val_users). Prints one line per model: train seconds per epoch, validation
seconds per epoch, and the whole fit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_USERS, N_ITEMS = 840_372, 456_992


def zipf_ids(rng: np.random.Generator, n: int, size: int, exponent: float) -> np.ndarray:
    """size draws of ids 0..n-1 with p(rank r) ~ 1 / (r + 10)^exponent, ids shuffled."""
    p = 1.0 / (np.arange(n) + 10.0) ** exponent
    cdf = np.cumsum(p / p.sum())
    return rng.permutation(n)[np.minimum(np.searchsorted(cdf, rng.random(size)), n - 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="implicit_pointwise,implicit_bpr,implicit_hinge")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=1_263_464)
    ap.add_argument("--set", default="", help="extra overrides, e.g. factors=32,negatives=4")
    ap.add_argument(
        "--text",
        action="store_true",
        help="give every item a 50-d unit text vector (the run's "
        "Word2Vec size): the cost of use_text, on by default in the flow",
    )
    args = ap.parse_args()
    from musicrec.implicit.train import fit_implicit
    from musicrec.metrics.topn import interaction_matrix

    rng = np.random.default_rng(0)
    users, items = zipf_ids(rng, N_USERS, args.rows, 0.6), zipf_ids(rng, N_ITEMS, args.rows, 0.9)
    val_users = rng.choice(N_USERS, 100_000, replace=False)
    val = interaction_matrix(val_users, zipf_ids(rng, N_ITEMS, len(val_users), 0.9), N_USERS, N_ITEMS)
    text = None
    if args.text:
        text = rng.normal(size=(N_ITEMS, 50)).astype(np.float32)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
    extra = dict(kv.split("=") for kv in args.set.split(",") if kv)
    for name in args.models.split(","):
        over = {"epochs": args.epochs, "patience": args.epochs, **{k: _num(v) for k, v in extra.items()}}
        t = time.perf_counter()
        r = fit_implicit(
            name, (users, items), N_USERS, N_ITEMS, val, overrides=over, threads=args.threads, text=text
        )
        h = r.history[1:]
        train = [x["seconds"] for x in h]
        print(
            f"{name}: train {np.mean(train):.2f} s/epoch ({min(train):.2f}-{max(train):.2f}), validation "
            f"{np.mean([x['eval_seconds'] for x in h]):.2f} s/epoch ({int(h[0]['users'])} users), "
            f"fit {time.perf_counter() - t:.1f} s for {len(h)} epochs, {over}",
            flush=True,
        )


def _num(v: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


if __name__ == "__main__":
    main()
