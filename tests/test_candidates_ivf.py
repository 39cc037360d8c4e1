"""Word2Vec neighbours on large catalogues come from an inverted-file index: close to exact, much cheaper."""

import numpy as np

from musicrec.scoring.candidates import EXACT_LIMIT, CandidateIndex, build_buckets, nearest_items


def _index(n: int, with_buckets: bool) -> CandidateIndex:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 16))
    vec = centres[rng.integers(0, 40, n)] + 0.4 * rng.normal(size=(n, 16))
    unit = (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype(np.float32)
    pos = np.arange(n, dtype=np.int64) + 7  # positions need not equal rows
    row = np.full(n + 7, -1, dtype=np.int64)
    row[pos] = np.arange(n)
    empty = np.empty(0, np.int64)
    return CandidateIndex(
        np.asarray([f"I{k}" for k in range(n + 7)], dtype=object),
        np.zeros(n + 7, np.int64),
        np.arange(n + 7),
        np.zeros(n + 8, np.int64),
        empty,
        pos,
        unit,
        row,
        {},
        build_buckets(unit) if with_buckets else None,
    )


def test_bucketed_neighbours_recall_the_exact_ones():
    n = EXACT_LIMIT + 5_000
    exact, approx = _index(n, False), _index(n, True)
    queries = np.arange(7, n + 7, 97)
    truth = nearest_items(exact, queries, 10)
    found = nearest_items(approx, queries, 10)
    assert set(found) == set(truth)
    recall = np.mean([len(set(found[q]) & set(truth[q])) / 10 for q in truth])
    assert recall > 0.8
    assert all(q not in found[q] for q in found)  # an item is never its own neighbour


def test_buckets_partition_all_rows():
    idx = _index(5_000, True)
    b = idx.buckets
    assert sorted(b.rows.tolist()) == list(range(5_000))
    assert b.indptr[-1] == 5_000
    assert np.all(b.probes[:, 0] == np.arange(len(b.probes)))  # each bucket searches itself first
