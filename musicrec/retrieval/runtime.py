"""Torch-free side of retrieval: the user tower session, query vectors for raw ids, the item table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

from musicrec.runtime import OnnxModelError

TOWER_INPUT = "user_id"
TOWER_OUTPUTS = ("user_vector", "unknown_user")
ITEM_TABLE = "retrieval_items.parquet"


def load_tower(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime session of retrieval.onnx, its signature checked."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises pybind11 classes
        raise OnnxModelError(f"cannot load retrieval model {path}: {e}", hint="re-download the bundle") from e
    if [(x.name, x.type) for x in sess.get_inputs()] != [(TOWER_INPUT, "tensor(string)")]:
        raise OnnxModelError(f"{path} is not a musicrec user tower (inputs {[x.name for x in sess.get_inputs()]})")
    return sess


def user_vectors(sess: ort.InferenceSession, user_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(len(user_ids), D) query vectors and the unknown-user flags."""
    ids = np.asarray([str(u) for u in user_ids], dtype=object)
    vec, unknown = sess.run(list(TOWER_OUTPUTS), {TOWER_INPUT: ids})
    return vec, unknown


def read_item_table(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, (n_items, D) float32 rows) of retrieval_items.parquet."""
    frame = pd.read_parquet(path)
    return frame["item_id"].to_numpy(dtype=object), np.ascontiguousarray(frame.drop(columns="item_id").to_numpy(np.float32))
