"""Stages 4-6: export the champion (refit on all rows) to ONNX and check it, upload the bundle, compare with
the published champion on rows it never fitted on, and move the champion pointer with a conditional write."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd

import musicrec
from musicrec.errors import ConflictError, StoreError
from musicrec.hashing import sha256_bytes, sha256_file
from musicrec.metrics.rating import rmse
from musicrec.pipeline.promotion import compare_with_incumbent
from musicrec.pipeline.refit import REFIT_DIR, all_rows, full_data
from musicrec.pipeline.train import load_model
from musicrec.pipeline.workspace import Workspace
from musicrec.rating.data import TrainData
from musicrec.rating.export import export_onnx, verify_onnx
from musicrec.rating.train import predict as predict_part
from musicrec.scoring.bundle import TABLES, write_tables
from musicrec.store import MissingKeyError, Store, layout
from musicrec.store.pointer import PointerDamaged, read_pointer

BUNDLE_FILES = ("model.onnx", *TABLES)  # the tables feed batch scoring (see musicrec.scoring.bundle)
CHALLENGER_TEST = "challenger_test.parquet"


def build_bundle(
    ws: Workspace,
    row: dict[str, Any],
    data: TrainData,
    run: dict[str, Any],
    refit: dict[str, Any] | None = None,
    retrieval_row: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole bundle: build_rating_bundle, then the retrieval champion's export and add_retrieval when
    there is one (its refit described by refit["retrieval"])."""
    from musicrec.pipeline.champion_retrieval import export_retrieval

    meta = build_rating_bundle(ws, row, data, run, refit)
    if not retrieval_row:
        return meta
    return add_retrieval(ws, meta, export_retrieval(ws, retrieval_row, (refit or {}).get("retrieval")))


