"""Export a rating model to one self-contained ONNX file that maps raw string ids to indices inside the graph.

The torch graph takes int64 indices (0 = unknown). Two ai.onnx.ml LabelEncoder nodes in front of it map the
string inputs "user_id"/"item_id" to those indices (ids[k] -> k + 1, anything else -> 0), so a scorer needs
the .onnx file only: no id tables, no pickles. Two boolean outputs "unknown_user"/"unknown_item" (index == 0)
tell the scorer which ids the model never saw, from the same lookup, so scoring does not hash every id a
second time. Loading and scoring live in musicrec.scoring.runtime (torch-free).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import pandas as pd
import torch
from onnx import TensorProto, helper

from musicrec.hashing import ids_sha256
from musicrec.scoring.runtime import (
    FLAG_OUTPUTS,
    ID_INPUTS,
    OUTPUT,
    OnnxModelError,
    load_session,
    predict_flagged,
    read_metadata,
)

log = logging.getLogger(__name__)

INDEX_INPUTS = ("user_idx", "item_idx")
ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3  # LabelEncoder-2 (string keys -> int64 values); pairs with ai.onnx opset 18
_MAX_PROTO_BYTES = 2**31 - 1  # protobuf limit for a single-file model
_HARMLESS_WARNINGS = (r".*axis name.*will not be used.*", r".*isinstance\(treespec, LeafSpec\).*")


class ParityError(OnnxModelError):
    """ONNX and torch predictions differ by more than the tolerance."""

    def __init__(self, max_abs_diff: float, atol: float, rows: int) -> None:
        self.max_abs_diff = max_abs_diff
        super().__init__(
            f"ONNX vs torch parity failed: max abs diff {max_abs_diff:.3g} > atol {atol:g} on {rows} rows",
            hint="re-export the model; if it persists, the model uses an op the exporter translates wrongly",
        )


def export_onnx(
    model: torch.nn.Module,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    path: str | Path,
    *,
    opset: int = 18,
    metadata: Mapping[str, str] | None = None,
    exporter: Literal["auto", "dynamo", "legacy"] = "auto",
) -> None:
    """Write model as one .onnx file taking string ids; user_ids[k] / item_ids[k] get index k + 1.

    "auto" tries the dynamo exporter and falls back to the legacy one (logged, recorded in the metadata).
    The file is checked with onnx.checker (full_check) before it atomically replaces path.
    """
    users, items = _unique_ids(user_ids, "user"), _unique_ids(item_ids, "item")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        # a rating model (or a blend of them) traces its export module; any other module is traced as is
        export = getattr(model, "export_module", None)
        graph = export().eval() if callable(export) else model
        example = _example_inputs(graph, len(users), len(items))
        with tempfile.TemporaryDirectory(prefix="musicrec-export-") as tmp:
            proto, used = _export_graph(graph, example, opset, exporter, Path(tmp))
    finally:
        model.train(was_training)
    _strip_debug_info(proto.graph)
    _splice_id_encoders(proto, users, items)
    meta = {
        "musicrec.model_name": type(model).__name__,
        **{str(k): str(v) for k, v in (metadata or {}).items()},
        "musicrec.n_users": str(len(users)),
        "musicrec.n_items": str(len(items)),
        "musicrec.user_ids_sha256": ids_sha256(users),
        "musicrec.item_ids_sha256": ids_sha256(items),
        "musicrec.exporter": used,
    }
    helper.set_model_props(proto, meta)
    save_checked(proto, path)


def _unique_ids(ids: Sequence[str], what: str) -> list[str]:
    out = [str(x) for x in ids]
    if len(set(out)) != len(out):
        raise OnnxModelError(f"{what} id list has duplicates", hint="pass IdIndex.ids (unique, index order)")
    return out


def _example_inputs(model: torch.nn.Module, n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices [0, n] for both inputs; running them proves the tables cover every id (plus unknown row 0)."""
    u = torch.tensor([0, n_users], dtype=torch.long)
    i = torch.tensor([0, n_items], dtype=torch.long)
    try:
        with torch.no_grad():
            out = model(u, i)
    except (IndexError, RuntimeError) as e:
        raise OnnxModelError(
            f"model fails on the largest indices (users {n_users}, items {n_items}): {e}",
            hint="the id lists must be the ones the model was trained with (tables need n + 1 rows)",
        ) from e
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2,):
        raise OnnxModelError(f"model must return a [batch] tensor, got {getattr(out, 'shape', type(out))}")
    return u, i


