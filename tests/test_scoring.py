"""Unit tests of musicrec.scoring without a trained model: bundle verification, candidates, atomic output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from musicrec import preflight as pre
from musicrec.errors import DataError, StoreError
from musicrec.hashing import sha256_bytes
from musicrec.scoring.bundle import download_bundle, resolve_version
from musicrec.scoring.candidates import CandidateIndex, batch_candidates, diverse_popular, nearest_items
from musicrec.scoring.output import commit_parts, read_manifest, read_output
from musicrec.scoring.rank import read_table
from musicrec.scoring.summary import summarize_pairs
from musicrec.store import open_store


def _publish_fake(store, version: str, files: dict[str, bytes]) -> str:
    meta = json.dumps({"version": version, "files": {n: sha256_bytes(b) for n, b in files.items()}}).encode()
    for n, b in files.items():
        store.put_bytes(f"models/{version}/{n}", b)
    store.put_bytes(f"models/{version}/metadata.json", meta)
    store.put_bytes(
        "models/champion.json", json.dumps({"version": version, "sha256": sha256_bytes(meta)}).encode()
    )
    return sha256_bytes(meta)


def test_download_verifies_every_file(tmp_path):
    store = open_store(str(tmp_path / "store"))
    _publish_fake(store, "v1", {"model.onnx": b"onnx", "user_history.parquet": b"hist"})
    served = resolve_version(store)
    version, sha = served.version, served.sha256
    assert version == "v1"
    meta = download_bundle(store, version, tmp_path / "ok", sha)
    assert sorted(meta["files"]) == ["model.onnx", "user_history.parquet"]
    assert (tmp_path / "ok" / "user_history.parquet").read_bytes() == b"hist"


@pytest.mark.parametrize("damage", ["tamper", "delete"])
def test_a_damaged_bundle_is_refused_and_nothing_is_written(tmp_path, damage):
    store = open_store(str(tmp_path / "store"))
    _publish_fake(store, "v1", {"model.onnx": b"onnx", "item_stats.parquet": b"stats"})
    if damage == "tamper":
        store.put_bytes("models/v1/item_stats.parquet", b"STATS")
    else:
        store.delete("models/v1/item_stats.parquet")
    served = resolve_version(store)
    version, sha = served.version, served.sha256
    with pytest.raises(StoreError, match="sha256|missing"):
        download_bundle(store, version, tmp_path / "out", sha)
    assert list((tmp_path / "out").iterdir()) == []


def test_metadata_not_matching_the_pointer_is_refused(tmp_path):
    store = open_store(str(tmp_path / "store"))
    _publish_fake(store, "v1", {"model.onnx": b"onnx"})
    store.put_bytes("models/v1/metadata.json", b'{"files": {}}')
    with pytest.raises(StoreError, match="champion pointer"):
        download_bundle(store, "v1", tmp_path / "out", resolve_version(store).sha256)
    with pytest.raises(StoreError, match="no champion"):
        resolve_version(open_store(str(tmp_path / "empty")))


def _index() -> CandidateIndex:
    """Six items: 0-2 close in text, 3-4 close, 5 without text; popularity 5 > 4 > ...; also_bought 0 -> 4."""
    unit = np.array([[1, 0], [0.99, 0.14], [0.98, 0.2], [0, 1], [0.1, 0.99]], dtype=np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    vec_row = np.array([0, 1, 2, 3, 4, -1])
    return CandidateIndex(
        np.array([f"I{k}" for k in range(6)], dtype=object),
        np.array([9, 8, 7, 6, 5, 4]),
        np.arange(6),
        np.array([0, 1, 1, 1, 1, 1, 1]),
        np.array([4]),
        np.arange(5),
        unit,
        vec_row,
        {"U": np.array([0])},
    )


def test_nearest_items_excludes_the_item_itself():
    near = nearest_items(_index(), np.array([0, 3, 5]), k=2, block=1)
    assert sorted(near[0].tolist()) == [1, 2]
    assert 4 in near[3].tolist() and 3 not in near[3].tolist()
    assert 5 not in near  # no text vector, no neighbours


def test_candidates_exclude_rated_items_and_keep_source_priority():
    index = _index()
    near = nearest_items(index, np.array([0]), k=2)
    owner, pos, src = batch_candidates(index, [np.array([0])], near, n=3, n_popular=3)
    assert owner.tolist() == [0] * len(pos)
    assert 0 not in pos and len(set(pos.tolist())) == len(pos)
    found = dict(zip(pos.tolist(), src.tolist(), strict=False))
    assert found[4] == 0 and found[1] == 1 and found[2] == 1  # also_bought, then word2vec, before popular
    assert found[3] == 2


def _one_user_reference(index, rated, neighbours, n, n_popular, max_also):
    """The per-user algorithm written plainly: sources in priority order, first finder wins, rated dropped."""
    found = {}
    also = [
        q
        for p in rated
        for q in index.also_indices[index.also_indptr[p] : index.also_indptr[p + 1]][:max_also]
    ]
    near = [q for p in rated for q in neighbours.get(int(p), [])]
    popular = index.popular_order[: max(n, n_popular) + len(rated)]
    for code, items in enumerate([also, near, popular]):
        for q in items:
            if int(q) not in rated and int(q) not in found:
                found[int(q)] = code
    return sorted(found.items())


def test_batch_candidates_equal_the_per_user_algorithm_on_random_data():
    rng = np.random.default_rng(4)
    n_items = 300
    unit = rng.normal(size=(250, 8)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    vec_pos = np.sort(rng.choice(n_items, 250, replace=False))
    vec_row = np.full(n_items, -1)
    vec_row[vec_pos] = np.arange(250)
    degree = rng.integers(0, 8, n_items)
    also_indptr = np.concatenate([[0], np.cumsum(degree)])
    index = CandidateIndex(
        np.array([f"I{k}" for k in range(n_items)], dtype=object),
        rng.integers(0, 50, n_items),
        rng.permutation(n_items),
        also_indptr,
        rng.integers(0, n_items, degree.sum()),
        vec_pos,
        unit,
        vec_row,
        {},
    )
    rated = [np.sort(rng.choice(n_items, k, replace=False)) for k in [1, 3, 0, 12, 2, 40, 1]]
    neighbours = nearest_items(index, np.unique(np.concatenate(rated)), k=5)
    owner, pos, src = batch_candidates(index, rated, neighbours, n=10, n_popular=20, max_also=3)
    for u, r in enumerate(rated):
        mine = owner == u
        got = list(zip(pos[mine].tolist(), src[mine].tolist(), strict=False))
        assert got == _one_user_reference(index, set(r.tolist()), neighbours, 10, 20, 3), u
        assert len(got) >= 10


def test_diverse_popular_skips_near_duplicates_but_still_fills_n():
    index = _index()
    assert diverse_popular(index, 2).tolist() == [0, 3]
    assert len(set(diverse_popular(index, 6).tolist())) == 6


def test_commit_is_all_or_nothing_and_a_rerun_replaces_the_output(tmp_path):
    store = open_store(str(tmp_path / "out"))
    with pytest.raises(StoreError, match="no complete"):
        read_output(store, "scores/x")
    parts = []
    for k in range(3):
        parts.append(tmp_path / f"{k}.parquet")
        pd.DataFrame({"a": [k, k]}).to_parquet(parts[-1])
    first = commit_parts(store, "scores/x", parts, {"rows": 6})
    assert read_output(store, "scores/x")["a"].tolist() == [0, 0, 1, 1, 2, 2]
    second = commit_parts(store, "scores/x", parts[:1], {"rows": 2})
    assert read_output(store, "scores/x")["a"].tolist() == [0, 0]
    assert read_manifest(store, "scores/x")["rows"] == 2
    assert not any(name in store.list("scores/x") for name in first["parts"] if name not in second["parts"])


def test_read_table_reads_ids_as_strings_and_names_missing_columns(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("user_id,item_id,extra\n007,0042,x\n")
    df = read_table(path, ["user_id", "item_id"])
    assert df.iloc[0].tolist() == ["007", "0042", "x"]
    with pytest.raises(DataError, match="missing column"):
        read_table(path, ["user_id", "nope"])


@pytest.mark.parametrize(
    "text",
    [
        "user_id\titem_id\n007\t0042\nu2\ti9\n",
        "user_id item_id\n007   0042\nu2 i9\n",
        "user_id;item_id\n007;0042\nu2;i9\n",
        "user_id|item_id\n007|0042\nu2|i9\n",
    ],
    ids=["tab", "spaces", "semicolon", "pipe"],
)
def test_read_table_takes_the_delimiters_the_training_inputs_take(tmp_path, text):
    """A pairs file exported as TSV (or with spaces, semicolons, pipes) scores as its CSV would."""
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    pre.check_job_file("--pairs", str(path), ["user_id", "item_id"])
    df = read_table(path, ["user_id", "item_id"])
    assert df[["user_id", "item_id"]].values.tolist() == [["007", "0042"], ["u2", "i9"]]


def test_a_one_column_users_file_needs_no_delimiter(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("user_id\n007\nu2\n")
    pre.check_job_file("--users", str(path), ["user_id"])
    assert read_table(path, ["user_id"])["user_id"].tolist() == ["007", "u2"]


def test_a_tab_file_without_the_columns_names_the_ones_it_has(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("user\titem\nu1\ti1\n")
    with pytest.raises(
        DataError, match=r"no column\(s\) \['user_id', 'item_id'\] \(found \['user', 'item'\]\)"
    ):
        pre.check_job_file("--pairs", str(path), ["user_id", "item_id"])


def test_pairs_summary_counts():
    out = pd.DataFrame(
        {
            "predicted_rating": [1.0, 4.9, 3.0],
            "unknown_user": [True, False, False],
            "unknown_item": [False, False, True],
        }
    )
    s = summarize_pairs(out, 0.5)
    assert (s["rows"], s["unknown_users"], s["unknown_items"], s["pairs_per_second"]) == (3, 1, 1, 6)
    assert s["rating_histogram"] == {"1": 1, "2": 0, "3": 1, "4": 0, "5": 1}


def test_pair_chunks_are_equal_bounded_and_a_multiple_of_the_workers(tmp_path):
    from musicrec.scoring.jobs import plan_pair_chunks

    path = tmp_path / "p.parquet"
    for n, chunk_rows, workers in [
        (1_000, 200, 2),
        (1_000, 500, 2),
        (1_001, 1_000, 3),
        (5, 1, 8),
        (7, 10, 1),
        (10, 2, 3),
    ]:
        pd.DataFrame({"user_id": [f"u{k}" for k in range(n)], "item_id": "i"}).to_parquet(path)
        ranges = plan_pair_chunks(str(path), chunk_rows, workers)
        assert [a for a, _ in ranges] == [0] + [b for _, b in ranges[:-1]] and ranges[-1][1] == n
        sizes = [b - a for a, b in ranges]
        assert max(sizes) <= chunk_rows and max(sizes) - min(sizes) <= 1
        assert len(ranges) % workers == 0 or len(ranges) == n, (n, chunk_rows, workers, ranges)
    pd.DataFrame({"user_id": [], "item_id": []}, dtype=str).to_parquet(path)
    assert plan_pair_chunks(str(path), 10, 2) == [(0, 0)]


def test_the_pairs_input_is_read_once_per_file_version(tmp_path, monkeypatch):
    from musicrec.scoring import jobs

    reads = []
    real = jobs.read_table
    monkeypatch.setattr(jobs, "read_table", lambda p, c: reads.append(p) or real(p, c))
    jobs._read_pairs.cache_clear()
    path = tmp_path / "p.csv"
    path.write_text("user_id,item_id\nu1,i1\nu2,i2\n")
    assert jobs._pairs_input(str(path))["user_id"].tolist() == ["u1", "u2"]
    jobs._pairs_input(str(path))
    assert len(reads) == 1
    path.write_text("user_id,item_id\nu3,i3\n")
    assert jobs._pairs_input(str(path))["user_id"].tolist() == ["u3"]
    assert len(reads) == 2
    with pytest.raises(DataError, match="nope.csv"):
        jobs._pairs_input(str(tmp_path / "nope.csv"))


def test_positions_by_user_are_sorted_unique_and_skip_unknown_items():
    from musicrec.scoring.candidates import positions_by_user

    got = positions_by_user(pd.Series(["b", "a", "b", "b", "c", "a"]), np.array([5, 2, 1, 5, -1, 0]))
    assert list(got) == ["a", "b"]  # users in id order; "c" rated only an unknown item
    assert got["a"].tolist() == [0, 2] and got["b"].tolist() == [1, 5]
    assert positions_by_user(pd.Series([], dtype=str), np.array([], dtype=np.int64)) == {}
