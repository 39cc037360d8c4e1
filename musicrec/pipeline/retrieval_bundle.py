"""Stage 4 of an implicit-feedback run (musicrec.data.feedback): a bundle of the retrieval champion alone.

Its model.onnx is the champion's inner product as a pair scorer: the same string-id graph, unknown-id flags
and parity checks as a rating model's export (musicrec.rating.export), so batch scoring, top-N lists,
`recommend` and `evaluate` serve it unchanged; its output is a relevance score, never a rating (metadata kind
"retrieval"; `score --pairs` names the column relevance_score). The user tower and item table beside it are
the ones a rating bundle's retrieval champion carries (add_retrieval)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import torch

import musicrec
from musicrec.implicit.export import export_tables
from musicrec.pipeline.champion_retrieval import REFIT_DIR, export_retrieval, load_implicit
from musicrec.pipeline.publish import BUNDLE_FILES, add_retrieval, write_metadata
from musicrec.pipeline.retrieval import RANKING_SPLITS, ranking_data
from musicrec.pipeline.workspace import Workspace
from musicrec.rating.export import export_onnx, verify_onnx
from musicrec.scoring.bundle import write_tables


def build_retrieval_bundle(
    ws: Workspace, row: dict[str, Any], run: dict[str, Any], refit: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An implicit-feedback run's bundle: the retrieval champion (its refit on every interaction when `refit`
    says so) as model.onnx, whose output is a relevance score <user vector, item row> (not a rating; metadata
    kind "retrieval"), its user tower and item table as add_retrieval writes them, and the candidate tables
    over the interactions it was fitted on. Checked like a rating bundle (ONNX against torch, unknown ids)."""
    name, data = row["name"], ranking_data(ws)
    users, items = export_tables(load_implicit(ws, name, REFIT_DIR if refit else ""), data.users.size)
    items[0] = 0.0  # an unknown item scores 0
    scorer = RelevanceTables(users, items)
    ws.bundle.mkdir(parents=True, exist_ok=True)
    onnx_path = ws.bundle / "model.onnx"
    export_onnx(
        scorer,
        data.users.ids,
        data.items.ids,
        onnx_path,
        metadata={
            "musicrec_model": name,
            "musicrec_kind": "retrieval",
            "run_id": ws.run_id,
            "musicrec_version": musicrec.__version__,
        },
    )
    test = pd.read_parquet(ws.root / RANKING_SPLITS / "test.parquet").head(2000)
    sample_u = [*test["user_id"], "UNKNOWN-USER", *test["user_id"].head(1), "UNKNOWN-USER"]
    sample_i = [*test["item_id"], *test["item_id"].head(1), "UNKNOWN-ITEM", "UNKNOWN-ITEM"]
    parity = verify_onnx(
        onnx_path, scorer, sample_u, sample_i, user_ids=data.users.ids, item_ids=data.items.ids
    )
    if refit:
        fitted_rows = pd.read_parquet(ws.ratings, columns=["user_id", "item_id", "rating"])
        fitted_on = refit
    else:
        fitted_rows = pd.read_parquet(ws.root / RANKING_SPLITS / "train.parquet").assign(rating=1.0)
        fitted_on = {
            "rows": len(fitted_rows),
            "run_id": ws.run_id,
            "splits": ["train"],
            "folder": RANKING_SPLITS,
            "epochs": None,
        }
    write_tables(
        ws.bundle,
        fitted_rows,
        pd.read_parquet(ws.items, columns=["item_id", "title", "also_bought"]),
        data.items.ids,
        ws.item_vectors,
    )
    meta = {
        "model": name,
        "kind": "retrieval",
        "version": f"{ws.run_id}-{name}",
        "run_id": ws.run_id,
        "output": "relevance score: <user vector, item row> + item bias; orders items, it is not a rating",
        "hyperparameters": row.get("hyperparameters", {}),
        "metrics": {k: v for k, v in row.items() if k.startswith(("val_", "test_"))},
        "metrics_from": "the held-out fit (leave-last-out train); fitted_on describes the exported model",
        "fitted_on": {**fitted_on, "run_id": ws.run_id},
        "feedback": run.get("feedback"),
        "data": {
            "fingerprint": run["fingerprint"],
            "interactions": run["ratings"],
            "split": run.get("split"),
        },
        "code_version": musicrec.__version__,
        "created_at": datetime.now(UTC).isoformat(),
        "onnx_check": parity,
    }
    meta = write_metadata(ws, meta, list(BUNDLE_FILES))
    return add_retrieval(ws, meta, export_retrieval(ws, row, refit))


class RelevanceTables(torch.nn.Module):
    """score(u, i) = <user_table[u], item_table[i]>: a retrieval model's exported tables as a pair scorer
    (ONNX-exportable; index 0 of both is the unknown id)."""

    def __init__(self, users: Any, items: Any) -> None:
        super().__init__()
        self.users = torch.nn.Parameter(torch.as_tensor(users), requires_grad=False)
        self.items = torch.nn.Parameter(torch.as_tensor(items), requires_grad=False)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.users[user_idx] * self.items[item_idx]).sum(-1)