def _export_graph(
    model: torch.nn.Module, example: tuple[torch.Tensor, ...], opset: int, exporter: str, tmp: Path
) -> tuple[onnx.ModelProto, str]:
    """The int64-input graph as a ModelProto, and which exporter produced it."""
    if exporter in ("auto", "dynamo"):
        try:
            return _export_dynamo(model, example, opset, tmp), "dynamo"
        except Exception as e:
            if exporter == "dynamo":
                raise OnnxModelError(f"dynamo ONNX export failed: {e}") from e
            log.warning("dynamo ONNX export failed (%s); falling back to the legacy exporter", e)
    try:
        return _export_legacy(model, example, opset, tmp), "legacy"
    except Exception as e:
        raise OnnxModelError(f"legacy ONNX export failed: {e}", hint="see the exporter message above") from e


def _export_dynamo(
    model: torch.nn.Module, example: tuple[torch.Tensor, ...], opset: int, tmp: Path
) -> onnx.ModelProto:
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        for pattern in _HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        prog = torch.onnx.export(
            model,
            example,
            dynamo=True,
            opset_version=opset,
            verbose=False,
            artifacts_dir=tmp,
            input_names=list(INDEX_INPUTS),
            output_names=[OUTPUT],
            dynamic_shapes={INDEX_INPUTS[0]: {0: batch}, INDEX_INPUTS[1]: {0: batch}},
        )
    return prog.model_proto


def _export_legacy(
    model: torch.nn.Module, example: tuple[torch.Tensor, ...], opset: int, tmp: Path
) -> onnx.ModelProto:
    f = tmp / "legacy.onnx"
    axes = {name: {0: "batch"} for name in (*INDEX_INPUTS, OUTPUT)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            example,
            str(f),
            dynamo=False,
            opset_version=opset,
            dynamic_axes=axes,
            input_names=list(INDEX_INPUTS),
            output_names=[OUTPUT],
        )
    return onnx.load(str(f))


def _strip_debug_info(graph: onnx.GraphProto) -> None:
    """Drop the exporter's per-node stack traces and fx dumps: they hold local paths, not model content."""
    for item in (*graph.node, *graph.value_info, *graph.input, *graph.output):
        del item.metadata_props[:]
        item.doc_string = ""


def _splice_id_encoders(proto: onnx.ModelProto, user_ids: list[str], item_ids: list[str]) -> None:
    """Replace the int64 graph inputs by string inputs that LabelEncoder nodes map to the old input names, and
    add the unknown-id flag outputs (index == 0)."""
    g = proto.graph
    if [x.name for x in g.input] != list(INDEX_INPUTS) or [x.name for x in g.output] != [OUTPUT]:
        raise OnnxModelError(
            f"unexpected exported signature {[x.name for x in g.input]} -> "
            f"{[x.name for x in g.output]}; expected {list(INDEX_INPUTS)} -> ['{OUTPUT}']"
        )
    taken = {x.name for x in g.initializer} | {o for n in g.node for o in n.output}
    new_names = {*ID_INPUTS, *FLAG_OUTPUTS, "unknown_index"}
    if taken & new_names:
        raise OnnxModelError(f"graph already uses the names {sorted(taken & new_names)}")
    encoders = [
        helper.make_node(
            "LabelEncoder",
            [src],
            [dst],
            name=f"{src}_to_index",
            domain=ML_DOMAIN,
            keys_strings=ids,
            values_int64s=list(range(1, len(ids) + 1)),
            default_int64=0,
        )
        for src, dst, ids in zip(ID_INPUTS, INDEX_INPUTS, (user_ids, item_ids), strict=False)
    ]
    zero = helper.make_node(
        "Constant",
        [],
        ["unknown_index"],
        value=helper.make_tensor("unknown_index", TensorProto.INT64, [], [0]),
    )
    flags = [
        helper.make_node("Equal", [idx, "unknown_index"], [flag], name=f"{flag}_flag")
        for idx, flag in zip(INDEX_INPUTS, FLAG_OUTPUTS, strict=False)
    ]
    nodes = encoders + [zero, *flags] + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.output.extend(helper.make_tensor_value_info(f, TensorProto.BOOL, ["batch"]) for f in FLAG_OUTPUTS)
    del g.input[:]
    g.input.extend(helper.make_tensor_value_info(n, TensorProto.STRING, ["batch"]) for n in ID_INPUTS)
    g.value_info.extend(helper.make_tensor_value_info(n, TensorProto.INT64, ["batch"]) for n in INDEX_INPUTS)
    if not any(op.domain == ML_DOMAIN for op in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))


