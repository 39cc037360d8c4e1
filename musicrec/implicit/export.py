"""Export an implicit model for retrieval: retrieval.onnx maps raw string user ids to query vectors in-graph
(LabelEncoder, then a Gather on the user table), and retrieval_items.parquet holds the item table, so that
score(u, i) = user_vector(u) . item_row(i). Row 0 of the user table is the unknown user: [0, ..., 0, 1], which
scores items by their bias alone. One file, no external data, checked with onnx.checker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper

from musicrec.hashing import ids_sha256
from musicrec.rating.export import ML_DOMAIN, ML_OPSET, save_checked
from musicrec.scoring.runtime import (
    ITEM_TABLE,
    TOWER_INPUT,
    TOWER_OUTPUTS,
    OnnxModelError,
    load_tower,
    user_vectors,
)


def build_user_tower(
    user_ids: Sequence[str],
    user_table: np.ndarray,
    metadata: Mapping[str, str] | None = None,
    opset: int = 18,
) -> onnx.ModelProto:
    """user_table: (len(user_ids) + 1, D) float32, row k + 1 for user_ids[k], row 0 for unknown users."""
    table = np.ascontiguousarray(user_table, dtype=np.float32)
    if table.shape[0] != len(user_ids) + 1:
        raise OnnxModelError(f"user table has {table.shape[0]} rows for {len(user_ids)} users (+1 unknown)")
    nodes = [
        helper.make_node(
            "LabelEncoder",
            [TOWER_INPUT],
            ["user_idx"],
            name="user_id_to_index",
            domain=ML_DOMAIN,
            keys_strings=[str(u) for u in user_ids],
            values_int64s=list(range(1, len(user_ids) + 1)),
            default_int64=0,
        ),
        helper.make_node("Gather", ["user_table", "user_idx"], [TOWER_OUTPUTS[0]], axis=0),
        helper.make_node(
            "Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.INT64, [], [0])
        ),
        helper.make_node("Equal", ["user_idx", "zero"], [TOWER_OUTPUTS[1]]),
    ]
    graph = helper.make_graph(
        nodes,
        "musicrec_user_tower",
        [helper.make_tensor_value_info(TOWER_INPUT, TensorProto.STRING, ["batch"])],
        [
            helper.make_tensor_value_info(TOWER_OUTPUTS[0], TensorProto.FLOAT, ["batch", table.shape[1]]),
            helper.make_tensor_value_info(TOWER_OUTPUTS[1], TensorProto.BOOL, ["batch"]),
        ],
        [numpy_helper.from_array(table, "user_table")],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ML_DOMAIN, ML_OPSET)]
    )
    proto.ir_version = 10
    meta = {
        "musicrec.user_ids_sha256": ids_sha256(list(user_ids)),
        "musicrec.dim": str(table.shape[1]),
        **(metadata or {}),
    }
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=str(v))
    return proto


def export_tables(model: Any, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(user table, item table) of a fitted retrieval model (musicrec.implicit.base): [query(u), 1] per user
    index, with row 0 the unknown user [0, ..., 0, 1], and [q_i, b_i] per item index (row 0 included)."""
    import torch

    users = model.user_table(torch.arange(n_users)).numpy()
    users[0] = 0.0
    users[0, -1] = 1.0  # the unknown user scores items by their bias alone
    return users, model.item_table().numpy()


def write_retrieval(
    dest: Path,
    user_ids: Sequence[str],
    user_table: np.ndarray,
    item_ids: Sequence[str],
    item_table: np.ndarray,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write retrieval.onnx and retrieval_items.parquet into dest; return their file names."""
    save_checked(build_user_tower(user_ids, user_table, metadata), dest / "retrieval.onnx")
    items = np.asarray(item_table, dtype=np.float32)
    frame = pd.DataFrame(items, columns=[f"v{k}" for k in range(items.shape[1])])
    frame.insert(0, "item_id", pd.array([str(i) for i in item_ids], dtype="str"))
    frame.to_parquet(dest / ITEM_TABLE, index=False)
    return ["retrieval.onnx", ITEM_TABLE]


def verify_retrieval(
    dest: Path, user_ids: Sequence[str], user_table: np.ndarray, sample: Sequence[str], atol: float = 1e-6
) -> dict[str, object]:
    """The tower's vectors equal the table's rows for known and unknown ids, for batches of 1, 7 and all."""
    sess = load_tower(dest / "retrieval.onnx")
    pos = pd.Index(list(user_ids)).get_indexer(pd.Index(list(sample))) + 1
    expected = np.asarray(user_table, dtype=np.float32)[pos]
    diff = 0.0
    for k in sorted({min(1, len(sample)), min(7, len(sample)), len(sample)} - {0}):
        got, unknown = user_vectors(sess, list(sample[:k]))
        diff = max(diff, float(np.max(np.abs(got - expected[:k]))))
        if not np.array_equal(unknown, pos[:k] == 0):
            raise OnnxModelError(f"{dest / 'retrieval.onnx'}: unknown-user flags disagree with the id list")
    if not diff <= atol:
        raise OnnxModelError(f"retrieval tower parity failed: max abs diff {diff:.3g} > {atol:g}")
    return {
        "max_abs_diff": diff,
        "rows": len(sample),
        "unknown_users": int((pos == 0).sum()),
        "checker": "ok",
    }
