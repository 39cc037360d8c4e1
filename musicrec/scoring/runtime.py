"""onnxruntime sessions for musicrec's ONNX models, without importing torch: the rating model (model.onnx:
batched predicted ratings for string id pairs) and the retrieval champion's user tower (retrieval.onnx: query
vectors for raw user ids) with its item table.

Training (musicrec.rating.export, musicrec.implicit.export) and scoring both use these, so there is one place
that loads them, with one thread policy and one way to feed string ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

from musicrec.errors import MusicrecError

ID_INPUTS = ("user_id", "item_id")
OUTPUT = "rating"
FLAG_OUTPUTS = ("unknown_user", "unknown_item")  # True where the id is not one the model was trained on
TOWER_INPUT = "user_id"
TOWER_OUTPUTS = ("user_vector", "unknown_user")
ITEM_TABLE = "retrieval_items.parquet"


class OnnxModelError(MusicrecError):
    """An ONNX model could not be exported, loaded or verified."""


def load_session(path_or_bytes: str | Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU onnxruntime session with an explicit thread budget (intra-op threads, one inter-op thread)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spin-waiting pool threads steal the core the caller needs to marshal string inputs: idle threads sleep.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    where = "<bytes>" if isinstance(src, bytes) else src
    try:
        sess = ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises pybind11 classes (InvalidProtobuf, Fail, NoSuchFile, ...)
        raise OnnxModelError(
            f"cannot load ONNX model {where}: {e}",
            hint="the file is corrupt, truncated or not a musicrec export; re-download it",
        ) from e
    names = [(x.name, x.type) for x in sess.get_inputs()]
    if names != [(n, "tensor(string)") for n in ID_INPUTS]:
        raise OnnxModelError(
            f"ONNX model {where} has inputs {names}; expected string inputs {list(ID_INPUTS)}"
        )
    return sess


def read_metadata(session: ort.InferenceSession) -> dict[str, str]:
    """The metadata_props written by export_onnx (model name, n_users, n_items, id-list hashes, ...)."""
    return dict(session.get_modelmeta().custom_metadata_map)


def predict_ratings(
    session: ort.InferenceSession,
    user_ids: Sequence[str] | np.ndarray | pd.Series,
    item_ids: Sequence[str] | np.ndarray | pd.Series,
    batch_size: int = 65536,
) -> np.ndarray:
    """Predicted ratings (float32) for aligned id pairs, scored in batches of batch_size."""
    return _run(session, [OUTPUT], user_ids, item_ids, batch_size)[0]


def has_flags(session: ort.InferenceSession) -> bool:
    """Whether the graph reports unknown ids itself (bundles exported before it did not)."""
    return set(FLAG_OUTPUTS) <= {o.name for o in session.get_outputs()}


def predict_flagged(
    session: ort.InferenceSession,
    user_ids: Sequence[str] | np.ndarray | pd.Series,
    item_ids: Sequence[str] | np.ndarray | pd.Series,
    batch_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ratings, unknown_user, unknown_item) in one pass: the graph's own id lookup yields the flags."""
    if not has_flags(session):
        raise OnnxModelError(
            f"this ONNX model has no {list(FLAG_OUTPUTS)} outputs",
            hint="it was exported before musicrec reported unknown ids in the graph; re-export it",
        )
    rating, user, item = _run(session, [OUTPUT, *FLAG_OUTPUTS], user_ids, item_ids, batch_size)
    return rating, user.astype(bool), item.astype(bool)


def _run(
    session: ort.InferenceSession,
    outputs: list[str],
    user_ids: Sequence[str] | np.ndarray | pd.Series,
    item_ids: Sequence[str] | np.ndarray | pd.Series,
    batch_size: int,
) -> list[np.ndarray]:
    u, i = _as_strings(user_ids), _as_strings(item_ids)
    if u.shape != i.shape or u.ndim != 1:
        raise ValueError(f"user_ids and item_ids must be 1-d and aligned, got shapes {u.shape} and {i.shape}")
    got = [[] for _ in outputs]
    for start in range(0, len(u), batch_size):
        stop = start + batch_size
        parts = session.run(outputs, {ID_INPUTS[0]: u[start:stop], ID_INPUTS[1]: i[start:stop]})
        for acc, part in zip(got, parts, strict=True):
            acc.append(part)
    dtypes = {OUTPUT: np.float32, **{f: np.bool_ for f in FLAG_OUTPUTS}}
    return [
        np.concatenate(parts) if parts else np.empty(0, dtypes[name])
        for name, parts in zip(outputs, got, strict=True)
    ]


def _as_strings(ids: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
    """numpy str ('U') arrays pass as they are (ORT converts them fastest); anything else becomes object."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
        return ids
    return np.asarray(ids, dtype=object)


def load_tower(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime session of retrieval.onnx, its signature checked."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises pybind11 classes
        raise OnnxModelError(f"cannot load retrieval model {path}: {e}", hint="re-download the bundle") from e
    if [(x.name, x.type) for x in sess.get_inputs()] != [(TOWER_INPUT, "tensor(string)")]:
        raise OnnxModelError(
            f"{path} is not a musicrec user tower (inputs {[x.name for x in sess.get_inputs()]})"
        )
    return sess


def user_vectors(sess: ort.InferenceSession, user_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(len(user_ids), D) query vectors and the unknown-user flags."""
    ids = np.asarray([str(u) for u in user_ids], dtype=object)
    vec, unknown = sess.run(list(TOWER_OUTPUTS), {TOWER_INPUT: ids})
    return vec, unknown


def read_item_table(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, (n_items, D) float32 rows) of retrieval_items.parquet."""
    frame = pd.read_parquet(path)
    return frame["item_id"].to_numpy(dtype=object), np.ascontiguousarray(
        frame.drop(columns="item_id").to_numpy(np.float32)
    )
