"""export_onnx / verify_onnx / load_session / predict_ratings on three small toy rating models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from musicrec.hashing import ids_sha256
from musicrec.rating import export as ex
from musicrec.rating.export import OnnxModelError, ParityError, export_onnx, verify_onnx
from musicrec.scoring.runtime import load_session, predict_flagged, predict_ratings

USERS = [f"U{k:03d}" for k in range(12)]
ITEMS = [f"I{k:03d}" for k in range(9)]


class DotModel(nn.Module):
    """Dot product + user/item biases + global mean, clamped."""

    def __init__(self, n_users: int, n_items: int, dim: int = 8) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        self.mean = 3.6

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        dot = (self.user(user_idx) * self.item(item_idx)).sum(-1)
        bias = self.user_bias(user_idx).squeeze(-1) + self.item_bias(item_idx).squeeze(-1)
        return (dot + bias + self.mean).clamp(1.0, 5.0)


class TextMLP(nn.Module):
    """MLP over user and item embeddings concatenated with a gathered text-vector buffer."""

    def __init__(self, n_users: int, n_items: int, dim: int = 8, text_dim: int = 50) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.register_buffer("text", torch.randn(n_items, text_dim))
        self.mlp = nn.Sequential(nn.Linear(2 * dim + text_dim, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.user(user_idx), self.item(item_idx), self.text[item_idx]], dim=-1)
        return (self.mlp(x).squeeze(-1) + 3.0).clamp(1.0, 5.0)


class SigmoidDot(nn.Module):
    """Sigmoid of a dot product rescaled to [1, 5]."""

    def __init__(self, n_users: int, n_items: int, dim: int = 8) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return 1.0 + 4.0 * torch.sigmoid((self.user(user_idx) * self.item(item_idx)).sum(-1))


MODELS = {"dot": DotModel, "text_mlp": TextMLP, "sigmoid": SigmoidDot}


def _make(name: str) -> nn.Module:
    torch.manual_seed(7)
    return MODELS[name](len(USERS) + 1, len(ITEMS) + 1)


def _sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random known pairs, then unknown user, unknown item, both unknown, and an empty-string id."""
    rng = np.random.default_rng(seed)
    u = list(np.array(USERS, dtype=object)[rng.integers(0, len(USERS), n)])
    i = list(np.array(ITEMS, dtype=object)[rng.integers(0, len(ITEMS), n)])
    u += ["nobody", USERS[0], "nobody2", ""]
    i += [ITEMS[0], "nothing", "nothing2", ITEMS[1]]
    return np.array(u, dtype=object), np.array(i, dtype=object)


