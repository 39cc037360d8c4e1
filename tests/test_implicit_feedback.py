"""Implicit feedback as an input (musicrec.data.feedback): auto detection, confidence weights, the
interactions suite, tags as item text (musicrec.data.tags), and the real Last.fm files through `musicrec
train`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_process import command_env

from musicrec.data.feedback import confidence_weights, decide_feedback
from musicrec.data.scales import UnknownRatingScale
from musicrec.data.tags import tag_assignments, tag_docs, with_tag_text
from musicrec.errors import DataError
from musicrec.pipeline.ingest import ingest
from musicrec.pipeline.prepare import items_with_tags, ranking_split
from musicrec.pipeline.workspace import Workspace

DATA = (
    Path("/work/shared/data")
    if Path("/work/shared/data").is_dir()
    else Path(__file__).parents[2] / "shared/data"
)
LASTFM = DATA / "hetrec2011_lastfm_2k"
needs_lastfm = pytest.mark.skipif(
    not LASTFM.is_dir(), reason="../shared/data/hetrec2011_lastfm_2k not present"
)
ROOT = Path(__file__).resolve().parents[1]


def test_auto_is_implicit_for_named_counts_pairs_and_values_off_every_scale() -> None:
    stars = pd.Series([1.0, 2.0, 5.0, 4.0, 3.0] * 10)
    plays = pd.Series([1.0, 7.0, 352_698.0, 12.0])
    named, scale = decide_feedback(stars, ["u.dat: its value column is named like a count"])
    assert named.implicit and "named like a count" in named.reason and scale is None
    off, _ = decide_feedback(plays, [])
    assert off.implicit and "fit no rating scale" in off.reason and "352698" in off.reason
    ratings, scale = decide_feedback(stars, [])
    assert not ratings.implicit and scale is not None and scale.name == "1-5 stars"
    asked, _ = decide_feedback(stars, [], "implicit", alpha=0.5)
    assert asked.implicit and asked.alpha == 0.5 and "0.5 * log" in asked.describe()
    with pytest.raises(UnknownRatingScale):
        decide_feedback(plays, ["plays"], "explicit")
    given, scale = decide_feedback(plays, [], fixed=(0.0, 400_000.0))
    assert not given.implicit and scale is not None and scale.source == "fixed"


def test_confidence_is_one_plus_alpha_log_one_plus_count_and_none_when_all_equal() -> None:
    w = confidence_weights(np.array([0.0, 1.0, 999.0]), alpha=2.0)
    assert w is not None and w.dtype == np.float32
    assert w.tolist() == pytest.approx([1.0, 1 + 2 * np.log(2.0), 1 + 2 * np.log(1000.0)])
    assert (
        confidence_weights(np.ones(5)) is None and confidence_weights(np.array([1.0, 9.0]), alpha=0) is None
    )


def _plays(tmp_path: Path, value: str = "plays", pairs: bool = False) -> Path:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 600), rng.integers(0, 80, 600)
    df = pd.DataFrame({"userID": users, "artistID": items, value: rng.integers(1, 5000, 600)})
    df = df.drop_duplicates(["userID", "artistID"])
    path = tmp_path / "plays.tsv"
    (df.drop(columns=value) if pairs else df).to_csv(path, sep="\t", index=False)
    return path


@pytest.mark.parametrize("pairs", [False, True])
def test_ingest_validates_counts_and_pairs_with_the_interactions_suite(tmp_path: Path, pairs: bool) -> None:
    """All-equal values (pairs) would fail the ratings suite; the interactions suite takes them."""
    ws = Workspace.create(tmp_path / "work", "run")
    run = ingest(ws, [_plays(tmp_path, pairs=pairs)], confidence_alpha=0.5)
    assert run["feedback"]["kind"] == "implicit" and run["feedback"]["alpha"] == 0.5
    assert (
        "interactions" in ws.read_json("validation.json") and ws.read_json("feedback.json") == run["feedback"]
    )
    assert not run["has_times"] and any("seeded random" in n for n in run["read"]["notes"])


def test_negative_counts_fail_the_interactions_suite(tmp_path: Path) -> None:
    path = _plays(tmp_path)
    df = pd.read_csv(path, sep="\t")
    df.loc[3, "plays"] = -4
    df.to_csv(path, sep="\t", index=False)
    with pytest.raises(Exception, match="weight"):
        ingest(Workspace.create(tmp_path / "work", "run"), [path])


def test_explicit_on_counts_names_the_implicit_flag(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--feedback implicit"):
        ingest(
            Workspace.create(tmp_path / "work", "run"), [_plays(tmp_path, value="score")], feedback="explicit"
        )


@needs_lastfm
def test_lastfm_tags_become_item_text_latin_1_decoded(tmp_path: Path) -> None:
    tags = Path(shutil.copy(LASTFM / "user_taggedartists.dat", tmp_path))
    names = Path(shutil.copy(LASTFM / "tags.dat", tmp_path))
    assigned, stats = tag_assignments(tags, names)
    docs = tag_docs(assigned)
    assert stats[1].encoding != "utf-8" and any("not UTF-8" in n for n in stats[1].notes)
    text = " ".join(docs["text"])
    assert "tropicália" in text and "rock français" in text and "\ufffd" not in text
    assert len(docs) > 12_000 and docs["item_id"].is_unique
    items = pd.DataFrame(
        {
            "item_id": ["89", "nope"],
            "title": ["Lady Gaga", "x"],
            "brand": "",
            "description": ["", "old"],
            "also_bought": [[], []],
        }
    )
    out = with_tag_text(items, docs).set_index("item_id")
    assert out.loc["89", "title"] == "Lady Gaga" and "pop" in out.loc["89", "description"]
    assert out.loc["nope", "description"] == "old" and len(out) == len(items) + len(docs) - 1


def test_a_held_out_interactions_tags_never_reach_the_items_text(tmp_path: Path) -> None:
    """Every interaction tagged with a tag of its own, one more tag on a pair that is no interaction: the
    items' text holds the training interactions' tags and that one, none of a held-out interaction's."""
    plays = _plays(tmp_path)
    pairs = pd.read_csv(plays, sep="\t")[["userID", "artistID"]].astype(str).to_numpy().tolist()
    pairs.append(["999", pairs[0][1]])  # a user who never played the artist tags it
    names = [f"u{u}i{i}" for u, i in pairs]
    tags, tag_names = tmp_path / "tagged.dat", tmp_path / "tags.dat"
    tags.write_text(
        "userID\tartistID\ttagID\n" + "".join(f"{u}\t{i}\t{k}\n" for k, (u, i) in enumerate(pairs))
    )
    tag_names.write_text("tagID\ttagValue\n" + "".join(f"{k}\t{n}\n" for k, n in enumerate(names)))
    ws = Workspace.create(tmp_path / "work", "run")
    ingest(ws, [plays], tags=str(tags), tag_names=str(tag_names))
    ratings = pd.read_parquet(ws.ratings)
    later = ranking_split(ws)
    held = {
        f"u{u}i{i}" for u, i in pd.concat([later.validation, later.test])[["user_id", "item_id"]].to_numpy()
    }
    assert len(held) >= 40 and pd.read_parquet(ws.items)["description"].eq("").all()

    def text(train: pd.DataFrame) -> set[str]:
        found = items_with_tags(ws, train)["description"]
        return {name for d in found for name in d.split(", ") if name}

    everything = text(ratings)
    assert everything == set(names) - held  # a leave-last-out held-out pair's tag is left out, the rest kept
    assert f"u999i{pairs[0][1]}" in everything
    row = next(
        k for k, (u, i) in enumerate(ratings[["user_id", "item_id"]].to_numpy()) if f"u{u}i{i}" not in held
    )
    u, i = ratings.iloc[row][["user_id", "item_id"]]
    assert f"u{u}i{i}" in everything and f"u{u}i{i}" not in text(
        ratings.drop(index=ratings.index[row])
    )  # a pair the rating split holds out


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "musicrec", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@needs_lastfm
def test_lastfm_trains_retrieval_only_and_recommends_artist_names(
    tmp_path: Path, prefect_api_url: str
) -> None:
    """The real Last.fm files (users 2-400 of user_artists.dat) through `musicrec train`: rating models
    skipped in one line, a retrieval-only bundle published whose recommend prints artist names and whose
    score --pairs returns relevance scores; a second run is compared with it by NDCG@10 on the test users
    whose held-out item it never fitted on (it was not refit)."""
    plays = pd.read_csv(LASTFM / "user_artists.dat", sep="\t")
    plays[plays["userID"] < 400].to_csv(tmp_path / "user_artists.dat", sep="\t", index=False)
    for name in ("artists.dat", "user_taggedartists.dat", "tags.dat"):
        shutil.copy(LASTFM / name, tmp_path)
    env = {**command_env(tmp_path, api=prefect_api_url), "PYTHONPATH": str(ROOT)}
    store = str(tmp_path / "store")
    d = tmp_path
    train = [
        "train",
        "--store",
        store,
        "--reviews",
        str(d / "user_artists.dat"),
        "--meta",
        str(d / "artists.dat"),
        "--retrieval-models",  # the default selection trains in the quick_champion fixture
        "implicit_bpr,als",
    ]
    tags = ["--tags", str(d / "user_taggedartists.dat"), "--tag-names", str(d / "tags.dat")]
    out = _cli([*train, *tags, "--no-refit"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("rating models skipped: implicit feedback") == 1 and "val_rmse" not in out.stdout
    assert "promoted to champion" in out.stdout and "seeded random" in out.stdout
    (run_id,) = [r.name for r in (d / "store" / "runs").iterdir()]  # its splits are in the store: evaluable
    assert (d / "store" / "runs" / run_id / "ranking_splits" / "test.parquet").exists()
    evaluated = _cli(["evaluate", "--run", run_id, "--store", store], env)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    rec = _cli(["recommend", "2", "--store", store], env)
    assert rec.returncode == 0, rec.stderr[-2000:]
    artists = set(pd.read_csv(LASTFM / "artists.dat", sep="\t")["name"])
    shown = [line[line.rindex("  ") + 2 :] for line in rec.stdout.splitlines()[2:]]
    assert len(shown) == 10 and all(name in artists for name in shown), rec.stdout
    (d / "pairs.csv").write_text("user_id,item_id\n2,89\n2,51\n")
    scored = _cli(["score", "--pairs", str(d / "pairs.csv"), "--store", store, "--format", "csv"], env)
    assert scored.returncode == 0 and "is not a rating" in scored.stdout, scored.stderr[-2000:]
    part = next((d / "store" / "scores").rglob("*.csv"))
    assert list(pd.read_csv(part).columns[:3]) == ["user_id", "item_id", "relevance_score"]
    again = _cli(train, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "test users whose held-out item the incumbent never fitted on" in again.stdout, again.stdout
    runs = _cli(["runs", "--store", store], env)  # an implicit run's champion is judged by NDCG@10
    first = next(line for line in runs.stdout.splitlines() if line.startswith(run_id))
    assert runs.returncode == 0 and "NDCG@10" in first, runs.stdout
    val, test = (float(v) for v in first.split("NDCG@10")[1].split()[:2])
    assert 0 < val <= 1 and 0 < test <= 1, first


def test_tags_without_tag_names_is_refused_before_prefect(tmp_path: Path) -> None:
    tags = tmp_path / "tagged.dat"
    tags.write_text("userID\tartistID\ttagID\n2\t52\t13\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect")}
    out = _cli(["train", "--reviews", str(_plays(tmp_path)), "--tags", str(tags)], env)
    assert out.returncode == 2 and "--tags needs --tag-names" in out.stderr and "Traceback" not in out.stderr


def test_tune_searches_the_retrieval_models_on_play_counts(prefect_harness, tmp_path: Path) -> None:
    """Play counts train the retrieval models only: `musicrec tune` searches those (with the confidence
    weights the final fit uses) and leaves the rating models out, instead of refusing the input."""
    from flows.tuning import TuningParams, tuning

    plays = pd.read_csv(LASTFM / "user_artists.dat", sep="\t")
    plays[plays["userID"] < 300].to_csv(tmp_path / "user_artists.dat", sep="\t", index=False)
    store = tmp_path / "store"
    out = tuning(
        TuningParams(
            reviews=[str(tmp_path / "user_artists.dat")],
            store_uri=store.as_uri(),
            work_dir=str(tmp_path / "work"),
            retrieval_models=["implicit_bpr"],
            trials=2,
        )
    )
    assert [r["model"] for r in out["records"]] == ["implicit_bpr"]
    assert sorted(p.name for p in (store / "tuning").glob("*.json")) == ["implicit_bpr.json"]
    record = json.loads((store / "tuning" / "implicit_bpr.json").read_text())
    assert record["metric"] == "val_ndcg_at_10" and record["trials"] == 2
