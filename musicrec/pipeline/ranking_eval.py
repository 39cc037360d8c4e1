"""Ranking evaluation of a run: top-k lists for its test users from the champion and two reference rankers
(most-popular and random), measured by musicrec.metrics.topn.

The champion's lists are made exactly as batch scoring makes them (candidates, then the model ranks them), so
the numbers describe the lists users see. Every method excludes the same items: whatever the user rated in the
training or validation split. Test users = users with a test rating whom the model knows; their relevant items
are all their test items (items unknown to the model included: no method can hit those, all pay equally).
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from musicrec.data.ids import contained
from musicrec.errors import StoreError
from musicrec.metrics.topn import list_summary
from musicrec.pipeline.reference_lists import most_popular_lists, random_lists
from musicrec.scoring.bundle import Bundle, load_bundle
from musicrec.scoring.candidates import CandidateIndex, build_candidate_index, positions_by_user
from musicrec.scoring.rank import rank_users
from musicrec.store import MissingKeyError, Store, layout
from musicrec.store.pointer import read_pointer

SPLITS = ("train", "validation", "test")


def run_version(store: Store, run_id: str, version: str = "") -> str:
    """The bundle to evaluate: the given version, else the one this run built, else the champion pointer's."""
    if version:
        return version
    key = layout.run_report(run_id)
    if store.exists(key):
        built = json.loads(store.get_bytes(key)).get("champion", {}).get("version")
        if built:
            return str(built)
    pointer, _ = read_pointer(store)
    if pointer is None:
        raise StoreError(
            f"run {run_id} built no bundle and {store.url_for(layout.CHAMPION)} is absent",
            hint="name a published model with --version",
        )
    return str(pointer["version"])


