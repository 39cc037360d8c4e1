"""The batch scoring flow under the Prefect test harness, after a quick real training run on the small sample."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from musicrec.errors import StoreError
from musicrec.pipeline.refit import REFIT_DIR, full_data
from musicrec.pipeline.train import load_model
from musicrec.pipeline.workspace import Workspace
from musicrec.scoring.output import read_output
from musicrec.store import open_store

pytestmark = [pytest.mark.slow, pytest.mark.flow]
TOP_N = 10


@pytest.fixture(scope="module")
def trained(quick_champion):
    store_uri, root, report = quick_champion
    return store_uri, Workspace(root / "work" / report["run_id"]), report


def _params(store_uri: str, tmp_path: Path, **kw):
    from flows.scoring import ScoringParams

    return ScoringParams(store_uri=store_uri, work_dir=str(tmp_path / "swork"), threads=2, **kw)


def test_pairs_match_torch_and_flag_unknown_ids(trained, tmp_path):
    from flows.scoring import batch_scoring

    store_uri, ws, _ = trained
    test = pd.read_parquet(ws.splits / "test.parquet", columns=["user_id", "item_id"]).head(3000)
    extra = pd.DataFrame(
        {
            "user_id": ["NEW-USER", test["user_id"].iloc[0], "NEW-USER"],
            "item_id": [test["item_id"].iloc[0], "NEW-ITEM", "NEW-ITEM"],
        }
    )
    pairs = pd.concat([test, extra], ignore_index=True).assign(row=lambda d: np.arange(len(d)))
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    manifest = batch_scoring(
        _params(
            store_uri,
            tmp_path,
            pairs=str(tmp_path / "pairs.csv"),
            chunk_rows=700,
            out=(tmp_path / "out").as_uri(),
        )
    )
    # at most 700 rows per chunk, and a multiple of the two workers so neither idles at the end
    assert manifest["chunks"] >= -(-len(pairs) // 700) and manifest["chunks"] % 2 == 0
    assert manifest["rows"] == len(pairs)
    out = read_output(open_store((tmp_path / "out").as_uri()), "")
    assert out["row"].tolist() == list(range(len(pairs)))  # input order, input columns kept
    assert out[["user_id", "item_id"]].equals(pairs[["user_id", "item_id"]])

    data = full_data(ws)  # the bundle serves the champion refit on every rating
    model = load_model(ws, "gmf_logistic", data, directory=REFIT_DIR)
    with torch.inference_mode():
        expected = model(
            torch.from_numpy(data.users.lookup(pairs["user_id"])),
            torch.from_numpy(data.items.lookup(pairs["item_id"])),
        ).numpy()
    np.testing.assert_allclose(out["predicted_rating"].to_numpy(), expected, atol=1e-4)
    tail = out.tail(3)
    assert tail["unknown_user"].tolist() == [True, False, True]
    assert tail["unknown_item"].tolist() == [False, True, True]
    assert np.isfinite(tail["predicted_rating"]).all()
    assert out["unknown_user"].sum() == (~pairs["user_id"].isin(data.users.ids)).sum()
    assert "torch" not in _scoring_imports()


def test_bundles_without_graph_flags_score_the_same(trained, tmp_path):
    """Bundles exported before the graph reported unknown ids still score, with the same flags."""
    import dataclasses

    import onnx

    from musicrec.scoring import jobs
    from musicrec.scoring.rank import score_pairs
    from musicrec.scoring.runtime import has_flags, load_session

    store_uri, ws, _ = trained
    directory = jobs.fetch_bundle(store_uri, "", tmp_path)["directory"]
    bundle = jobs._loaded(directory, with_index=False)[0]
    proto = onnx.load(str(Path(directory) / "model.onnx"))
    keep = [o for o in proto.graph.output if o.name == "rating"]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    old = dataclasses.replace(bundle, session=load_session(proto.SerializeToString()))
    assert has_flags(bundle.session) and not has_flags(old.session)

    test = pd.read_parquet(ws.splits / "test.parquet", columns=["user_id", "item_id"]).head(500)
    pairs = pd.concat(
        [
            test,
            pd.DataFrame(
                {"user_id": ["NEW", test["user_id"].iloc[0]], "item_id": [test["item_id"].iloc[0], "NEW"]}
            ),
        ],
        ignore_index=True,
    )
    new_out, old_out = score_pairs(bundle, pairs, 128), score_pairs(old, pairs, 128)
    pd.testing.assert_frame_equal(new_out, old_out)
    assert new_out["unknown_user"].tolist()[-2:] == [True, False]
    assert new_out["unknown_item"].tolist()[-2:] == [False, True]


def _scoring_imports() -> set[str]:
    import subprocess

    code = "import sys; import musicrec.scoring.jobs; print(' '.join(sys.modules))"
    return set(
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[1],
        ).stdout.split()
    )


def test_top_n_lists(trained, tmp_path):
    from flows.scoring import batch_scoring

    store_uri, ws, _ = trained
    train = pd.read_parquet(ws.splits / "train.parquet", columns=["user_id", "item_id"])
    every = pd.concat(
        [
            pd.read_parquet(ws.splits / f"{n}.parquet", columns=["user_id", "item_id"])
            for n in ("train", "validation", "test")
        ]
    )
    held_out_users = pd.concat(
        [pd.read_parquet(ws.splits / f"{n}.parquet", columns=["user_id"]) for n in ("validation", "test")]
    )["user_id"].drop_duplicates()
    users = [
        *dict.fromkeys([*held_out_users.head(200), *train["user_id"].drop_duplicates().head(200)]),
        "NEW-USER-1",
        "NEW-USER-2",
    ]
    pd.DataFrame({"user_id": users}).to_parquet(tmp_path / "users.parquet")
    manifest = batch_scoring(
        _params(store_uri, tmp_path, users=str(tmp_path / "users.parquet"), top_n=TOP_N, chunk_users=150)
    )
    assert manifest["uri"].startswith(store_uri) and "/scores/" in manifest["uri"]
    prefix = manifest["uri"].removeprefix(store_uri + "/").removesuffix("/_manifest.json")
    out = read_output(open_store(store_uri), prefix)
    assert list(out.columns) == ["user_id", "rank", "item_id", "score", "source"]
    assert list(dict.fromkeys(out["user_id"])) == users
    for user, g in out.groupby("user_id"):
        assert g["rank"].tolist() == list(range(1, TOP_N + 1)) and g["item_id"].nunique() == TOP_N
        assert g["score"].is_monotonic_decreasing
    rated = set(zip(every["user_id"], every["item_id"], strict=False))  # the served model knows every split's ratings
    assert not any((u, i) in rated for u, i in zip(out["user_id"], out["item_id"], strict=False))
    known = out[~out["user_id"].str.startswith("NEW-USER")]
    # retrieve-then-rank: the retrieval champion's nearest items merged with the other candidate sources
    assert "retrieval" in set(known["source"]) and set(known["source"]) <= {
        "retrieval",
        "popular",
        "also_bought",
        "word2vec",
    }
    assert set(out.loc[out["user_id"].str.startswith("NEW-USER"), "source"]) == {"fallback"}
    assert manifest["unknown_users"] == 2 and 0 < manifest["catalogue_coverage"] <= 1


def test_tampered_model_is_refused_and_nothing_is_written(trained, tmp_path):
    from flows.scoring import batch_scoring

    store_uri, _, report = trained
    store = open_store(store_uri)
    key = f"models/{report['champion']['version']}/model.onnx"
    original = store.get_bytes(key)
    pd.DataFrame({"user_id": ["u"], "item_id": ["i"]}).to_csv(tmp_path / "p.csv", index=False)
    try:
        store.put_bytes(key, original[:-10] + b"0123456789")
        state = batch_scoring(
            _params(store_uri, tmp_path, pairs=str(tmp_path / "p.csv"), out=(tmp_path / "out").as_uri()),
            return_state=True,
        )
        assert state.is_failed()
        with pytest.raises(StoreError, match="sha256"):
            state.result()
    finally:
        store.put_bytes(key, original)
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "swork").glob("*/bundle/model.onnx"))


def test_a_failing_chunk_leaves_no_output(trained, tmp_path, monkeypatch):
    from flows.scoring import batch_scoring
    from musicrec.scoring import jobs

    store_uri, ws, _ = trained
    test = pd.read_parquet(ws.splits / "test.parquet", columns=["user_id", "item_id"]).head(100)
    test.to_parquet(tmp_path / "pairs.parquet")
    real = jobs.score_pairs

    def flaky(bundle, pairs, batch_size):
        if pairs.index[0] >= 50:
            raise OSError("disk full while scoring the second chunk")
        return real(bundle, pairs, batch_size)

    monkeypatch.setattr(jobs, "score_pairs", flaky)
    out_uri = (tmp_path / "out").as_uri()
    state = batch_scoring(
        _params(store_uri, tmp_path, pairs=str(tmp_path / "pairs.parquet"), chunk_rows=50, out=out_uri),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(StoreError):
        read_output(open_store(out_uri), "")
    assert json.dumps(open_store(out_uri).list("")) == "[]"
