"""The real-file cases of tests/test_real_files.py go on to train: split, Word2Vec (or none: no text at all),
a model of each kind, predictions in the run's own rating range, and the user/item counts carried through."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_real_files import REAL_CSV, csv_lines, rows, write

from musicrec.pipeline import prepare, train
from musicrec.pipeline.ingest import ingest
from musicrec.pipeline.workspace import Workspace

pytestmark = pytest.mark.slow
HALF = [0.5 * (1 + k % 10) for k in range(60)]
TENS = [float(1 + k % 10) for k in range(60)]


def _case(tmp_path: Path, case: str) -> tuple[Path, dict]:
    if case == "real ratings-only csv":
        return Path(shutil.copy(REAL_CSV, tmp_path / REAL_CSV.name)), {}
    if case == "aliases":
        return write(tmp_path / "r.csv", csv_lines("userId,songId,stars,timestamp", rows())), {}
    if case == "columns":
        lines = csv_lines(None, rows(), order="iurt")
        return write(tmp_path / "r.csv", ["track,listener,grade,when", *lines]), {
            "columns": {"user": "listener", "item": "track", "rating": "grade", "timestamp": "when"}
        }
    if case == "half stars":
        return write(tmp_path / "r.csv", csv_lines("user_id,item_id,rating,timestamp", rows(HALF))), {}
    if case == "1-10":
        return write(tmp_path / "r.csv", csv_lines("user_id,item_id,rating,timestamp", rows(TENS))), {}
    options = {"bom": {"bom": True}, "crlf": {"newline": "\r\n"}, "latin-1": {"encoding": "latin-1"}}[case]
    return write(
        tmp_path / "r.csv",
        csv_lines("reviewerID,asin,overall,unixReviewTime,reviewText", rows(), extra=",café au lait"),
        **options,
    ), {}


@pytest.mark.parametrize(
    "case", ["real ratings-only csv", "aliases", "columns", "half stars", "1-10", "bom", "crlf", "latin-1"]
)
def test_the_file_trains(tmp_path: Path, case: str) -> None:
    path, kw = _case(tmp_path, case)
    ws = Workspace.create(tmp_path / "work", "run")
    run = ingest(ws, [path], **kw)
    prep = prepare.prepare(ws, seed=0)
    data = prepare.load_train_data(ws)
    lo, hi = run["rating_range"]
    assert data.rating_range == (lo, hi)
    split = prep["split"]
    assert split["train"] + split["validation"] + split["test"] == run["ratings"]
    train_users = len(set(prepare.read_splits(ws.splits).train["user_id"]))
    assert data.users.size - 1 == train_users <= run["users"]  # index 0 is the unknown user
    for name in ("gmf", "w2v_mlp"):  # w2v_mlp trains on zero text vectors when the file has no text
        row = train.train_one(ws, name, {"epochs": 2}, data=data)
        assert row["val_rmse"] == row["val_rmse"]  # finite
        model = train.load_model(ws, name, data)
        with torch.no_grad():
            out = model(torch.arange(0, 5), torch.arange(0, 5))
        assert bool(((out >= lo) & (out <= hi)).all())
    if case == "real ratings-only csv":
        assert (run["users"], run["items"]) == (1_429, 900)
        assert prep["word2vec"]["vocabulary"] == 0 and "all-zero text vectors" in prep["word2vec"]["note"]


def test_models_without_text_train_before_word2vec_on_the_same_item_index(
    tmp_path: Path, small_sample
) -> None:
    """The training flow runs Word2Vec beside the models that use no text: they need only the split, and the
    item index they are saved with is the one the bundle later loads them with (text included)."""
    sample, _ = small_sample
    ws = Workspace.create(tmp_path / "work", "run")
    ingest(ws, [sample / "reviews.json.gz"], [sample / "meta.json.gz"])
    prepare.split(ws, seed=0)
    assert not ws.item_vectors.exists()
    early = prepare.load_train_data(ws, text=False)
    assert early.item_text is None
    row = train.train_one(ws, "gmf", {"epochs": 2})  # gmf uses no text: it does not wait for the vectors
    assert row["best_epoch"] >= 1
    with pytest.raises(FileNotFoundError):
        train.train_one(ws, "w2v_mlp", {"epochs": 1})  # w2v_mlp does
    info = prepare.embed(ws, seed=0)
    assert info["items_with_text"] > 0
    full = prepare.load_train_data(ws)
    assert list(full.items.ids) == list(early.items.ids) and full.item_text.shape[0] == full.items.size
    cold = set(full.items.ids) - set(prepare.read_splits(ws.splits).train["item_id"])
    assert cold  # items with text but no training rating are in the index before Word2Vec ran
    train.load_model(ws, "gmf", full)  # the saved weights fit the text-included index