def fetch_splits(store: Store, run_id: str, dest: Path) -> dict[str, str]:
    """Download runs/<run_id>/splits/{train,validation,test}.parquet; return local paths."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in SPLITS:
        ranking = layout.run_ranking_split(run_id, name)
        if store.exists(ranking):  # the leave-last-out parts the run's implicit models used
            store.get_file(ranking, dest / f"ranking_{name}.parquet")
            paths[f"ranking_{name}"] = str(dest / f"ranking_{name}.parquet")
        key = layout.run_split(run_id, name)
        try:
            store.get_file(key, dest / f"{name}.parquet")
        except MissingKeyError as e:
            raise StoreError(
                f"no split {store.url_for(key)}",
                hint="check the run id: `runs/<run_id>/` is written by the training flow",
            ) from e
        paths[name] = str(dest / f"{name}.parquet")
    return paths


def evaluate_ranking(
    bundle: Bundle,
    index: CandidateIndex,
    splits: dict[str, pd.DataFrame],
    k: int = 10,
    seed: int = 0,
    max_users: int = 0,
) -> dict[str, Any]:
    """HR@k, NDCG@k, coverage and mean popularity of the lists batch scoring writes and of references, on the
    temporal leave-last-out of the run's ratings (per user the latest is held out; train and the one before
    it are excluded). With a retrieval champion: the served retrieve-then-rank lists, the same without
    also_bought, and the retrieval champion's nearest items alone; without one, the rating champion ranking
    the candidates. Most-popular and random always. Every method excludes the same items."""
    from musicrec.metrics.protocol import leave_last_out

    if "ranking_test" in splits:  # the run's own leave-last-out (the retrieval champion never saw its test)
        seen = pd.concat([splits["ranking_train"], splits["ranking_validation"]])
        test = splits["ranking_test"]
    else:  # a run without implicit models: derive it (ties in time fall in the rating splits' row order)
        ratings = pd.concat([splits[s] for s in SPLITS], ignore_index=True).astype(
            {"user_id": str, "item_id": str}
        )
        llo = leave_last_out(ratings)
        seen, test = pd.concat([llo.train, llo.validation]), llo.test
    test = test[["user_id", "item_id"]].astype(str)
    users = sorted(set(test["user_id"]) & set(bundle.users))
    if max_users and len(users) > max_users:
        users = sorted(
            np.random.default_rng(seed).choice(np.asarray(users, dtype=object), max_users, replace=False)
        )
    relevant = test[contained(test["user_id"], pd.Series(users, dtype=object))]
    index = dataclasses.replace(
        index,
        history=positions_by_user(
            seen["user_id"].astype(str), bundle.items.get_indexer(seen["item_id"].astype(str))
        ),
    )
    # popularity from what every method may see (the bundle's counts include the held-out items of a refit)
    counts = np.bincount(index.history.positions, minlength=len(index.item_ids))
    index = dataclasses.replace(
        index, popularity=counts, popular_order=np.lexsort((np.arange(len(counts)), -counts))
    )
    pop = pd.Series(index.popularity, index=index.item_ids)
    methods = []
    for name, make in _makers(bundle, index, users, k, seed).items():
        t0 = time.perf_counter()
        lists = make()
        seconds = time.perf_counter() - t0
        methods.append(
            {
                "method": name,
                **list_summary(lists, relevant, k, pop, len(index.item_ids)),
                "seconds": round(seconds, 3),
            }
        )
    fitted = (bundle.meta.get("fitted_on") or {}).get("splits") or ["train"]
    return {
        "k": k,
        "seed": seed,
        "test_users": len(users),
        "relevant_items": len(relevant.drop_duplicates()),
        "relevant_known_share": round(
            float(contained(relevant["item_id"], bundle.items.to_series()).mean()), 4
        )
        if len(relevant)
        else None,
        "protocol": "temporal leave-last-out, full ranking over unrated items",
        "excluded": "each user's items before the held-out one (leave-last-out train and validation)",
        "note": _refit_note(bundle, fitted, index.retriever is not None),
        "methods": methods,
    }


def _refit_note(bundle: Bundle, fitted: list[str], retrieval: bool) -> str:
    """Say so when the served models were refit on the held-out items this evaluation counts as hits."""
    refit = (
        (bundle.meta.get("retrieval", {}).get("fitted_on") or {}).get("splits", []) if retrieval else fitted
    )
    if "test" not in (refit or []):
        return ""
    return (
        "the served models were refit on every rating of their run, these held-out items included: on their "
        "own run these numbers are not a held-out measurement (the run report's ranking table is; evaluate "
        "a later run to measure this bundle)"
    )


def _makers(bundle: Bundle, index: CandidateIndex, users: list[str], k: int, seed: int) -> dict[str, Any]:
    """The list makers to compare: what scoring serves, its variants, and the references."""
    out: dict[str, Any] = {}
    if index.retriever is not None:
        name = index.retriever.model
        no_also = dataclasses.replace(index, also_indptr=np.zeros_like(index.also_indptr))
        alone = dataclasses.replace(
            no_also,
            vec_pos=no_also.vec_pos[:0],
            unit=no_also.unit[:0],
            vec_row=np.full_like(no_also.vec_row, -1),
            popular_order=no_also.popular_order[:0],
        )
        out[f"served: retrieve-then-rank ({name})"] = lambda: rank_users(bundle, index, users, k)
        out["served without also_bought"] = lambda: rank_users(bundle, no_also, users, k)
        out[f"retrieval champion alone ({name})"] = lambda: rank_users(bundle, alone, users, k)
    else:
        out[f"rating champion ranks candidates ({bundle.meta.get('model')})"] = lambda: rank_users(
            bundle, index, users, k
        )
    out["most_popular"] = lambda: most_popular_lists(
        users, index.popular_order, index.item_ids, index.history, k
    )
    out[f"random (seed {seed})"] = lambda: random_lists(
        users, len(index.item_ids), index.item_ids, index.history, k, seed
    )
    return out


def evaluate_paths(
    directory: str,
    split_paths: dict[str, str],
    k: int = 10,
    seed: int = 0,
    max_users: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """evaluate_ranking on a downloaded bundle directory and local split files (what a task passes around)."""
    bundle = load_bundle(Path(directory), threads=threads)
    splits = {
        s: pd.read_parquet(p, columns=["user_id", "item_id", *(["timestamp"] if s in SPLITS else [])])
        for s, p in split_paths.items()
    }
    result = evaluate_ranking(bundle, build_candidate_index(bundle), splits, k, seed, max_users)
    return {
        "version": bundle.meta.get("version"),
        "model": bundle.meta.get("model"),
        "bundle_run_id": bundle.meta.get("run_id"),
        **result,
    }


def write_ranking(store: Store, run_id: str, result: dict[str, Any]) -> str:
    """runs/<run_id>/ranking.json (one put: readers see the old or the new file); returns its URI."""
    key = layout.run_ranking(run_id)
    body = {
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "bundle_from_this_run": result.get("bundle_run_id") == run_id,
        **result,
    }
    store.put_bytes(key, json.dumps(body, indent=2, default=str).encode(), content_type="application/json")
    return store.url_for(key)


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method, rounded, for a table artifact or a terminal."""
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()} for m in result["methods"]]


def format_table(result: dict[str, Any]) -> str:
    k = result["k"]
    head = f"{'method':<44}{'hr@' + str(k):>9}{'ndcg@' + str(k):>10}{'coverage':>10}{'mean_pop':>10}"
    lines = [head, "-" * len(head)]
    for r in table_rows(result):
        lines.append(
            f"{r['method']:<44}{r[f'hr@{k}']:>9.4f}{r[f'ndcg@{k}']:>10.4f}"
            f"{r['catalogue_coverage']:>10.4f}{r['mean_popularity']:>10.2f}"
        )
    return "\n".join(lines)