def _torch_ratings(model: nn.Module, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    lookup_u = {s: k + 1 for k, s in enumerate(USERS)}
    lookup_i = {s: k + 1 for k, s in enumerate(ITEMS)}
    u = torch.tensor([lookup_u.get(s, 0) for s in users], dtype=torch.long)
    i = torch.tensor([lookup_i.get(s, 0) for s in items], dtype=torch.long)
    with torch.no_grad():
        return model.eval()(u, i).numpy()


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[nn.Module, Path]:
    model = _make(request.param)
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    export_onnx(model, USERS, ITEMS, path, metadata={"musicrec.model_name": request.param})
    return model, path


def test_single_self_contained_file_passes_checker(exported: tuple[nn.Module, Path]) -> None:
    _, path = exported
    assert os.listdir(path.parent) == ["model.onnx"]
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_graph_takes_strings_and_returns_batch_ratings(exported: tuple[nn.Module, Path]) -> None:
    sess = load_session(exported[1])
    assert [(x.name, x.type, x.shape) for x in sess.get_inputs()] == [
        ("user_id", "tensor(string)", ["batch"]),
        ("item_id", "tensor(string)", ["batch"]),
    ]
    assert [(o.name, o.type, o.shape) for o in sess.get_outputs()] == [
        ("rating", "tensor(float)", ["batch"]),
        ("unknown_user", "tensor(bool)", ["batch"]),
        ("unknown_item", "tensor(bool)", ["batch"]),
    ]


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_dynamic_batch_matches_torch_with_unknowns(exported: tuple[nn.Module, Path], batch: int) -> None:
    model, path = exported
    users, items = _sample(batch, seed=batch)
    sess = load_session(path)
    got = sess.run(["rating"], {"user_id": users, "item_id": items})[0]
    assert got.shape == (len(users),) and got.dtype == np.float32
    np.testing.assert_allclose(got, _torch_ratings(model, users, items), rtol=0, atol=1e-4)
    assert np.all((got >= 1.0) & (got <= 5.0))


def test_unknown_ids_score_as_index_zero(exported: tuple[nn.Module, Path]) -> None:
    model, path = exported
    got = predict_ratings(
        load_session(path), ["nobody", USERS[3], "nobody"], [ITEMS[2], "nothing", "nothing"]
    )
    with torch.no_grad():
        want = model(torch.tensor([0, 4, 0]), torch.tensor([3, 0, 0])).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_graph_flags_exactly_the_ids_it_does_not_know(exported: tuple[nn.Module, Path]) -> None:
    model, path = exported
    users, items = _sample(50, seed=3)
    rating, unknown_user, unknown_item = predict_flagged(load_session(path), users, items, batch_size=16)
    np.testing.assert_array_equal(unknown_user, ~np.isin(users, USERS))
    np.testing.assert_array_equal(unknown_item, ~np.isin(items, ITEMS))
    assert unknown_user[-4:].tolist() == [True, False, True, True]  # "" is not a known id either
    np.testing.assert_allclose(rating, _torch_ratings(model, users, items), rtol=0, atol=1e-4)


def test_verify_reports_parity_and_unknown_counts(exported: tuple[nn.Module, Path]) -> None:
    model, path = exported
    users, items = _sample(50)
    report = verify_onnx(path, model, users, items, user_ids=USERS, item_ids=ITEMS)
    assert report["rows"] == 54
    assert report["unknown_users"] == 3  # "nobody", "nobody2", "" (empty string is not a known id)
    assert report["unknown_items"] == 2
    assert report["max_abs_diff"] <= 1e-4
    assert report["checker"] == "ok"
    assert report["bytes"] == path.stat().st_size


def test_metadata_pins_model_and_id_lists(exported: tuple[nn.Module, Path]) -> None:
    meta = ex.read_metadata(load_session(exported[1]))
    assert meta["musicrec.model_name"] in MODELS
    assert (meta["musicrec.n_users"], meta["musicrec.n_items"]) == (str(len(USERS)), str(len(ITEMS)))
    assert meta["musicrec.user_ids_sha256"] == ids_sha256(USERS)
    assert meta["musicrec.item_ids_sha256"] == ids_sha256(ITEMS)
    assert meta["musicrec.exporter"] == "dynamo"


def test_verify_rejects_other_id_lists(exported: tuple[nn.Module, Path]) -> None:
    model, path = exported
    with pytest.raises(OnnxModelError, match="user id list does not match"):
        verify_onnx(path, model, USERS[:3], ITEMS[:3], user_ids=USERS[::-1], item_ids=ITEMS)


def test_truncated_file_fails_to_load_clearly(exported: tuple[nn.Module, Path], tmp_path: Path) -> None:
    bad = tmp_path / "truncated.onnx"
    data = exported[1].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxModelError, match="cannot load ONNX model"):
        load_session(bad)
    with pytest.raises(OnnxModelError):
        load_session(b"not an onnx model at all")
    with pytest.raises(OnnxModelError):
        verify_onnx(bad, exported[0], USERS[:2], ITEMS[:2], user_ids=USERS, item_ids=ITEMS)


def test_tampered_weights_fail_parity(exported: tuple[nn.Module, Path], tmp_path: Path) -> None:
    model, path = exported
    proto = onnx.load(str(path))
    weights = next(t for t in proto.graph.initializer if len(t.dims) == 2 and t.dims[0] == len(USERS) + 1)
    arr = onnx.numpy_helper.to_array(weights).copy()
    arr += 1.0
    weights.CopyFrom(onnx.numpy_helper.from_array(arr, weights.name))
    bad = tmp_path / "model.onnx"
    onnx.save_model(proto, str(bad))
    with pytest.raises(ParityError, match="max abs diff"):
        verify_onnx(bad, model, *_sample(200), user_ids=USERS, item_ids=ITEMS)


