"""Inner-product nearest items for query vectors (faiss): exact below EXACT_BELOW items, an IVF index above,
with nprobe chosen for high recall; recall@k against exact search is measured in benchmarks/, not assumed."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

EXACT_BELOW = 50_000  # items: below this an exact scan per query is cheap enough
TRAIN_SAMPLE = 60_000


@dataclass
class ItemIndex:
    """A faiss index over the item table's rows (row k = item k) and how it was built."""

    index: faiss.Index
    kind: str
    nprobe: int = 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item rows) of the k best items per query, best first; -1 where fewer than k exist."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        return self.index.search(q, min(k, self.index.ntotal))


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
    nlist = int(np.sqrt(n))
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
