"""Inner-product nearest items for query vectors (faiss): exact below EXACT_BELOW items, an IVF index above,
with nprobe chosen for high recall; recall@k against exact search is measured in benchmarks/, not assumed.

The item table's last column is the item bias (the query's last entry multiplies it). Rows that are zero but
for that column (items a factorised model gives no direction, e.g. items that never follow another in the
transitions model, and the items a model does not know) all fall in one IVF list, which every query then
scans; above the exact size they are kept out of the IVF index and searched by their bias alone: for such a
row the score is q[-1] x bias, so the best of them are the first rows in bias order (or the last ones when
q[-1] is negative)."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

EXACT_BELOW = 50_000  # items: below this an exact scan per query is cheap enough
TRAIN_SAMPLE = 60_000


@dataclass
class ItemIndex:
    """A faiss index over the item table's rows (row k = item k, or rows[k] when the index holds a subset)
    and how it was built; the bias-only rows, when kept out of it, in bias order with their biases."""

    index: faiss.Index
    kind: str
    nprobe: int = 0
    rows: np.ndarray | None = None  # the table row of each indexed row (None: the same)
    bias_rows: np.ndarray | None = None  # the bias-only rows, highest bias first
    bias: np.ndarray | None = None  # their biases, in that order

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item rows) of the k best items per query, best first; -1 where fewer than k exist."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        scores, found = self.index.search(q, max(1, min(k, self.index.ntotal)))
        if self.rows is not None:
            found = np.where(found >= 0, self.rows[np.maximum(found, 0)], -1)
        if self.bias_rows is None:
            return scores, found
        m = min(k, len(self.bias_rows))
        up = q[:, -1:] >= 0  # the highest biases first, or the lowest for a negative last entry
        at = np.where(up, np.arange(m)[None, :], len(self.bias_rows) - 1 - np.arange(m)[None, :])
        more = q[:, -1:] * self.bias[at]
        scores = np.hstack([np.where(found >= 0, scores, -np.inf), more])
        found = np.hstack([found, self.bias_rows[at]])
        best = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]
        return np.take_along_axis(scores, best, 1), np.take_along_axis(found, best, 1)


def build_item_index(
    items: np.ndarray, seed: int = 0, exact_below: int = EXACT_BELOW, threads: int = 1
) -> ItemIndex:
    """Exact inner product for small catalogues, IVF-Flat (sqrt(n) lists, nprobe 1/16 of them, at least 32)
    for large ones; the coarse quantiser is trained on a seeded sample of rows. Recall@100 against exact
    search and speed at the seed's shape: benchmarks/RESULTS.md."""
    faiss.omp_set_num_threads(max(1, threads))
    x = np.ascontiguousarray(items, dtype=np.float32)
    n, d = x.shape
    if n < exact_below:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return ItemIndex(index, "exact")
    bias_only = ~np.any(x[:, :-1] != 0, axis=1)
    if bias_only.any() and not bias_only.all():
        rows = np.flatnonzero(~bias_only)
        flat = np.flatnonzero(bias_only)
        flat = flat[np.argsort(-x[flat, -1], kind="stable")]
        inner = build_item_index(x[rows], seed, exact_below, threads)
        return ItemIndex(inner.index, f"{inner.kind}+bias", inner.nprobe, rows, flat, x[flat, -1].copy())
    nlist = max(1, int(np.sqrt(n)))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(n, size=min(n, TRAIN_SAMPLE), replace=False)]
    index.cp.seed = seed
    index.train(sample)
    index.add(x)
    index.nprobe = max(32, nlist // 16)
    return ItemIndex(index, f"ivf{nlist}", index.nprobe)


def recall_at(approx: ItemIndex, items: np.ndarray, queries: np.ndarray, k: int = 100) -> float:
    """Share of the exact top-k items that the index returns in its top-k (averaged over queries)."""
    exact = build_item_index(items, exact_below=len(items) + 1)
    _, truth = exact.search(queries, k)
    _, got = approx.search(queries, k)
    hits = [
        len(np.intersect1d(t[t >= 0], g[g >= 0])) / max(1, (t >= 0).sum())
        for t, g in zip(truth, got, strict=True)
    ]
    return float(np.mean(hits))