def test_external_data_is_rejected(tmp_path: Path) -> None:
    model = _make("dot")
    path = tmp_path / "model.onnx"
    export_onnx(model, USERS, ITEMS, path, exporter="legacy")
    proto = onnx.load(str(path))
    split = tmp_path / "split" / "model.onnx"
    split.parent.mkdir()
    onnx.save_model(
        proto, str(split), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    with pytest.raises(OnnxModelError, match="external"):
        verify_onnx(split, model, USERS[:2], ITEMS[:2], user_ids=USERS, item_ids=ITEMS)


def test_legacy_fallback_when_dynamo_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(ex, "_export_dynamo", broken)
    model = _make("text_mlp")
    path = tmp_path / "model.onnx"
    export_onnx(model, USERS, ITEMS, path)
    assert ex.read_metadata(load_session(path))["musicrec.exporter"] == "legacy"
    assert verify_onnx(path, model, *_sample(30), user_ids=USERS, item_ids=ITEMS)["max_abs_diff"] <= 1e-4
    with pytest.raises(OnnxModelError, match="dynamo ONNX export failed"):
        export_onnx(model, USERS, ITEMS, tmp_path / "other.onnx", exporter="dynamo")


def test_failed_export_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def reject(*args: object, **kwargs: object) -> None:
        raise onnx.checker.ValidationError("broken graph")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(OnnxModelError, match="onnx.checker"):
        export_onnx(_make("dot"), USERS, ITEMS, tmp_path / "model.onnx", exporter="legacy")
    assert os.listdir(tmp_path) == []


def test_export_rejects_id_lists_that_do_not_fit_the_model(tmp_path: Path) -> None:
    model = _make("dot")
    with pytest.raises(OnnxModelError, match="largest indices"):
        export_onnx(model, [*USERS, "extra"], ITEMS, tmp_path / "model.onnx")
    with pytest.raises(OnnxModelError, match="duplicates"):
        export_onnx(model, USERS[:-1] + [USERS[0]], ITEMS, tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == []


def test_export_keeps_the_training_flag(tmp_path: Path) -> None:
    model = _make("sigmoid").train()
    export_onnx(model, USERS, ITEMS, tmp_path / "model.onnx", exporter="legacy")
    assert model.training


def test_predict_batches_and_input_kinds(exported: tuple[nn.Module, Path]) -> None:
    model, path = exported
    sess = load_session(path.read_bytes(), threads=2)
    users, items = _sample(100)
    want = _torch_ratings(model, users, items)
    np.testing.assert_allclose(predict_ratings(sess, users, items, batch_size=16), want, atol=1e-4, rtol=0)
    got = predict_ratings(sess, users.astype(str), items.astype(str))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(predict_ratings(sess, list(users), list(items)), want, atol=1e-4, rtol=0)
    assert predict_ratings(sess, [], []).shape == (0,)
    with pytest.raises(ValueError, match="aligned"):
        predict_ratings(sess, users[:3], items[:2])


def test_the_id_hash_is_the_sha256_of_the_newline_terminated_ids_whatever_the_container() -> None:
    """Published bundles carry this hash: it must stay the digest of "id\\n" per id, across block boundaries
    and for pandas' Arrow strings, lists, generators and numpy arrays alike."""
    import hashlib

    import pandas as pd

    ids = [f"u{i}é" for i in range(70_000)]  # more than one block, non-ASCII
    expected = hashlib.sha256("".join(f"{x}\n" for x in ids).encode("utf-8")).hexdigest()
    for form in (
        ids,
        iter(ids),
        np.array(ids, dtype=object),
        pd.Index(ids, dtype="str"),
        pd.Series(ids, dtype="str"),
    ):
        assert ids_sha256(form) == expected
    assert ids_sha256([]) == hashlib.sha256(b"").hexdigest()
