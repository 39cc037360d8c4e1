"""List families not (yet) in musicrec, tried on one prepared split before anyone builds them under the model
contract: does a new family beat EASE and ALS on validation, and does it add to a blend?

    python benchmarks/list_candidates.py --data lastfm [--seed 0]

--data prepares one seeded split through musicrec's own stages (rating_models.prepared: small, medium,
mi-ratings, cm100k, lastfm). Each candidate is fitted on the training part and ranks validation; then it is
fitted again on training + validation and ranks test (as a refit would), each user's known items excluded,
NDCG@10 over every user with a held-out item (musicrec.metrics.full.evaluate_scorer). The candidates, at
settings from their papers' usual grids:
  ease      EASE on the max_items most interacted items (musicrec's ease, exact: no truncated SVD)
  als       implicit's ALS on musicrec's confidences (1 + log(1 + weight)), 64 factors, regularization 10
  rp3beta   RP3beta (Paudel et al. 2017): item x item random walk, the popularity penalty beta
  userknn   user-kNN: cosine over the users' items, shrink 10, the k nearest users
  dae       Mult-DAE (Liang et al. 2018): one tanh layer, softmax likelihood, input dropout 0.5
Then blends of the candidates' scores (each centred per user and scaled by its spread): the weights on a
small grid chosen on validation NDCG@10, applied to the test scores. Nothing is chosen on test; the table is
read by hand and recorded in RESULTS.md. Needs implicit==0.7.3.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's advice; numpy's products below still thread

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

Fit = Callable[[sp.csr_matrix, sp.csr_matrix], np.ndarray]  # (0/1 rows, confidence rows) -> score rows
BLEND_GRID = (0.0, 0.5, 1.0, 2.0)


def popularity_ties(x: sp.csr_matrix) -> np.ndarray:
    """A tiny popularity term that orders the items a candidate leaves equal (as musicrec's kinds do)."""
    p = np.asarray(x.sum(0)).ravel()
    return (1e-6 * p / max(1.0, p.max())).astype(np.float32)


def ease(l2: float, max_items: int) -> Fit:
    def fit(x: sp.csr_matrix, _: sp.csr_matrix) -> np.ndarray:
        p = np.asarray(x.sum(0)).ravel()
        keep = np.argsort(-p, kind="stable")[:max_items]
        xk = x[:, keep]
        g = (xk.T @ xk).toarray().astype(np.float32)
        g[np.diag_indices_from(g)] += l2 * g.diagonal().mean()
        inv = np.linalg.inv(g)
        b = inv / -np.diag(inv)[None, :]
        np.fill_diagonal(b, 0.0)
        out = np.zeros(x.shape, np.float32)
        out[:, keep] = xk @ b
        return out + popularity_ties(x)

    return fit


def als(factors: int, regularization: float) -> Fit:
    def fit(_: sp.csr_matrix, weights: sp.csr_matrix) -> np.ndarray:
        from implicit.cpu.als import AlternatingLeastSquares

        conf = weights.copy()
        conf.data = (1 + np.log1p(conf.data)).astype(np.float32)
        model = AlternatingLeastSquares(
            factors=factors, regularization=regularization, iterations=15, random_state=0
        )
        model.fit(conf, show_progress=False)
        return model.user_factors @ model.item_factors.T

    return fit


def rp3beta(alpha: float, beta: float, k: int) -> Fit:
    def fit(x: sp.csr_matrix, _: sp.csr_matrix) -> np.ndarray:
        p = np.asarray(x.sum(0)).ravel()
        user_item = (sp.diags(1 / np.maximum(1, np.asarray(x.sum(1)).ravel())) @ x).power(alpha)
        item_user = (sp.diags(1 / np.maximum(1, p)) @ x.T).power(alpha)
        w = (item_user @ user_item).toarray().astype(np.float32) / np.maximum(1, p)[None, :] ** beta
        np.fill_diagonal(w, 0.0)
        np.put_along_axis(w, np.argpartition(-w, k, axis=1)[:, k:], 0.0, 1)
        return np.asarray(x @ w) + popularity_ties(x)

    return fit


def userknn(k: int, shrink: float) -> Fit:
    def fit(x: sp.csr_matrix, _: sp.csr_matrix) -> np.ndarray:
        norm = np.sqrt(np.asarray(x.sum(1)).ravel())
        s = (x @ x.T).toarray() / (np.outer(norm, norm) + shrink + 1e-9)
        np.fill_diagonal(s, 0.0)
        np.put_along_axis(s, np.argpartition(-s, k, axis=1)[:, k:], 0.0, 1)
        return (sp.csr_matrix(s.astype(np.float32)) @ x).toarray() + popularity_ties(x)

    return fit


def dae(hidden: int, epochs: int) -> Fit:
    def fit(x: sp.csr_matrix, _: sp.csr_matrix) -> np.ndarray:
        import torch

        torch.manual_seed(0)
        rows = torch.tensor(x.toarray(), dtype=torch.float32)
        enc, dec = torch.nn.Linear(rows.shape[1], hidden), torch.nn.Linear(hidden, rows.shape[1])
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
        for _ in range(epochs):
            for batch in torch.randperm(len(rows)).split(128):
                xb = rows[batch]
                h = torch.nn.functional.dropout(torch.nn.functional.normalize(xb, dim=1), 0.5, True)
                loss = -(torch.log_softmax(dec(torch.tanh(enc(h))), 1) * xb).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            return dec(torch.tanh(enc(torch.nn.functional.normalize(rows, dim=1)))).numpy()

    return fit


CANDIDATES: dict[str, Fit] = {
    "ease": ease(3.0, 3_000),
    "ease 8000 items": ease(10.0, 8_000),
    "als": als(64, 10.0),
    "rp3beta": rp3beta(1.0, 0.3, 200),
    "userknn": userknn(50, 10.0),
    "dae": dae(200, 20),
}


def ndcg(scores: np.ndarray, heldout: sp.csr_matrix, known: sp.csr_matrix) -> float:
    from musicrec.metrics.full import evaluate_scorer

    exclude = known.copy().tolil()
    exclude[:, 0] = 1  # index 0 is the unknown item, never ranked
    row = evaluate_scorer(lambda r: scores[r].copy(), None, heldout, exclude.tocsr(), scores.shape[1])
    return row["ndcg@10"]


def spread(scores: np.ndarray) -> np.ndarray:
    centred = scores - scores.mean(1, keepdims=True)
    return centred / max(1e-12, float(centred.std()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=["small", "mi-ratings", "cm100k", "lastfm"])
    p.add_argument("--seed", type=int, default=0, help="the split's seed")
    p.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    args = p.parse_args()

    from rating_models import prepared

    from musicrec.pipeline.retrieval import ranking_data

    with tempfile.TemporaryDirectory() as tmp:
        d = ranking_data(prepared(args.data, Path(tmp), args.seed)[0])
    shape = (d.users.size, d.items.size)
    u, i = d.train
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=shape)
    x.data[:] = 1.0
    # the training pairs' confidences (d.weights covers every part: validation and test too)
    w = sp.csr_matrix((d.weights_of(u, i), (u, i)), shape=shape) if d.weights is not None else x
    val = (d.validation > 0).astype(np.float32).tocsr()
    x_val = ((x + val) > 0).astype(np.float32).tocsr()
    w_val = (w + val - w.multiply(val > 0)).tocsr()  # validation pairs at weight 1 (or their own if known)
    names = [n for n in CANDIDATES if not args.only or n in args.only.split(",")]
    print(f"{args.data}: {shape[0] - 1:,} users, {shape[1] - 1:,} items, {x.nnz:,} training pairs")
    print("| candidate | val NDCG@10 | test NDCG@10 | seconds (both fits) |")
    print("|---|---|---|---|")
    scores = {}
    for name in names:
        t0 = time.perf_counter()
        sv, st = CANDIDATES[name](x, w), CANDIDATES[name](x_val, w_val)
        seconds = time.perf_counter() - t0
        scores[name] = (spread(sv), spread(st))
        print(f"| {name} | {ndcg(sv, d.validation, x):.4f} | {ndcg(st, d.test, x_val):.4f} | {seconds:.1f} |")
    members = [n for n in names if n != "ease 8000 items"]
    if len(members) < 2:
        return
    best = (-1.0, ())
    for weights in itertools.product(BLEND_GRID, repeat=len(members)):
        if any(weights):
            blend = sum(wt * scores[n][0] for wt, n in zip(weights, members, strict=True) if wt)
            best = max(best, (ndcg(blend, d.validation, x), weights))
    val, weights = best
    test = sum(wt * scores[n][1] for wt, n in zip(weights, members, strict=True) if wt)
    chosen = ", ".join(f"{n} {wt:g}" for n, wt in zip(members, weights, strict=True) if wt)
    print(f"| blend chosen on validation ({chosen}) | {val:.4f} | {ndcg(test, d.test, x_val):.4f} | |")


if __name__ == "__main__":
    main()
