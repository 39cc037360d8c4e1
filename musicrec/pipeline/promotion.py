"""Champion vs challenger on fair rows: the challenger's test rows whose (user, item) the incumbent never
fitted on, both scored on exactly those rows (the challenger by its held-out fit, the incumbent by its
published ONNX bundle). Scoring the incumbent on rows it trained on flattered it (0.578 vs 0.779 RMSE on
rows it never saw, in the issue's example) and blocked the newer, larger-data model nightly runs exist for.

Policy when fewer than MIN_ROWS such rows exist ("not comparable"): promote a challenger that beats its own
bias baseline on validation, because its data is newer (POLICY)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from musicrec.metrics.rating import rmse
from musicrec.scoring.bundle import BundleDamaged, download_bundle
from musicrec.scoring.runtime import load_session, predict_ratings
from musicrec.store import MissingKeyError, Store, layout

MIN_ROWS = 100
POLICY = "not comparable: promote a challenger that beats its own bias baseline (its data is newer)"


def fitted_pairs(store: Store, meta: dict[str, Any]) -> pd.DataFrame | None:
    """(user_id, item_id) of every row the incumbent was fitted on, from its run's splits in the store;
    None when they cannot be found (then no row is provably unseen)."""
    fitted = meta.get("fitted_on") or {"run_id": meta.get("run_id"), "splits": ["train"]}
    run_id, frames = fitted.get("run_id"), []
    if run_id is None:
        return None
    for name in fitted.get("splits") or ["train"]:
        folder = layout.run_ranking_split if fitted.get("folder") == "ranking_splits" else layout.run_split
        key = folder(str(run_id), str(name))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "part.parquet"
                path.write_bytes(store.get_bytes(key))
                frames.append(pd.read_parquet(path, columns=["user_id", "item_id"]))
        except MissingKeyError:
            return None
    return pd.concat(frames, ignore_index=True)


def unseen_rows(challenger: pd.DataFrame, fitted: pd.DataFrame | None) -> pd.DataFrame:
    """The challenger's rows whose (user, item) pair is not among the incumbent's fitted pairs."""
    if fitted is None:
        return challenger.iloc[:0]
    key = pd.MultiIndex.from_frame(challenger[["user_id", "item_id"]].astype(str))
    seen = pd.MultiIndex.from_frame(fitted[["user_id", "item_id"]].astype(str))
    return challenger[~key.isin(seen)]


RetrievalCheck = Callable[[Path, dict[str, Any], "pd.DataFrame | None"], dict[str, Any]]


def compare_with_incumbent(
    store: Store,
    pointer: dict[str, Any] | None,
    challenger: pd.DataFrame | None,
    beats_own_baseline: bool,
    retrieval_check: RetrievalCheck | None = None,
) -> dict[str, Any]:
    """The promotion decision: compared_rows, incumbent_rmse, challenger_rmse, promoted, reason, ...
    retrieval_check(incumbent bundle folder, its metadata, its fitted pairs) compares the retrieval champions
    by NDCG@10 on the same kind of fair rows; a challenger worse there is not promoted either. challenger None
    (a retrieval-only bundle, implicit feedback): the retrieval comparison alone decides."""
    out: dict[str, Any] = {
        "compared_rows": 0,
        "incumbent_rmse": None,
        "challenger_rmse": None,
        "incumbent_version": pointer["version"] if pointer else None,
        "replaced_damaged": None,
        "history_from": None,  # set when the kept champion now serves this run's user history (publish.py)
        "min_rows": MIN_ROWS,
    }
    if pointer is None:
        return {**out, "promoted": True, "reason": "no published champion yet"}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            meta = download_bundle(store, pointer["version"], Path(tmp), pointer["sha256"])
        except BundleDamaged as e:
            return {
                **out,
                "promoted": True,
                "replaced_damaged": e.message,
                "reason": f"the published champion is damaged and cannot be scored: {e.message}",
            }
        if challenger is None:
            return {**out, **_retrieval_only(Path(tmp), meta, fitted_pairs(store, meta), retrieval_check)}
        rows = unseen_rows(challenger, fitted_pairs(store, meta))
        out["compared_rows"] = len(rows)
        if len(rows) < MIN_ROWS:
            return {
                **out,
                "promoted": beats_own_baseline,
                "reason": f"{len(rows)} test rows the incumbent never fitted on (< {MIN_ROWS}): {POLICY}",
            }
        session = load_session(Path(tmp) / "model.onnx", threads=1)
        inc = predict_ratings(session, rows["user_id"].to_numpy(object), rows["item_id"].to_numpy(object))
        truth = rows["rating"].to_numpy(np.float64)
        out.update(
            incumbent_rmse=rmse(truth, inc), challenger_rmse=rmse(truth, rows["pred"].to_numpy(np.float64))
        )
        better = out["challenger_rmse"] <= out["incumbent_rmse"] + 1e-12
        verdict = "not worse than" if better else "worse than"
        out.update(
            promoted=better,
            reason=f"challenger {out['challenger_rmse']:.4f} is {verdict} incumbent "
            f"{out['incumbent_rmse']:.4f} RMSE on {len(rows):,} test rows the "
            "incumbent never fitted on",
        )
        if better and retrieval_check is not None:
            out["retrieval"] = ranking = retrieval_check(Path(tmp), meta, fitted_pairs(store, meta))
            if ranking.get("comparable") and not ranking["challenger_ndcg"] >= ranking["incumbent_ndcg"]:
                out.update(
                    promoted=False,
                    reason=f"{out['reason']}, but its retrieval NDCG@10 "
                    f"{ranking['challenger_ndcg']:.4f} is worse than the incumbent's "
                    f"{ranking['incumbent_ndcg']:.4f} on {ranking['users']:,} "
                    "test users whose held-out item it never fitted on",
                )
    return out


RETRIEVAL_POLICY = "not comparable: promote a retrieval champion that beats most-popular (its data is newer)"


def _retrieval_only(
    incumbent_dir: Path,
    meta: dict[str, Any],
    fitted: pd.DataFrame | None,
    retrieval_check: RetrievalCheck | None,
) -> dict[str, Any]:
    """The decision for a retrieval-only challenger: its NDCG@10 against the incumbent's retrieval champion on
    the test users whose held-out item the incumbent never fitted on (the policy when not comparable)."""
    ranking = retrieval_check(incumbent_dir, meta, fitted) if retrieval_check is not None else {}
    if not ranking.get("comparable"):
        why = ranking.get("reason", "no retrieval comparison")
        return {"retrieval": ranking, "promoted": True, "reason": f"{why}: {RETRIEVAL_POLICY}"}
    better = ranking["challenger_ndcg"] >= ranking["incumbent_ndcg"]
    verdict = "not worse than" if better else "worse than"
    return {
        "retrieval": ranking,
        "promoted": better,
        "reason": f"challenger NDCG@10 {ranking['challenger_ndcg']:.4f} is {verdict} incumbent "
        f"{ranking['incumbent_ndcg']:.4f} on {ranking['users']:,} test users whose held-out item "
        "the incumbent never fitted on",
    }
