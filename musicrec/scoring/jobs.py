"""Job plumbing the flow calls: fetch a verified bundle, plan chunks, score one chunk to a Parquet file,
commit the parts. Everything takes and returns paths and small dicts so any task runner can carry it."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from musicrec.fit.threads import one_blas_thread
from musicrec.scoring.bundle import Bundle, download_bundle, load_bundle, resolve_version
from musicrec.scoring.candidates import CandidateIndex, build_candidate_index
from musicrec.scoring.output import commit_parts
from musicrec.scoring.rank import rank_users, read_table, score_pairs
from musicrec.scoring.summary import merge_summaries, summarize_pairs, summarize_topn
from musicrec.store import open_store


def fetch_bundle(store_uri: str, version: str, workdir: str | Path) -> dict[str, Any]:
    """Resolve the version (default: champion), download and verify every file, prove it loads."""
    store = open_store(store_uri)
    served = resolve_version(store, version)
    directory = Path(workdir) / "bundle"
    directory.mkdir(parents=True, exist_ok=True)
    meta = download_bundle(store, served.version, directory, served.sha256, served.history)
    _loaded(str(directory), with_index=False)  # proves it loads, and warms this process's cache
    return {
        "version": served.version,
        "history_from": (served.history or {}).get("version"),
        "model": meta.get("model"),
        "kind": meta.get("kind", "rating"),
        "directory": str(directory),
    }


_LOAD_LOCK = threading.Lock()


def _loaded(directory: str, with_index: bool = True) -> tuple[Bundle, CandidateIndex | None]:
    """One load per process and bundle, shared by the chunk tasks on the same worker (sessions are
    thread-safe). The lock makes concurrent chunks wait for the first load instead of each loading the
    bundle again; pair jobs skip the candidate index, which only top-N needs."""
    with _LOAD_LOCK:
        bundle = _bundle(directory)
        return bundle, (_index(directory) if with_index else None)


@functools.lru_cache(maxsize=4)
def _bundle(directory: str) -> Bundle:
    return load_bundle(Path(directory), threads=1)  # one onnxruntime thread: chunks run side by side instead


@functools.lru_cache(maxsize=4)
def _index(directory: str) -> CandidateIndex:
    return build_candidate_index(_bundle(directory))


def list_users(directory: str, users_path: str = "") -> list[str]:
    """The users of a top-N job: the file's user_id column (first occurrence order) or every user the served
    history knows (the bundle's, or the pointer's newer one), sorted."""
    if users_path:
        return list(dict.fromkeys(read_table(users_path, ["user_id"])["user_id"]))
    return sorted(str(u) for u in _loaded(directory, with_index=False)[0].history["user_id"].unique())


def plan_pair_chunks(pairs_path: str, chunk_rows: int, workers: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the pairs input, of equal size: at most chunk_rows each, and a multiple of
    workers of them, so that no worker sits idle while the last chunk runs."""
    n = len(_pairs_input(pairs_path))
    if n == 0:
        return [(0, 0)]
    k = -(-n // max(1, chunk_rows))
    k = min(n, -(-k // max(1, workers)) * max(1, workers))
    bounds = [n * j // k for j in range(k + 1)]
    return list(itertools.pairwise(bounds))


_INPUT_LOCK = threading.Lock()


def _pairs_input(path: str) -> pd.DataFrame:
    """The pairs file, read once per process and file version: the planner and every chunk task slice the same
    frame instead of each reading the whole file again (a lock makes concurrent chunks wait for one read)."""
    try:
        st = Path(path).stat()
    except OSError:
        return read_table(path, ["user_id", "item_id"])  # raises the DataError that names the file
    with _INPUT_LOCK:
        return _read_pairs(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=1)
def _read_pairs(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    return read_table(path, ["user_id", "item_id"])


def score_pairs_chunk(
    directory: str, pairs_path: str, start: int, stop: int, out_path: str, batch_size: int = 65536
) -> dict[str, Any]:
    """Score input rows [start, stop) and write them (input order) to out_path."""
    bundle, _ = _loaded(directory, with_index=False)
    pairs = _pairs_input(pairs_path).iloc[start:stop]
    t0 = time.perf_counter()
    out = score_pairs(bundle, pairs, batch_size)
    summary = summarize_pairs(out, time.perf_counter() - t0)
    out.to_parquet(out_path, index=False)
    return summary


def rank_users_chunk(
    directory: str, users: list[str], top_n: int, out_path: str, batch_size: int = 65536
) -> dict[str, Any]:
    """Top-N lists for these users, written to out_path."""
    bundle, index = _loaded(directory)
    t0 = time.perf_counter()
    with one_blas_thread():  # the chunks run side by side on the task runner's threads
        out = rank_users(bundle, index, users, top_n, batch_size=batch_size)
    summary = summarize_topn(out, index, time.perf_counter() - t0)
    out.to_parquet(out_path, index=False)
    return summary


def commit_job(
    out_uri: str, prefix: str, parts: list[str], chunk_summaries: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    """Upload the parts and the manifest (last); the merged summary goes into the manifest."""
    summary = {**merge_summaries(chunk_summaries), **extra}
    return commit_parts(open_store(out_uri), prefix, [Path(p) for p in parts], summary)


def topn_totals(directory: str, parts: list[str], seconds: float) -> dict[str, Any]:
    """Whole-job coverage and popularity (not additive over chunks), plus throughput."""
    _, index = _loaded(directory)
    out = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    s = summarize_topn(out, index, seconds)
    return {k: s[k] for k in ("catalogue_coverage", "mean_popularity", "sources", "users_per_second")}
