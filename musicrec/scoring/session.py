"""onnxruntime session and batched prediction, without importing torch (musicrec.export needs it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from musicrec.errors import MusicrecError

ID_INPUTS = ("user_id", "item_id")
OUTPUT = "rating"


def load_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with an explicit thread budget and no spinning pool threads (see musicrec.export)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises pybind11 classes
        raise MusicrecError(f"cannot load ONNX model {path}: {e}", hint="re-download or republish the bundle") from e
    names = [(x.name, x.type) for x in sess.get_inputs()]
    if names != [(n, "tensor(string)") for n in ID_INPUTS]:
        raise MusicrecError(f"ONNX model {path} has inputs {names}; expected string inputs {list(ID_INPUTS)}")
    return sess


def read_metadata(session: ort.InferenceSession) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def predict(session: ort.InferenceSession, user_ids: np.ndarray, item_ids: np.ndarray,
            batch_size: int = 65536) -> np.ndarray:
    """Predicted ratings (float32) for aligned string id arrays, in batches of batch_size."""
    u = np.asarray(user_ids, dtype=object)
    i = np.asarray(item_ids, dtype=object)
    out = np.empty(len(u), dtype=np.float32)
    for start in range(0, len(u), batch_size):
        stop = start + batch_size
        out[start:stop] = session.run([OUTPUT], {ID_INPUTS[0]: u[start:stop], ID_INPUTS[1]: i[start:stop]})[0]
    return out