def save_checked(proto: onnx.ModelProto, path: Path) -> None:
    """Write a temp file next to path, run the full checker, then os.replace: path is never half-written."""
    if proto.ByteSize() > _MAX_PROTO_BYTES:
        raise OnnxModelError(f"model is {proto.ByteSize()} bytes, over the 2 GB single-file protobuf limit")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save_model(proto, tmp_name, save_as_external_data=False)
        onnx.checker.check_model(tmp_name, full_check=True)
        os.replace(tmp_name, path)
    except onnx.checker.ValidationError as e:
        raise OnnxModelError(f"exported graph fails onnx.checker: {e}") from e
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)


def verify_onnx(
    path: str | Path,
    model: torch.nn.Module,
    user_ids_sample: Sequence[str],
    item_ids_sample: Sequence[str],
    *,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    atol: float = 1e-4,
    threads: int = 1,
) -> dict[str, object]:
    """Check an exported file against its torch model on string samples; raise OnnxModelError on any failure.

    user_ids / item_ids are the known id lists given to export_onnx (index order). Checks: onnx.checker
    (full), everything embedded in one file, metadata hashes match the id lists, dynamic batch (1, 7, all),
    parity within atol, unknown ids included, and unknown-id flags equal to the reference lookup.
    """
    path = Path(path)
    _check_file(path)
    sess = load_session(path, threads=threads)
    _check_metadata(read_metadata(sess), user_ids, item_ids)
    u_idx = _lookup(user_ids, user_ids_sample)
    i_idx = _lookup(item_ids, item_ids_sample)
    was_training = model.training
    try:
        with torch.inference_mode():
            expected = model.eval()(torch.from_numpy(u_idx), torch.from_numpy(i_idx)).float().numpy()
    finally:
        model.train(was_training)
    u_str, i_str = np.asarray(user_ids_sample, dtype=object), np.asarray(item_ids_sample, dtype=object)
    n = len(expected)
    diff = 0.0
    for k in sorted({min(1, n), min(7, n), n} - {0}):
        got, unknown_user, unknown_item = predict_flagged(sess, u_str[:k], i_str[:k], batch_size=k)
        diff = max(diff, float(np.max(np.abs(got - expected[:k]))))
        if not (
            np.array_equal(unknown_user, u_idx[:k] == 0) and np.array_equal(unknown_item, i_idx[:k] == 0)
        ):
            raise OnnxModelError(
                f"{path}: the graph's unknown-id flags disagree with the id lists", hint="re-export the model"
            )
    if not diff <= atol:  # also catches NaN
        raise ParityError(diff, atol, n)
    return {
        "max_abs_diff": diff,
        "rows": n,
        "unknown_users": int((u_idx == 0).sum()),
        "unknown_items": int((i_idx == 0).sum()),
        "checker": "ok",
        "bytes": path.stat().st_size,
    }


def _lookup(known: Sequence[str], ids: Sequence[str]) -> np.ndarray:
    """Reference mapping, independent of the graph: known[k] -> k + 1, anything else -> 0 (as IdIndex)."""
    pos = pd.Index(np.asarray(known, dtype=object)).get_indexer(pd.Index(np.asarray(ids, dtype=object)))
    return (pos + 1).astype(np.int64)


def _check_file(path: Path) -> None:
    """Full onnx.checker pass, and no initializer or constant stored outside the file."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise OnnxModelError(f"{path} fails onnx.checker: {e}", hint="re-export the model") from e
    tensors = [
        *proto.graph.initializer,
        *(a.t for n in proto.graph.node for a in n.attribute if a.HasField("t")),
    ]
    external = [t.name for t in tensors if t.data_location == TensorProto.EXTERNAL]
    if external:
        raise OnnxModelError(
            f"{path} keeps {len(external)} tensors in external files, e.g. {external[:3]}",
            hint="export with save_as_external_data=False so the model is one file",
        )


def _check_metadata(meta: Mapping[str, str], user_ids: Sequence[str], item_ids: Sequence[str]) -> None:
    for what, ids in (("user", user_ids), ("item", item_ids)):
        key = f"musicrec.{what}_ids_sha256"
        if meta.get(key) != ids_sha256(ids):
            raise OnnxModelError(
                f"the {what} id list does not match the one baked into the model ({key})",
                hint="pass the id lists the model was exported with",
            )
