"""Bad input: each broken file fails with one clear message, or is repaired and the repair is reported.

Every case runs through the functions the training flow calls (ingest, then the split); a representative
subset, at least one per failure kind, runs through `musicrec train` as a real subprocess (slow).
Policy table: docs/bad-input.md."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from corpus import CASES, Case, _attack, meta_2014, pwned_marker

from musicrec.data.split import split_ratings
from musicrec.errors import DataError, MusicrecError, ValidationFailed
from musicrec.pipeline.ingest import ingest
from musicrec.pipeline.workspace import Workspace

REPO = Path(__file__).parents[2]


def _ingest_and_split(case: Case, tmp: Path) -> tuple[dict, Workspace]:
    """What the flow does before training: read + validate (ingest), then split."""
    ws = Workspace.create(tmp / "work", "run")
    run = ingest(ws, case.reviews, case.meta, rating_range=case.rating_range)
    split_ratings(pd.read_parquet(ws.ratings), seed=0)
    return run, ws


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_follows_its_policy(name: str, tmp_path: Path) -> None:
    case = CASES[name](tmp_path)
    if case.outcome == "fail":
        with pytest.raises(MusicrecError) as info:
            _ingest_and_split(case, tmp_path)
        message = str(info.value)
        expected = {"read": DataError, "validate": ValidationFailed}[case.stage]
        assert isinstance(info.value, expected), message
        assert str(case.culprit) in message and "what to do: " in message
        for fragment in case.says:
            assert fragment in message, message
        written = [
            n for n in ("ratings.parquet", "rating_scale.json") if (tmp_path / "work" / "run" / n).exists()
        ]
        assert written == []  # nothing written for training
    else:
        run, _ = _ingest_and_split(case, tmp_path)
        notes = run["read"]["notes"]
        if case.outcome == "ok":
            assert notes == [] and run["read"]["bad_lines"] == 0 and run["ratings"] == 400
        for fragment in case.says:
            assert any(fragment in n for n in notes), notes
        assert all(n.startswith(str(tmp_path)) for n in notes), notes  # each note names its file
    assert not pwned_marker(tmp_path).exists()


def test_corpus_covers_the_issue() -> None:
    assert len(CASES) >= 15


def test_duplicates_keep_the_latest_review_and_count_the_rest(tmp_path: Path) -> None:
    run, ws = _ingest_and_split(CASES["duplicate_pairs"](tmp_path), tmp_path)
    ratings = pd.read_parquet(ws.ratings)
    assert run["read"]["duplicates_dropped"] == 30 and len(ratings) == 400
    assert (ratings["timestamp"] >= 1_400_000_000).all()  # every older copy was the one dropped


def test_bad_utf8_is_replaced_and_huge_text_kept(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    _, ws = _ingest_and_split(CASES["non_utf8_review_text"](tmp_path / "a"), tmp_path / "a")
    assert pd.read_parquet(ws.ratings)["review_text"].str.contains("\ufffd").sum() == 3
    (tmp_path / "c").mkdir()
    _, ws = _ingest_and_split(CASES["latin1_reviews"](tmp_path / "c"), tmp_path / "c")
    text = pd.read_parquet(ws.ratings)["review_text"]
    assert text.str.contains("café crème").sum() == 134 and not text.str.contains("\ufffd").any()
    _, ws = _ingest_and_split(CASES["enormous_review_text"](tmp_path / "b"), tmp_path / "b")
    assert pd.read_parquet(ws.ratings)["review_text"].str.len().max() >= 10_000_000


def test_split_refuses_too_few_rows() -> None:
    tiny = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i", "i"], "rating": [1.0, 5.0]})
    with pytest.raises(DataError, match="2 ratings are too few to split"):
        split_ratings(tiny)


# --- the real command, as a subprocess (slow) ---------------------------------------------------------------

CLI_FAILURES = {  # case -> whether a store with a champion exists beforehand
    "empty_file": False,
    "truncated_gz": True,
    "meta_2014_calls_function": True,
    "rating_six": True,
    "too_small_to_split": False,
}
CLI_PARALLEL = 2  # more at once only contend for the 2 CPUs


def _env(home: Path, api: str) -> dict[str, str]:
    """A child's environment: its own Prefect home, the session's Prefect server (api: its URL)."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("MUSICREC_DEBUG", None)
    return env


def _train(case: Case, root: Path, store: Path, api: str, *extra: str) -> subprocess.Popen[bytes]:
    """Start `musicrec train` with stdout and stderr to files in root (a pipe could fill while it waits)."""
    args = [sys.executable, "-m", "musicrec", "train", "--store", store.as_uri()]
    args += [a for p in case.reviews for a in ("--reviews", str(p))]
    args += [a for p in case.meta for a in ("--meta", str(p))]
    args += ["--rating-range", ",".join(map(str, case.rating_range))] if case.rating_range else []
    with (root / "stdout.txt").open("wb") as out, (root / "stderr.txt").open("wb") as err:
        return subprocess.Popen(
            [*args, *extra], stdout=out, stderr=err, env=_env(root / "prefect_home", api), cwd=root
        )


def _seed_store(store: Path) -> None:
    (store / "models").mkdir(parents=True)
    (store / "models" / "champion.json").write_text(json.dumps({"version": "v-old", "name": "gmf"}))


