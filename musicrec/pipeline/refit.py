"""Stage 3b: refit a chosen champion, of either family, on every row of the run (train + validation + test).

The champion is chosen and reported on held-out rows; the model that is served has then seen every rating,
so nightly retraining on new data actually uses it. The refit keeps the champion's hyperparameters, its
tuned bias shrinkage and its best number of epochs (one epoch is one pass over the larger data), and runs
without validation. Its text vectors stay those of the training split."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from musicrec.data.split import Split, read_splits
from musicrec.pipeline.ingest import fingerprint
from musicrec.pipeline.prepare import load_train_data, rating_range, text_items
from musicrec.pipeline.train import save_model
from musicrec.pipeline.workspace import Workspace, model_file
from musicrec.rating.baselines import BASELINES, bias_regs
from musicrec.rating.data import TrainData, prepare_data
from musicrec.rating.train import fit_model
from musicrec.text import load_item_vectors

REFIT_DIR = "refit"


def all_rows(ws: Workspace) -> pd.DataFrame:
    """Every rating of the run, in split order (train, validation, test)."""
    split = read_splits(ws.splits)
    return pd.concat([split.train, split.validation, split.test], ignore_index=True)


def full_data(ws: Workspace, rows: pd.DataFrame | None = None) -> TrainData:
    """TrainData whose training part is every rating of the run (validation and test parts empty); pass
    `rows` (all_rows) when the caller already read them."""
    rows = all_rows(ws) if rows is None else rows
    empty = rows.iloc[:0]
    ids, vectors = load_item_vectors(ws.item_vectors)
    return prepare_data(Split(rows, empty, empty), ids, vectors, rating_range(ws), text_items(ws))


def refit(ws: Workspace, row: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """The one refit path: a leaderboard row's model refit on every row of the run for its best epoch count,
    with its hyperparameters; the model that is served (its reported metrics stay the held-out fit's). A
    retrieval champion (its row's kind) is refit on every interaction of the leave-last-out."""
    if row.get("kind") == "retrieval":
        from musicrec.pipeline.champion_retrieval import refit_implicit

        return refit_implicit(ws, row, threads)
    return refit_rating(ws, row, threads)


def refit_rating(ws: Workspace, row: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Refit the rating model `row` on all ratings for its best epoch count; save it under models/refit/. A
    blend (its row's members): each member under models/refit/<member>/, its weights kept from validation."""
    name, held_out, rows = row["name"], load_train_data(ws), all_rows(ws)
    data = full_data(ws, rows)
    data.derived["bias_regs"] = bias_regs(held_out)  # chosen on validation by the held-out fit
    members = row.get("members") or []
    t0 = time.perf_counter()
    if members:
        epochs: Any = {
            m["name"]: _refit_one(ws, m, data, f"{REFIT_DIR}/{m['name']}", threads) for m in members
        }
    else:
        epochs = _refit_one(ws, row, data, REFIT_DIR, threads)
    info = {
        "model": name,
        "rows": len(rows),
        "users": int(data.users.size - 1),
        "items": int(data.items.size - 1),
        "epochs": epochs,
        "fingerprint": fingerprint(rows),
        "run_id": ws.run_id,
        "splits": ["train", "validation", "test"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    ws.write_json(model_file(REFIT_DIR, "refit.json"), info)
    return info


def _refit_one(ws: Workspace, row: dict[str, Any], data: TrainData, folder: str, threads: int) -> int:
    """One model (or a blend's baseline member, in closed form) refit on `data`, saved under models/<folder>/;
    returns its epochs."""
    if row["name"] in BASELINES:
        model = BASELINES[row["name"]](data)  # the held-out fit's regularisation (data.derived)
        save_model(ws, folder, model, model.cfg)
        return 0
    epochs = max(1, int(row.get("best_epoch") or 1))
    result = fit_model(
        row["name"], data, row.get("hyperparameters") or {}, threads=threads, fixed_epochs=epochs
    )
    save_model(ws, folder, result.model, result.config)
    return epochs
