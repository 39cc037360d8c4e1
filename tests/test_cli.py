"""The musicrec command as users run it: a real subprocess, exit codes, one clear message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from musicrec.cli import main


def _musicrec(*args: str, home: Path, api: str) -> subprocess.CompletedProcess[str]:
    """`python -m musicrec` against the session's Prefect server (api: its URL)."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "musicrec", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=Path(__file__).parents[1],
    )


def test_sample_data_writes_files_and_card(tmp_path, capsys):
    assert main(["sample-data", str(tmp_path / "d"), "--scale", "small", "--seed", "3"]) == 0
    card = json.loads((tmp_path / "d" / "card.json").read_text())
    assert card["ratings"] == 20000 and card["seed"] == 3
    assert (tmp_path / "d" / "reviews.json.gz").stat().st_size > 0
    assert "20,000 ratings" in capsys.readouterr().out


def test_bad_model_name_is_one_clear_message(capsys):
    assert main(["train", "--reviews", "x.json", "--models", "gmf,svd"]) == 2
    err = capsys.readouterr().err
    assert "unknown model(s) ['svd']" in err and "Traceback" not in err


# A mistake never starts Prefect: musicrec.cli.main in a fresh interpreter, which
# then reports whether Prefect was imported at all.
_PROBE = (
    "import sys; from musicrec.cli import main; rc = main(sys.argv[1:]); "
    "print('prefect imported' if 'prefect' in sys.modules else 'no prefect'); sys.exit(rc)"
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("mistakes")
    (d / "ratings.csv").write_text("user_id,item_id,rating\nu1,i1,5\nu2,i1,4\n")
    (d / "users.csv").write_text("user\nu1\n")
    (d / "plays.dat").write_text("userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n")
    return d


MISTAKES = {
    "gs-store": (
        ["train", "--reviews", "{d}/ratings.csv", "--store", "gs://bucket/x"],
        "unsupported store URI",
    ),
    "misspelt-override-model": (
        [
            "train",
            "--reviews",
            "{d}/ratings.csv",
            "--models",
            "gmf",
            "--overrides",
            '{{"gmff": {{"epochs": 2}}}}',
        ],
        "unknown model 'gmff'",
    ),
    "epochs-five": (
        [
            "train",
            "--reviews",
            "{d}/ratings.csv",
            "--models",
            "gmf",
            "--overrides",
            '{{"gmf": {{"epochs": "five"}}}}',
        ],
        "epochs='five'",
    ),
    "unknown-hyperparameter": (
        [
            "train",
            "--reviews",
            "{d}/ratings.csv",
            "--models",
            "gmf",
            "--overrides",
            '{{"gmf": {{"epochz": 2}}}}',
        ],
        "unknown hyperparameter(s) epochz",
    ),
    "empty-models": (["train", "--reviews", "{d}/ratings.csv", "--models", ","], "names no model"),
    "play-counts-without-retrieval-models": (
        ["train", "--reviews", "{d}/plays.dat", "--retrieval-models", "none"],
        "plays.dat: column 'weight' holds play counts",
    ),
    "mapped-counts-without-retrieval-models": (
        [
            "train",
            "--reviews",
            "{d}/ratings.csv",
            "--columns",
            "user=1,item=2,weight=3",
            "--retrieval-models",
            "none",
        ],
        "--columns weight=3 holds play counts",
    ),
    "missing-reviews": (["train", "--reviews", "{d}/nope.json"], "nope.json: does not exist"),
    "bad-columns": (
        ["train", "--reviews", "{d}/ratings.csv", "--columns", "user=a,item=b"],
        "the column 'a' given for user_id is not in the file",
    ),
    "bad-rating-range": (["train", "--reviews", "{d}/ratings.csv", "--rating-range", "5"], "is not MIN,MAX"),
    "parallel-tasks-negative": (
        ["train", "--reviews", "{d}/ratings.csv", "--parallel-tasks", "-1"],
        "--parallel-tasks -1: must be at least 0",
    ),
    "tune-trials-0": (
        ["tune", "--reviews", "{d}/ratings.csv", "--trials", "0"],
        "--trials 0: must be at least 1",
    ),
    "tune-negative-timeout": (
        ["tune", "--reviews", "{d}/ratings.csv", "--timeout", "-5"],
        "--timeout must be",
    ),
    "tune-unknown-model": (["tune", "--reviews", "{d}/ratings.csv", "--models", "svd"], "svd"),
    "top-n-0": (
        ["score", "--all-users", "--top-n", "0", "--store", "{d}/store"],
        "--top-n 0: must be at least 1",
    ),
    "unknown-version": (
        ["score", "--all-users", "--version", "v9", "--store", "{d}/store"],
        "no model version 'v9'",
    ),
    "no-champion": (["score", "--all-users", "--store", "{d}/store"], "no champion in"),
    "missing-pairs": (
        ["score", "--pairs", "{d}/pairs.csv", "--store", "{d}/store"],
        "pairs.csv: does not exist",
    ),
    "users-without-user-id": (["score", "--users", "{d}/users.csv", "--store", "{d}/store"], "['user_id']"),
    "unknown-run": (["evaluate", "--run", "r1", "--store", "{d}/store"], "no run 'r1'"),
    "recommend-no-champion": (["recommend", "u1", "--store", "{d}/store"], "no champion in"),
    "champion-none": (["champion", "--store", "{d}/store"], "no champion in"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_each_mistake_is_one_message_before_prefect_starts(case, inputs):
    argv, expected = MISTAKES[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICREC_")}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *(a.format(d=inputs) for a in argv)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=inputs,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("error:") == 1 and expected in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and "what to do:" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout.strip() == "no prefect"


def test_a_bad_musicrec_variable_is_one_message(monkeypatch, capsys):
    monkeypatch.setenv("MUSICREC_S3_MAX_ATTEMPTS", "many")
    assert main(["runs", "--store", "s3://bucket/p"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "MUSICREC_S3_MAX_ATTEMPTS='many'" in err


def test_prefect_defaults_respect_the_user(monkeypatch, tmp_path):
    from musicrec.preflight import PREFECT_DEFAULTS, STARTUP_TIMEOUT, prefect_defaults

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    for name in PREFECT_DEFAULTS:
        monkeypatch.setenv(name, "x")  # so that monkeypatch restores what prefect_defaults() sets
        monkeypatch.delenv(name)
    (tmp_path / "profiles.toml").write_text('active = "mine"\n[profiles.mine]\nDO_NOT_TRACK = "0"\n')
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    prefect_defaults()
    assert os.environ[STARTUP_TIMEOUT] == "120"  # Prefect's 20 s is too short for a first start on 2 cores
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"  # the user's own choice stays
    assert "DO_NOT_TRACK" not in os.environ  # set in the active profile: Prefect reads it from there


def test_a_prefect_startup_timeout_says_what_to_do(monkeypatch, capsys, tmp_path):
    from musicrec import cli

    def slow_start(args):
        raise RuntimeError(
            "Timed out while attempting to connect to ephemeral Prefect API server. stdout: ..."
        )

    monkeypatch.setitem(cli.COMMANDS, "runs", slow_start)
    assert main(["runs", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in err
    assert "PREFECT_API_URL" in err and "stdout" not in err


@pytest.mark.slow
def test_train_on_invalid_data_exits_nonzero_without_traceback(tmp_path, prefect_api_url):
    bad = tmp_path / "ratings.csv"
    bad.write_text("\n".join(f"I{k % 25},U{k % 40},{7 if k % 10 == 0 else 4},1400000000" for k in range(400)))
    store = tmp_path / "store"
    # 10% sevens alone would read as a 1-10 scale; with the scale fixed to 1-5 they break validation
    proc = _musicrec(
        "train",
        "--reviews",
        str(bad),
        "--store",
        store.as_uri(),
        "--rating-range",
        "1,5",
        home=tmp_path / "ph",
        api=prefect_api_url,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    last = proc.stderr[proc.stderr.index("error: ") :]
    assert str(bad) in last and "expect_column_values_to_be_between" in last and "what to do" in last
    assert not store.exists()


def test_the_cli_offers_exactly_the_registered_models():
    """The CLI keeps its own list (parsing arguments must not import torch); it must match the registry."""
    from musicrec.cli import MODEL_NAMES
    from musicrec.registry import names

    MODELS = names("rating")

    assert MODEL_NAMES == list(MODELS)


def test_the_promotion_decision_is_printed_from_the_report():
    from musicrec.results import promotion_summary

    report = {
        "champion": {"name": "mlp", "version": "r2-mlp"},
        "promotion": {
            "compared_rows": 1234,
            "incumbent_rmse": 0.91,
            "challenger_rmse": 0.93,
            "promoted": False,
            "reason": "worse than the champion on rows neither fitted",
            "incumbent_version": "r1-w2v",
        },
    }
    text = promotion_summary(report)
    assert "mlp (r2-mlp): published, not promoted: worse than the champion" in text
    assert "compared with r1-w2v on 1,234 rows: incumbent RMSE 0.9100, challenger RMSE 0.9300" in text
    older = {"champion": {"name": "mlp", "version": "r2-mlp"}, "promoted": True, "previous_test_rmse": None}
    assert "promoted to champion: no earlier champion" in promotion_summary(older)
    older.update(
        promoted=False,
        previous_test_rmse=0.8,
        previous_version="r1-w2v",
        models=[{"name": "mlp", "test_rmse": 0.9}],
    )
    assert "compared with r1-w2v: incumbent RMSE 0.8000, challenger RMSE 0.9000" in promotion_summary(older)
    assert "champion: none" in promotion_summary({"champion": {"name": None}, "promoted": False})


def test_an_evaluated_bundle_that_is_not_the_champion_is_not_called_one():
    from musicrec.results import mark_champion

    result = {
        "version": "r1-mlp",
        "model": "mlp",
        "methods": [{"method": "champion (mlp)"}, {"method": "most_popular"}],
    }
    other = mark_champion(result, "r2-w2v_mlp")
    assert other["is_champion"] is False and other["current_champion"] == "r2-w2v_mlp"
    assert [m["method"] for m in other["methods"]] == ["evaluated (mlp, not the champion)", "most_popular"]
    same = mark_champion(result, "r1-mlp")
    assert same["is_champion"] is True and same["methods"][0]["method"] == "champion (mlp)"
    assert mark_champion(result, None)["is_champion"] is False


@pytest.mark.slow
def test_no_refit_serves_the_held_out_fit_and_evaluate_measures_its_lists(tmp_path, prefect_api_url):
    """On the real MI ratings: `train --no-refit` publishes the models fitted on the training parts, so
    `evaluate` measures the served retrieve-then-rank lists on held-out items, and they beat most-popular."""
    from test_real_files import REAL_CSV

    data = Path(shutil.copy(REAL_CSV, tmp_path / REAL_CSV.name))
    store, home = tmp_path / "store", tmp_path / "ph"
    proc = _musicrec(
        "train",
        "--reviews",
        str(data),
        "--store",
        store.as_uri(),
        "--models",
        "nnmf",
        "--retrieval-models",
        "implicit_bpr,implicit_hinge",
        "--no-refit",
        "--report",
        str(tmp_path / "report.json"),
        home=home,
        api=prefect_api_url,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    meta = json.loads((store / "models" / report["champion"]["version"] / "metadata.json").read_text())
    assert "refit" not in report and meta["retrieval"]["fitted_on"]["splits"] == ["train"]
    assert meta["retrieval"]["model"] == report["retrieval"]["champion"]
    proc = _musicrec(
        "evaluate", "--run", report["run_id"], "--store", store.as_uri(), home=home, api=prefect_api_url
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranking = json.loads((store / "runs" / report["run_id"] / "ranking.json").read_text())
    assert ranking["note"] == ""  # a held-out measurement: nothing served was fitted on these test items
    methods = {m["method"].split(" (")[0]: m for m in ranking["methods"]}
    served = methods["served: retrieve-then-rank"]
    assert served["ndcg@10"] > 1.1 * methods["most_popular"]["ndcg@10"]
    champion = next(r for r in report["retrieval"]["models"] if r["name"] == report["retrieval"]["champion"])
    assert served["ndcg@10"] == pytest.approx(champion["test_ndcg_at_10"], abs=0.003)  # the same lists
