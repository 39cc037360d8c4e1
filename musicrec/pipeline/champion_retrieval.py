"""The retrieval champion of a run, after its models are trained (musicrec.pipeline.retrieval): the ensemble
candidate, the refit on every interaction that is served, its export beside the rating champion, and the
promotion's fair comparison with the published one. Weights are .npz; the ensemble's members a JSON list,
their blend's scales and weights JSON beside it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from musicrec import registry
from musicrec.implicit.base import Interactions
from musicrec.implicit.blend import fit_blend
from musicrec.implicit.model import ImplicitEnsemble, InnerProductTables
from musicrec.implicit.train import evaluate_model, validate
from musicrec.metrics.full import evaluate_scorer, sample_users
from musicrec.pipeline.retrieval import (
    TEST_USERS,
    model_text,
    popular_val_ndcg,
    prefixed,
    ranking_data,
    save_implicit,
    test_metrics,
)
from musicrec.pipeline.workspace import Workspace, model_file

REFIT_DIR = "retrieval_refit"


def refit_implicit(ws: Workspace, row: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """The retrieval champion refit on every interaction of the run (train + validation + test of the
    leave-last-out) for its best epoch count, with its hyperparameters: the model that is served (its
    reported metrics stay the held-out fit's). Saved under models/retrieval_refit/ (an ensemble: each
    member under models/retrieval_refit/<member>/)."""
    data = ranking_data(ws)
    every = (data.seen_val + data.test) > 0
    users, items = (np.asarray(a, np.int64) for a in every.nonzero())
    keep = items > 0  # the unknown-item column of the exclusion mask is not an interaction
    pairs = (users[keep], items[keep])
    if not row.get("members"):
        return _refit_one(ws, row, pairs, REFIT_DIR, threads)
    done = [_refit_one(ws, m, pairs, f"{REFIT_DIR}/{m['name']}", threads) for m in row["members"]]
    return {
        "rows": done[0]["rows"],
        "epochs": {m["name"]: d["epochs"] for m, d in zip(row["members"], done, strict=False)},
        "seconds": round(sum(d["seconds"] for d in done), 2),
        "splits": done[0]["splits"],
    }


def _refit_one(
    ws: Workspace, row: dict[str, Any], pairs: tuple[np.ndarray, np.ndarray], folder: str, threads: int
) -> dict[str, Any]:
    """One model refit on the (user, item) pairs, saved under models/<folder>/."""
    name, data = row["name"], ranking_data(ws)
    cfg = registry.parse_config(name, row.get("hyperparameters"))
    users, items = pairs
    epochs = max(1, int(row.get("best_epoch") or 1))
    t0 = time.perf_counter()
    every = Interactions(
        users,
        items,
        data.users.size,
        data.items.size,
        text=model_text(ws, cfg),
        weights=data.weights_of(users, items),
        order=data.order_of(users, items),
    )
    model = registry.model_class(name).refit(name, cfg, every, epochs, threads=threads)
    save_implicit(ws, folder, model, cfg)
    return {
        "rows": len(users),
        "epochs": epochs,
        "seconds": round(time.perf_counter() - t0, 2),
        "splits": ["train", "validation", "test"],
    }


ENSEMBLE = "implicit_ensemble"  # the blend of the trained implicit models, fitted on validation
BLEND_FILE = "blend.json"  # beside members.json: each member's scale and weight (musicrec.implicit.blend)
# Items x the ensemble's vector size that its members must fit in (the weakest leave first): its vectors are
# the members' side by side, so serving costs grow with them. At the seed's size (457K items, three 65-wide
# members) it doubled the time of 100K users' top-10 (66 s against 32 s) and took `musicrec train` from 5.2 to
# 7.4 GB for a validation NDCG@10 2% above hinge's alone and the same test NDCG@10 (0.0113); on MI (900 items)
# and the medium sample (58K) it is the best candidate. On medium, ease (513 wide) and transitions (513)
# beside five 65-wide members pass it: sasrec and transitions, the two weakest there, leave.
ENSEMBLE_CELLS = 50_000_000


def ensemble_implicit(
    ws: Workspace, rows: list[dict[str, Any]], baselines: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """A blend of the trained implicit models that beat most-popular on validation (from `baselines`; at
    least two, each with best_epoch >= 1): each member's scores over its scale, weighted, the scales and
    weights fitted on the validation users (musicrec.implicit.blend), then measured like one of them:
    validation NDCG@10 on the same sampled users, test on the same sample. None if fewer than two qualify (a
    member below the bar only drags the blend down) or fewer than two keep a positive weight (the blend is
    one of them). The catalogue times the members' summed vector size must fit in ENSEMBLE_CELLS (serving
    cost): while it does not, the member with the lowest validation NDCG@10 leaves (within_budget)."""
    bar = popular_val_ndcg(baselines) if baselines else -1.0
    members = [
        r for r in rows if r.get("best_epoch", 0) >= 1 and not r.get("members") and r["val_ndcg_at_10"] > bar
    ]
    data = ranking_data(ws)
    members = within_budget(members, data.items.size)
    if len(members) < 2:
        return None
    t0 = time.perf_counter()
    cfg = registry.parse_config(members[0]["name"], members[0].get("hyperparameters"))
    users = sample_users(np.flatnonzero(np.diff(data.validation.indptr)), cfg.val_users, cfg.seed)
    models = {m["name"]: load_implicit(ws, m["name"]) for m in members}
    blend = fit_blend(models, users, data.validation, data.seen_train, cfg.seed)
    kept = blend.kept()
    if len(kept) < 2:
        return None
    model = ImplicitEnsemble([models[n] for n in kept], [blend.weights[n] / blend.scales[n] for n in kept])
    row = {
        "name": ENSEMBLE,
        "kind": "retrieval",
        **prefixed("val", validate(model, users, data.validation, data.seen_train)),
        **test_metrics(model, data),
        "members": [
            {
                **{k: m.get(k) for k in ("name", "hyperparameters", "best_epoch")},
                "scale": blend.scales[m["name"]],
                "weight": blend.weights[m["name"]],
            }
            for m in members
            if m["name"] in kept
        ],
        "blend": blend.to_json(),
        "fit_seconds": round(sum(m.get("fit_seconds", 0.0) for m in members) + time.perf_counter() - t0, 2),
    }
    ws.write_json(model_file(ENSEMBLE, "members.json"), kept)
    ws.write_json(model_file(ENSEMBLE, BLEND_FILE), blend.to_json())
    ws.write_json(model_file(ENSEMBLE, "metrics.json"), row)
    return row


def within_budget(members: list[dict[str, Any]], n_items: int) -> list[dict[str, Any]]:
    """The members, in their order, less the weakest on validation NDCG@10 until n_items x their summed
    vector size (factors + 1 each) fits in ENSEMBLE_CELLS."""
    ranked = sorted(members, key=lambda r: -r["val_ndcg_at_10"])
    width = [registry.parse_config(m["name"], m.get("hyperparameters")).factors + 1 for m in ranked]
    while ranked and n_items * sum(width) > ENSEMBLE_CELLS:
        ranked, width = ranked[:-1], width[:-1]
    return [m for m in members if m in ranked]


def model_folders(row: dict[str, Any] | None) -> list[str]:
    """The workspace model folders a retrieval champion needs (its members' too, and the refits)."""
    if row is None:
        return []
    return [row["name"], *(m["name"] for m in row.get("members", [])), REFIT_DIR]


def load_implicit(ws: Workspace, name: str, directory: str = "") -> InnerProductTables:
    """Rebuild a saved implicit model from <directory or name>/weights.npz and config.json (no pickle); the
    ensemble from its members.json and blend.json (each member's weight over its scale), each member from
    <directory>/<member> (refit) or its own folder: the refit serves the blend fitted on the held-out fit."""
    if name == ENSEMBLE:
        folder = ws.model_dir(ENSEMBLE)
        members = json.loads((folder / "members.json").read_text())
        blend = json.loads((folder / BLEND_FILE).read_text())
        return ImplicitEnsemble(
            [load_implicit(ws, m, f"{directory}/{m}" if directory else "") for m in members],
            [blend["weights"][m] / blend["scales"][m] for m in members],
        ).eval()
    d, data = ws.model_dir(directory or name), ranking_data(ws)
    cfg = registry.parse_config(name, json.loads((d / "config.json").read_text()))
    with np.load(d / "weights.npz", allow_pickle=False) as npz:
        state = {k: torch.from_numpy(npz[k]) for k in npz.files}
    model = registry.model_class(name).rebuild(
        cfg, data.users.size, data.items.size, state, _tensor(model_text(ws, cfg))
    )
    return model.eval()


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(array)


def export_retrieval(
    ws: Workspace, row: dict[str, Any], refit: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the retrieval champion (its refit on every interaction when `refit` says so) beside the rating
    champion in the bundle (retrieval.onnx + item table) and check it: tower rows equal the model's, and
    tower . item table equals the torch scores on test pairs."""
    from musicrec.implicit.export import export_tables, verify_retrieval, write_retrieval

    data = ranking_data(ws)
    model = load_implicit(ws, row["name"], REFIT_DIR if refit else "")
    users, items = export_tables(model, data.users.size)
    files = write_retrieval(
        ws.bundle,
        data.users.ids,
        users,
        data.items.ids,
        items[1:],
        metadata={"musicrec_model": row["name"], "run_id": ws.run_id},
    )
    check = verify_retrieval(ws.bundle, data.users.ids, users, [*data.users.ids[:2000], "UNKNOWN-USER"])
    u, i = sp.find(data.test)[:2]
    with torch.no_grad():
        expected = model(torch.from_numpy(u[:2000]), torch.from_numpy(i[:2000])).numpy()
    got = (users[u[:2000]] * items[i[:2000]]).sum(1)
    check["score_max_abs_diff"] = float(np.max(np.abs(got - expected))) if len(u) else 0.0
    if not check["score_max_abs_diff"] <= 1e-4:
        from musicrec.scoring.runtime import OnnxModelError

        raise OnnxModelError(f"retrieval scores differ from torch by {check['score_max_abs_diff']:.3g}")
    metrics = {k: v for k, v in row.items() if k.startswith(("val_", "test_"))}
    return {
        "model": row["name"],
        "files": files,
        "onnx_check": check,
        "metrics": metrics,
        "hyperparameters": row.get("hyperparameters", {}),
        "best_epoch": row.get("best_epoch"),
        "fitted_on": refit or {"splits": ["train"], "rows": len(data.train[0]), "epochs": None},
        "metrics_from": (
            "the held-out fit (leave-last-out train); the exported model is described by fitted_on"
        ),
        "score_rule": "inner product of the user tower's vector and the item row (item bias included)",
    }


MIN_USERS = (
    100  # fewer fair test users: the retrieval champions are "not comparable" (the rating rule decides)
)


def retrieval_check(ws: Workspace, name: str | None) -> Any:
    """The promotion's retrieval comparison for this run's
    retrieval champion `name` (None: nothing to check)."""

    def check(incumbent_dir: Path, meta: dict[str, Any], fitted: pd.DataFrame | None) -> dict[str, Any]:
        if name is None or "retrieval.onnx" not in meta.get("files", {}):
            return {"comparable": False, "reason": "only one of the two bundles has a retrieval champion"}
        return compare_retrieval(ws, name, incumbent_dir, fitted)

    return check


def compare_retrieval(
    ws: Workspace, name: str, incumbent_dir: Path, fitted: pd.DataFrame | None
) -> dict[str, Any]:
    """NDCG@10 of this run's held-out retrieval champion and of the incumbent's published one, on this run's
    leave-last-out test users whose held-out (user, item) the incumbent never fitted on, with the same items
    excluded for both (each user's earlier interactions) and the same full ranking over this run's items."""
    from musicrec.scoring.runtime import load_tower, read_item_table, user_vectors

    data = ranking_data(ws)
    rows, items = sp.find(data.test)[:2]
    if fitted is not None:
        seen = pd.MultiIndex.from_frame(fitted[["user_id", "item_id"]].astype(str))
        pairs = pd.MultiIndex.from_arrays(
            [np.asarray(data.users.ids)[rows - 1], np.asarray(data.items.ids)[items - 1]]
        )
        rows = rows[~pairs.isin(seen)]
    users = np.sort(rows)[:TEST_USERS] if fitted is not None else np.empty(0, np.int64)
    if len(users) < MIN_USERS:
        return {"comparable": False, "users": len(users), "reason": f"fewer than {MIN_USERS} fair test users"}
    tower = load_tower(incumbent_dir / "retrieval.onnx")
    inc_ids, inc_rows = read_item_table(incumbent_dir / "retrieval_items.parquet")
    aligned = np.full((data.items.size, inc_rows.shape[1]), 0.0, np.float32)
    aligned[:, -1] = -1e30  # items the incumbent does not know: ranked last
    pos = data.items.lookup(inc_ids)
    aligned[pos[pos > 0]] = inc_rows[pos > 0]
    ids = np.asarray(["", *data.users.ids], dtype=object)

    def incumbent(u: np.ndarray) -> np.ndarray:
        return user_vectors(tower, ids[u])[0] @ aligned.T

    ours = evaluate_model(
        load_implicit(ws, name), users, data.test, data.seen_val
    )  # the same numbers, cheaper
    theirs = evaluate_scorer(incumbent, users, data.test, data.seen_val, data.items.size, coverage=False)
    return {
        "comparable": True,
        "users": len(users),
        "challenger_ndcg": ours["ndcg@10"],
        "incumbent_ndcg": theirs["ndcg@10"],
        "challenger_hr": ours["hr@10"],
        "incumbent_hr": theirs["hr@10"],
    }
