"""Inner-product nearest items for query vectors (faiss): exact below EXACT_BELOW items, an IVF index above,
with nprobe chosen for high recall; recall@k against exact search is measured in benchmarks/, not assumed.

The IVF index is built over the rows turned into a nearest-neighbour problem (Bachrach et al. 2014): each row
x gets one more entry sqrt(M^2 - |x|^2), M the largest row norm, and each query a 0, so the L2-nearest rows
are the rows of the largest inner product. Clustering inner-product rows directly gathers the long rows in a
few lists and misses much of the exact top-k when row norms vary widely (als, transitions).

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
    norm: float | None = None  # M of the L2 form (None: an inner-product index)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item rows) of the k best items per query, best first; -1 where fewer than k exist."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.norm is None:
            scores, found = self.index.search(q, max(1, min(k, self.index.ntotal)))
        else:  # |q - x|^2 = |q|^2 + M^2 - 2 q.x in the L2 form
            zero = np.zeros((len(q), 1), np.float32)
            dist, found = self.index.search(np.hstack([q, zero]), max(1, min(k, self.index.ntotal)))
            scores = ((q * q).sum(1, keepdims=True) + self.norm**2 - dist) / 2
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
    """Exact inner product for small catalogues, IVF-Flat over the rows' L2 form (sqrt(n) lists, nprobe 1/16
    of them, at least 32) for large ones, bias-only rows apart; the coarse quantiser is trained on a seeded
    sample of rows. Recall@100 against exact
    search and speed at the seed's shape: benchmarks/RESULTS.md."""
    faiss.omp_set_num_threads(max(1, threads))
    x = np.ascontiguousarray(items, dtype=np.float32)
    n, d = x.shape
    bias_only = ~np.any(x[:, :-1] != 0, axis=1)
    if n < exact_below or bias_only.all():  # all bias-only: nothing to cluster
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return ItemIndex(index, "exact")
    if bias_only.any():
        rows = np.flatnonzero(~bias_only)
        flat = np.flatnonzero(bias_only)
        flat = flat[np.argsort(-x[flat, -1], kind="stable")]
        inner = build_item_index(x[rows], seed, exact_below, threads)
        bias = x[flat, -1].copy()
        return ItemIndex(inner.index, f"{inner.kind}+bias", inner.nprobe, rows, flat, bias, inner.norm)
    nlist = max(1, int(np.sqrt(n)))
    norms = np.linalg.norm(x, axis=1)
    m = float(norms.max())
    x = np.hstack([x, np.sqrt(np.maximum(m * m - norms * norms, 0.0))[:, None].astype(np.float32)])
    quantizer = faiss.IndexFlatL2(d + 1)
    index = faiss.IndexIVFFlat(quantizer, d + 1, nlist, faiss.METRIC_L2)
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(n, size=min(n, TRAIN_SAMPLE), replace=False)]
    index.cp.seed = seed
    index.train(sample)
    index.add(x)
    index.nprobe = max(32, nlist // 16)
    return ItemIndex(index, f"ivf{nlist}", index.nprobe, norm=m)


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