def _snapshot(store: Path) -> dict[str, bytes] | None:
    return (
        {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}
        if store.exists()
        else None
    )


def _repaired_case(root: Path) -> Case:
    """The generator's small sample with several repairable faults at once, and a plain file named .gz."""
    from musicrec.data.generate import generate_sample

    generate_sample(root / "sample", "small", seed=1)
    rows = gzip.decompress((root / "sample" / "reviews.json.gz").read_bytes()).split(b"\n")
    rows[99] = b'{"overall": 5.0, "reviewerID": '  # line 100: cut off
    rows[199] = rows[199].replace(b'"reviewText":"', b'"reviewText":"caf\xe9 \xff ', 1)
    rows[198] = rows[198].replace(b'"reviewText":"', '"reviewText":"naïve '.encode(), 1)  # UTF-8 text: so
    assert b"\xff" in rows[199] and "ï".encode() in rows[198]  # the file is UTF-8 with one damaged line
    (root / "reviews.json.gz").write_bytes(b"\n".join(rows))
    meta = [meta_2014(f"X{i:04d}", f"other {i}") for i in range(10)]
    meta.insert(4, _attack(root))
    (root / "meta2014.json").write_bytes(b"\n".join(meta) + b"\n")
    return Case(
        [root / "reviews.json.gz"],
        [root / "sample" / "meta.json.gz", root / "meta2014.json"],
        outcome="repair",
    )


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory, prefect_api_url: str) -> dict[str, dict]:
    """Run the CLI cases, CLI_PARALLEL at a time against the session Prefect server; collect results."""
    todo = []
    for name, seeded in [("repaired", False), *CLI_FAILURES.items()]:  # the long run first
        root = tmp_path_factory.mktemp(name)
        case = _repaired_case(root) if name == "repaired" else CASES[name](root)
        store = root / "store"
        if seeded:
            _seed_store(store)
        todo.append({"name": name, "root": root, "case": case, "store": store, "before": _snapshot(store)})
    # gmf_logistic trains in a few epochs on a small sample, so the repaired run publishes a champion; one
    # retrieval model (the default selection trains in the quick_champion fixture)
    extra = (
        "--models",
        "gmf_logistic",
        "--retrieval-models",
        "implicit_pointwise",
        "--overrides",
        '{"gmf_logistic": {"epochs": 4}}',
    )
    running: list[dict] = []
    done: list[dict] = []
    while todo or running:
        while todo and len(running) < CLI_PARALLEL:
            run = todo.pop(0)
            run["proc"] = _train(
                run["case"],
                run["root"],
                run["store"],
                prefect_api_url,
                *extra,
                "--report",
                str(run["root"] / "report.json"),
            )
            run["t0"] = time.monotonic()
            running.append(run)
        time.sleep(0.5)
        for run in [r for r in running if r["proc"].poll() is not None or time.monotonic() - r["t0"] > 600]:
            if run["proc"].poll() is None:
                run["proc"].kill()
            run["proc"].wait()
            run["out"] = (run["root"] / "stdout.txt").read_text(errors="replace")
            run["err"] = (run["root"] / "stderr.txt").read_text(errors="replace")
            running.remove(run)
            done.append(run)
    return {r["name"]: r for r in done}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLI_FAILURES))
def test_cli_fails_with_one_clear_message_and_leaves_the_store(cli_runs: dict[str, dict], name: str) -> None:
    run = cli_runs[name]
    case, out, err = run["case"], run["out"], run["err"]
    assert run["proc"].returncode == 2, err[-3000:]
    assert "Traceback" not in out + err
    assert err.count("error: ") == 1, err[-3000:]
    message = err[err.index("error: ") :]
    assert str(case.culprit) in message and "what to do: " in message
    for fragment in case.says:
        assert fragment in message, message
    assert _snapshot(run["store"]) == run["before"]  # no store created; a champion pointer is unchanged
    assert not pwned_marker(run["root"]).exists()


@pytest.mark.slow
def test_cli_repairs_and_says_what_it_dropped(cli_runs: dict[str, dict]) -> None:
    run = cli_runs["repaired"]
    assert run["proc"].returncode == 0, run["err"][-3000:]
    assert "Traceback" not in run["out"] + run["err"]
    expected = [
        ("reviews.json.gz", "dropped 1 invalid JSON line(s)"),
        ("reviews.json.gz", "first at line(s) 100"),
        ("reviews.json.gz", "1 line(s) had non-UTF-8 bytes"),
        ("reviews.json.gz", "duplicate (user, item)"),
        ("meta2014.json", "dropped 1 invalid Python-literal line(s)"),
        ("meta2014.json", "it was not run"),
        ("meta2014.json", "warning: none of the 10 metadata item(s) match"),
    ]
    printed = [ln for ln in run["out"].splitlines() if ln.startswith("input: ")]
    notes = json.loads((run["root"] / "report.json").read_text())["read"]["notes"]
    for file, fragment in expected:
        assert any(file in n and fragment in n for n in printed), printed
        assert any(file in n and fragment in n for n in notes), notes
    assert not pwned_marker(run["root"]).exists()
    assert (run["store"] / "models" / "champion.json").exists()  # it trained and published as usual
