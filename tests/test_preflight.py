"""The pre-flight checks as pure functions: each mistake
raises one MusicrecError naming it; good input parses."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from musicrec import preflight as pre
from musicrec.errors import ConfigError, DataError, MusicrecError
from musicrec.settings import SettingsError, get_settings
from musicrec.store import open_store


def test_models_parse_dedupe_and_refuse_empty_or_unknown():
    assert pre.parse_models(" gmf, mlp,gmf ") == ["gmf", "mlp"]
    with pytest.raises(pre.UsageError, match="names no model"):
        pre.parse_models(" , ")
    with pytest.raises(pre.UsageError, match=r"unknown model\(s\) \['svd'\]"):
        pre.parse_models("gmf,svd")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"gmff": {"epochs": 2}}', "--overrides: unknown model 'gmff'"),
        ('{"mlp": {"epochs": 2}}', "not among the models trained"),
        ('{"gmf": {"epochs": "five"}}', "epochs='five'"),
        ('{"gmf": {"epochz": 2}}', "unknown hyperparameter"),
        ('["gmf"]', "must be a JSON object"),
    ],
)
def test_bad_overrides_are_one_error(text, match):
    with pytest.raises(MusicrecError, match=match) as got:
        pre.parse_overrides(text, ["gmf"])
    assert isinstance(got.value, (ConfigError, pre.UsageError))


def test_good_overrides_pass_through():
    assert pre.parse_overrides('{"gmf": {"epochs": 2}}', ["gmf"]) == {"gmf": {"epochs": 2}}


def test_columns_and_rating_range():
    assert pre.parse_columns("user=a, item_id=b,rating=c,timestamp=d") == {
        "user": "a",
        "item": "b",
        "rating": "c",
        "timestamp": "d",
    }
    assert pre.parse_columns("") == {}
    for bad, match in [
        ("user=a,rating=b", "lacks item"),
        ("user=1,item=b", "mixes"),
        ("user=a,user=b,item=c,rating=d", "twice"),
        ("user:a,item=b,rating=c", "not NAME=COLUMN"),
        ("who=a,item=b,rating=c", "not NAME=COLUMN"),
    ]:
        with pytest.raises(pre.UsageError, match=match):
            pre.parse_columns(bad)
    assert pre.parse_rating_range("1,5") == [1.0, 5.0] and pre.parse_rating_range("") is None
    for bad in ("5,1", "1", "a,b", "1,inf"):
        with pytest.raises(pre.UsageError, match="--rating-range"):
            pre.parse_rating_range(bad)


def test_store_schemes(tmp_path):
    assert pre.check_store(str(tmp_path)).uri == tmp_path.as_uri()
    assert pre.check_store(tmp_path.as_uri()).uri == tmp_path.as_uri()
    for bad in ("gs://bucket/x", "file://host/x"):
        with pytest.raises(MusicrecError, match="unsupported"):
            pre.check_store(bad)


def test_inputs_exist_and_have_a_known_format(tmp_path):
    good = tmp_path / "ratings.csv"
    good.write_text("user_id,item_id,rating\nu1,i1,5\nu2,i1,4\n")
    pre.check_inputs([str(good)], [], {})
    with pytest.raises(pre.UsageError, match="does not exist"):
        pre.check_inputs([str(tmp_path / "nope.json")], [], {})
    with pytest.raises(pre.UsageError, match="is a folder"):
        pre.check_inputs([str(tmp_path)], [], {})
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01\x02" * 50)
    with pytest.raises(DataError):
        pre.check_inputs([str(junk)], [], {})
    with pytest.raises(DataError, match="does not take"):
        pre.check_inputs([], [str(good)], {})  # a ratings table given as metadata


def test_columns_are_checked_in_the_header_instead_of_the_format(tmp_path):
    custom = tmp_path / "custom.csv.gz"
    with gzip.open(custom, "wt") as fh:
        fh.write("listener,track,stars\nu1,i1,5\n")
    pre.check_inputs([str(custom)], [], {"user": "Listener", "item": "track", "rating": "stars"})  # any case
    with pytest.raises(DataError, match="the column 'score' given for rating is not in the file"):
        pre.check_inputs([str(custom)], [], {"user": "listener", "item": "track", "rating": "score"})


def test_job_files_need_their_columns(tmp_path):
    pairs = tmp_path / "pairs.parquet"
    pd.DataFrame({"user_id": ["u"], "item_id": ["i"]}).to_parquet(pairs)
    pre.check_job_file("--pairs", str(pairs), ["user_id", "item_id"])
    users = tmp_path / "users.csv"
    users.write_text("user\nu1\n")
    with pytest.raises(DataError, match=r"no column\(s\) \['user_id'\]"):
        pre.check_job_file("--users", str(users), ["user_id"])
    with pytest.raises(pre.UsageError, match="does not exist"):
        pre.check_job_file("--pairs", str(tmp_path / "missing.csv"), ["user_id"])


def test_versions_runs_and_champion_in_a_store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(pre.UsageError, match="no champion"):
        pre.check_version(store, "")
    with pytest.raises(pre.UsageError, match="(?s)no model version 'v9'.*published versions: none"):
        pre.check_version(store, "v9")
    store.put_bytes("models/v1/metadata.json", b"{}")
    store.put_bytes("models/champion.json", json.dumps({"version": "v1", "sha256": "00"}).encode())
    pre.check_version(store, "v1")
    pre.check_version(store, "")
    with pytest.raises(pre.UsageError, match="published versions: v1"):
        pre.check_version(store, "v2")
    with pytest.raises(pre.UsageError, match="no run 'r1'"):
        pre.check_run(store, "r1")
    assert pre.check_positive("--top-n", 3) == 3
    with pytest.raises(pre.UsageError, match="--top-n 0: must be at least 1"):
        pre.check_positive("--top-n", 0)


def test_settings_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("MUSICREC_SERVE_LIMIT", "lots")
    with pytest.raises(SettingsError, match="MUSICREC_SERVE_LIMIT='lots'"):
        get_settings()
    monkeypatch.setenv("MUSICREC_SERVE_LIMIT", "")  # empty = the default
    assert get_settings().serve_limit == 2


def test_every_setting_is_documented_with_its_default():
    """docs/settings.md is where an error sends the user: each MUSICREC_* variable has its row there."""
    from pathlib import Path

    from musicrec.settings import Settings

    doc = (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()
    rows = {
        line.split("|")[1].strip(" `"): line for line in doc.splitlines() if line.startswith("| `MUSICREC_")
    }
    for name, field in Settings.model_fields.items():
        row = rows.get(f"MUSICREC_{name.upper()}")
        assert row is not None, f"MUSICREC_{name.upper()} has no row in docs/settings.md"
        shown = row.split("|")[2].strip(" `")
        if isinstance(field.default, bool) or not isinstance(field.default, int | float):
            assert shown.lower() == (str(field.default).lower() or "(empty)"), (name, field.default, row)
        else:
            assert float(shown) == field.default, (name, field.default, row)


def test_only_transient_errors_are_retried():
    """tasks.retries: a verdict (bad URI, missing key, bad
    data, failed validation, bad config) fails at once."""
    from botocore.exceptions import ClientError, EndpointConnectionError
    from prefect.states import Failed

    from musicrec.errors import ConflictError, StoreError, ValidationFailed
    from musicrec.scoring.bundle import BundleDamaged
    from musicrec.store import MissingKeyError
    from tasks.retries import io_retries, is_transient, retry_transient

    def wrapped(cause: BaseException) -> StoreError:
        error = StoreError("cannot read s3://b/k")
        error.__cause__ = cause  # as `raise StoreError(...) from cause` in the stores
        return error

    s503 = ClientError(
        {"Error": {"Code": "ServiceUnavailable"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "Get"
    )
    s403 = ClientError(
        {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Get"
    )
    transient = [
        wrapped(s503),
        wrapped(EndpointConnectionError(endpoint_url="http://x")),
        wrapped(ConnectionResetError()),
        ConflictError("lost the race"),
        TimeoutError(),
    ]
    permanent = [
        StoreError("unsupported store URI 'gs://b'"),
        wrapped(s403),
        MissingKeyError("no object"),
        BundleDamaged("fails its sha256 check"),
        DataError("x.csv", "bad line"),
        ConfigError("bad key"),
        ValidationFailed("ratings", []),
        KeyError("a bug"),
        wrapped(FileNotFoundError(2, "gone")),
    ]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in permanent] == [False] * len(permanent)
    assert retry_transient(None, None, Failed(data=transient[0])) is True
    assert retry_transient(None, None, Failed(data=permanent[0])) is False
    assert io_retries([1, 3]) == {
        "retries": 2,
        "retry_delay_seconds": [1, 3],
        "retry_condition_fn": retry_transient,
    }


@pytest.mark.parametrize("user_id", ["", " ", "\t\n"])
def test_an_empty_user_id_is_a_usage_error(tmp_path, user_id):
    """Issue 30, case 5: recommend '' printed the popular fallback list and exited 0."""
    with pytest.raises(pre.UsageError, match="is empty"):
        pre.check_user_id(user_id)
    assert pre.check_user_id(" u1") == " u1"  # ids are otherwise taken as they are


def test_recommend_with_an_empty_user_id_exits_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-m", "musicrec", "recommend", " ", "--store", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 2 and "user id ' ' is empty" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("inside", ["models", "models/20261207T000000Z-1-gmf", "runs/r1", "tuning", "runs"])
def test_scores_are_never_written_into_what_training_publishes(tmp_path, inside):
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(pre.UsageError, match="holds what training publishes"):
        pre.check_output_outside(str(tmp_path / "store" / inside), store)
    with pytest.raises(pre.UsageError):  # the same folder named through a file:// URI with a detour
        pre.check_output_outside((tmp_path / "store" / "scores" / ".." / inside).as_uri(), store)


@pytest.mark.parametrize("outside", ["scores/job1", "modelsX", "elsewhere"])
def test_scores_may_go_beside_or_outside_the_store(tmp_path, outside):
    store = open_store(str(tmp_path / "store"))
    target = tmp_path / ("store" if outside != "elsewhere" else "") / outside
    assert pre.check_output_outside(str(target), store).uri == target.resolve().as_uri()


def test_score_into_the_store_models_folder_exits_2_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    store = tmp_path / "store"
    (store / "models").mkdir(parents=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "musicrec",
            "score",
            "--all-users",
            "--store",
            str(store),
            "--out",
            str(store / "models"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "holds what training publishes" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and list((store / "models").iterdir()) == []