def build_rating_bundle(
    ws: Workspace,
    row: dict[str, Any],
    data: TrainData,
    run: dict[str, Any],
    refit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export the champion (its refit on all rows when `refit` says so), verify ONNX against torch (unknown
    ids included), write the candidate tables over every rating of the run and metadata.json. The held-out
    model's test predictions are kept for the promotion decision (challenger_test.parquet)."""
    name = row["name"]
    write_challenger_test(ws, load_model(ws, name, data), data)
    # the model's rows: every rating for a refit, else the training split (its users are the model's users)
    fitted_rows = all_rows(ws) if refit else pd.read_parquet(ws.splits / "train.parquet")
    if refit:
        data = full_data(ws, fitted_rows)
        model = load_model(ws, name, data, directory=REFIT_DIR)
    else:
        model = load_model(ws, name, data)
    ws.bundle.mkdir(parents=True, exist_ok=True)
    onnx_path = ws.bundle / "model.onnx"
    export_onnx(
        model,
        data.users.ids,
        data.items.ids,
        onnx_path,
        metadata={"musicrec_model": name, "musicrec_version": musicrec.__version__, "run_id": ws.run_id},
    )
    users, items = _parity_sample(ws, data)
    parity = verify_onnx(onnx_path, model, users, items, user_ids=data.users.ids, item_ids=data.items.ids)
    write_tables(
        ws.bundle,
        fitted_rows[["user_id", "item_id", "rating"]],
        pd.read_parquet(ws.items, columns=["item_id", "title", "also_bought"]),
        data.items.ids,
        ws.item_vectors,
    )
    fitted_on = refit or {
        "rows": len(data.parts["train"]),
        "run_id": ws.run_id,
        "splits": ["train"],
        "epochs": None,
        "fingerprint": None,
    }
    meta = {
        "model": name,
        "version": f"{ws.run_id}-{name}",
        "run_id": ws.run_id,
        "hyperparameters": row.get("hyperparameters", {}),
        "metrics": {k: v for k, v in row.items() if k.endswith(("_rmse", "_mae", "_rows"))},
        "metrics_from": "the held-out fit (train split only); the exported model is described by fitted_on",
        "fitted_on": fitted_on,
        "rating_range": list(data.rating_range),
        "data": {"fingerprint": run["fingerprint"], "ratings": run["ratings"], "split": run["split"]},
        "code_version": musicrec.__version__,
        "created_at": datetime.now(UTC).isoformat(),
        "onnx_check": parity,
    }
    return write_metadata(ws, meta, list(BUNDLE_FILES))


def add_retrieval(ws: Workspace, meta: dict[str, Any], retrieval: dict[str, Any]) -> dict[str, Any]:
    """Add the retrieval champion that champion_retrieval.export_retrieval wrote beside the rating champion
    (its files and checks: `retrieval`) to the bundle, and rewrite metadata.json over both."""
    meta = {**meta, "retrieval": retrieval}  # its fitted_on: the refit export_retrieval read
    return write_metadata(ws, meta, [*meta["files"], *retrieval["files"]])


def write_metadata(ws: Workspace, meta: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """metadata.json with the sha256 of each of the bundle's files."""
    meta = {**meta, "files": {f: sha256_file(ws.bundle / f) for f in files}}
    (ws.bundle / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    return meta


def write_challenger_test(ws: Workspace, model: Any, data: TrainData) -> None:
    """The held-out champion's predictions on this run's test rows: the challenger side of a promotion."""
    test = pd.read_parquet(ws.splits / "test.parquet", columns=["user_id", "item_id", "rating"])
    test["pred"] = predict_part(model, data.parts["test"])
    test.to_parquet(ws.root / CHALLENGER_TEST, index=False)


def _parity_sample(ws: Workspace, data: TrainData, n: int = 2000) -> tuple[list[str], list[str]]:
    test = pd.read_parquet(ws.splits / "test.parquet", columns=["user_id", "item_id"]).head(n)
    users = [*test["user_id"], "UNKNOWN-USER", test["user_id"].iloc[0], "UNKNOWN-USER"]
    items = [*test["item_id"], test["item_id"].iloc[0], "UNKNOWN-ITEM", "UNKNOWN-ITEM"]
    return users, items


def publish_bundle(store: Store, ws: Workspace, version: str) -> dict[str, str]:
    """Upload every bundle file, metadata.json last, then read each back and check its sha256.

    If the upload or the check fails, the files this call put under models/<version>/ are removed again
    (metadata.json first), so a failed publish leaves nothing behind; a version that was already published
    whole before this call is never touched."""
    meta_path = ws.bundle / "metadata.json"  # build_bundle already hashed every other file into it
    sums = {**json.loads(meta_path.read_bytes())["files"], "metadata.json": sha256_file(meta_path)}
    files = [*(f for f in sums if f != "metadata.json"), "metadata.json"]
    if _already_published(store, layout.bundle_metadata(version), sums["metadata.json"]):
        keys = []  # a retry after a whole upload: nothing of ours to remove if the check below fails
    else:
        keys = [layout.bundle_file(version, f) for f in files]
    try:
        for f in files:
            store.put_file(layout.bundle_file(version, f), ws.bundle / f)
        for f, expected in sums.items():
            if sha256_bytes(store.get_bytes(layout.bundle_file(version, f))) != expected:
                raise StoreError(
                    f"uploaded {store.url_for(layout.bundle_file(version, f))} does not match the local file",
                    hint="the store corrupted or replaced the upload; run again",
                )
    except Exception as e:
        left = _remove(store, keys)
        if left and isinstance(e, StoreError):
            raise StoreError(
                f"{e.message}\n  could not remove the partial upload: {left}", hint=e.hint
            ) from e
        if left:
            e.add_note(f"could not remove the partial upload: {left}")
        raise
    return {
        "version": version,
        "uri": store.url_for(layout.bundle_prefix(version)),
        "metadata_sha256": sums["metadata.json"],
        "history_sha256": sums[TABLES[0]],  # its user_history: what each user rated in this run's data
    }


def _remove(store: Store, keys: list[str]) -> str:
    """Best-effort removal of a failed upload, metadata.json first so the version never looks complete.
    Returns '' when everything is gone, else which keys may remain and why."""
    for n, key in enumerate(sorted(keys, key=lambda k: not k.endswith("/metadata.json"))):
        try:
            store.delete(key)
        except StoreError as e:
            return (
                f"{len(keys) - n} file(s) may remain under "
                f"{store.url_for(key.rsplit('/', 1)[0])} ({e.message})"
            )
    return ""


def _already_published(store: Store, metadata_key: str, metadata_sha256: str) -> bool:
    """Published versions are immutable (the champion pointer may name one): uploading the same bundle again,
    as a retried task does, is fine (True); a different bundle under an existing version is refused."""
    try:
        existing = store.get_bytes(metadata_key)
    except MissingKeyError:
        return False
    if sha256_bytes(existing) != metadata_sha256:
        raise StoreError(
            f"{store.url_for(metadata_key)} already holds a different bundle",
            hint="published versions are never overwritten; publish under a new version",
        )
    return True


PROMOTION_OFF = "promotion off (--no-promote): bundle published, pointer untouched"


def not_promoted(reason: str) -> dict[str, Any]:
    """The promotion decision of a run that did not try to move the pointer (nothing to publish, or
    --no-promote), in the shape promote() returns."""
    return {
        "compared_rows": 0,
        "incumbent_rmse": None,
        "challenger_rmse": None,
        "promoted": False,
        "reason": reason,
        "incumbent_version": None,
        "replaced_damaged": None,
        "history_from": None,
    }


def promote(
    store: Store,
    published: dict[str, str],
    challenger: pd.DataFrame | None,
    beats_own_baseline: bool,
    attempts: int = 5,
    retrieval_check: Any = None,
    before_pointer: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """Move the pointer if the new champion is at least as good as the published one on fair rows.

    `challenger`: this run's test rows with the held-out champion's predictions (pred), None for a
    retrieval-only bundle (implicit feedback: retrieval_check alone decides). The rows compared are
    those whose (user, item) the incumbent never fitted on (musicrec.pipeline.promotion). The pointer is
    written with a conditional put: if another run moved it meanwhile, re-read, re-compare and try again.
    before_pointer(decision) runs right before each pointer write (the run's report goes there: the pointer
    is a run's last write)."""
    decision: dict[str, Any] | None = None
    for _ in range(attempts):
        try:
            pointer, token = read_pointer(store)
        except PointerDamaged as e:  # nobody can score through it: replaced like a damaged bundle
            pointer, token, damaged = None, e.token, e.message
        else:
            damaged = None
        if decision is not None and _names(pointer, published):
            return decision  # our write went through but its answer was lost: the retry saw our own pointer
        decision = compare_with_incumbent(store, pointer, challenger, beats_own_baseline, retrieval_check)
        if damaged:
            decision.update(replaced_damaged=damaged, reason=f"the champion pointer is damaged: {damaged}")
        if decision["promoted"]:
            body = _promoted(published, challenger, decision)
        else:  # the champion stays; it serves with this run's newer user history
            if pointer is None or damaged or not published.get("history_sha256"):
                return decision
            body = _with_history(pointer, published)
            if body == pointer:
                return decision
            decision["history_from"] = body["history"]["version"]
        if before_pointer is not None:
            before_pointer(decision)
        try:
            store.put_if(layout.CHAMPION, json.dumps(body, indent=2).encode(), token)
            return decision
        except ConflictError:
            continue
    raise StoreError(
        f"champion pointer {store.url_for(layout.CHAMPION)} kept changing during {attempts} attempts",
        hint="another run is publishing at the same time; run again later",
    )


def _promoted(
    published: dict[str, str], challenger: pd.DataFrame | None, decision: dict[str, Any]
) -> dict[str, Any]:
    """The pointer that names the published bundle as champion."""
    test_rmse = (
        None
        if challenger is None
        else rmse(challenger["rating"].to_numpy(float), challenger["pred"].to_numpy(float))
    )
    body = {
        "version": published["version"],
        "sha256": published["metadata_sha256"],
        "test_rmse": test_rmse,
        "compared_rows": decision["compared_rows"],
        "challenger_rmse": decision["challenger_rmse"],
        "updated_at": datetime.now(UTC).isoformat(),
    }
    if decision["replaced_damaged"]:
        body["replaced_damaged"] = {
            "version": decision["incumbent_version"],
            "reason": decision["replaced_damaged"],
        }
    return body


def _with_history(pointer: dict[str, Any], published: dict[str, str]) -> dict[str, Any]:
    """The pointer unchanged but for its serving history: the user_history table of the bundle this run
    published (verified by its sha256), so the champion's lists exclude what each user rated in the latest
    data and know the users it adds. The champion's bundle and model stay as they were."""
    history = {"version": published["version"], "sha256": published["history_sha256"]}
    if pointer.get("version") == published["version"]:
        return {k: v for k, v in pointer.items() if k != "history"}
    return {**pointer, "history": {**history, "updated_at": datetime.now(UTC).isoformat()}}


def _names(pointer: dict[str, Any] | None, published: dict[str, str]) -> bool:
    """True if the pointer already names this very bundle (same version and metadata sha256)."""
    if not pointer:
        return False
    return (
        pointer.get("version") == published["version"]
        and pointer.get("sha256") == published["metadata_sha256"]
    )
