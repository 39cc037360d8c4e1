"""Data validation: JSON suites loaded from expectations/, broken tables named by the expectation they break."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from musicrec.data.schema import canonical_items, canonical_ratings, empty_items
from musicrec.errors import MusicrecError, ValidationFailed
from musicrec.validation import EXPECTATIONS_ENV, check, expectations_dir, failure_markdown, validate_table

SUITE_FILES = sorted((Path(__file__).resolve().parents[1] / "expectations").glob("*.json"))
N = 200

BETWEEN = "expect_column_values_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
LENGTHS = "expect_column_value_lengths_to_be_between"
COMPOUND = "expect_compound_columns_to_be_unique"
DISTINCT = "expect_column_unique_value_count_to_be_between"
ROWS = "expect_table_row_count_to_be_between"
COLUMNS = "expect_table_columns_to_match_set"
OF_TYPE = "expect_column_values_to_be_of_type"
UNIQUE = "expect_column_values_to_be_unique"


def _raw(n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "user_id": [f"U{i % 37:03d}" for i in range(n)],
            "item_id": [f"I{i:04d}" for i in range(n)],
            "rating": [float(1 + i % 5) for i in range(n)],
            "timestamp": 1_300_000_000 + rng.integers(0, 10**8, n),
            "review_text": ["great album"] * n,
            "reviewer_name": ["ann"] * n,
        }
    )


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    """A small canonical ratings table that passes; tests mutate copies of it."""
    return canonical_ratings(_raw())


@pytest.fixture(scope="module")
def good_report(good):
    return validate_table(good, "ratings")


def _failed(report) -> set[tuple[str, str]]:
    return {(r["expectation"], ", ".join(r["columns"])) for r in report.results if not r["success"]}


def test_good_frame_passes_and_reports_every_expectation(good, good_report):
    suite = json.loads((expectations_dir() / "ratings.json").read_text())
    assert good_report.success and good_report.rows == N and good_report.failures() == []
    assert [r["expectation"] for r in good_report.results] == [e["type"] for e in suite["expectations"]]
    assert all(r["notes"] for r in good_report.results)
    json.dumps(good_report.to_dict(), allow_nan=False)
    md = good_report.to_markdown()
    assert "`ratings` passed" in md and md.count("\n| ✅") == len(suite["expectations"])
    check(good, "ratings")  # no raise


def test_null_timestamps_are_allowed_and_the_input_frame_is_untouched(good):
    df = good.copy()
    df.loc[:9, "timestamp"] = pd.NA
    assert validate_table(df, "ratings").success
    assert df["timestamp"].dtype == "Int64"


def _set(col: str, rows: list[int], value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[rows, col] = value
        return df

    return mutate


def _five(df: pd.DataFrame) -> pd.DataFrame:
    raw = _raw().astype({"rating": object})
    raw.loc[7, "rating"] = "five"
    return canonical_ratings(raw)  # the reader's coercion turns "five" into NaN


def _duplicate(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[5, ["user_id", "item_id"]] = df.loc[6, ["user_id", "item_id"]].to_numpy()
    return df


def _text_not_str(df: pd.DataFrame) -> pd.DataFrame:
    df["review_text"] = df["review_text"].astype(object)
    df.loc[3, "review_text"] = 42
    return df


BROKEN = {
    "rating 0": (_set("rating", [3], 0.0), {(BETWEEN, "rating")}),
    "rating 6": (_set("rating", [3], 6.0), {(BETWEEN, "rating")}),
    "rating -1": (_set("rating", [3], -1.0), {(BETWEEN, "rating")}),
    "rating NaN": (_set("rating", [3], np.nan), {(NOT_NULL, "rating")}),
    "rating 'five'": (_five, {(NOT_NULL, "rating")}),
    "null user_id": (_set("user_id", [4], None), {(NOT_NULL, "user_id")}),
    "null item_id": (_set("item_id", [4], None), {(NOT_NULL, "item_id")}),
    "empty user_id": (_set("user_id", [4], ""), {(LENGTHS, "user_id")}),
    "empty item_id": (_set("item_id", [4], ""), {(LENGTHS, "item_id")}),
    "duplicate (user, item)": (_duplicate, {(COMPOUND, "user_id, item_id")}),
    "all ratings identical": (lambda df: df.assign(rating=4.0), {(DISTINCT, "rating")}),
    "too few rows": (lambda df: df.head(49), {(ROWS, "")}),
    "missing column": (
        lambda df: df.drop(columns="reviewer_name"),
        {(COLUMNS, ""), (OF_TYPE, "reviewer_name")},
    ),
    "timestamp 1970": (_set("timestamp", [2], 5), {(BETWEEN, "timestamp")}),
    "timestamp year 2100": (_set("timestamp", [2], 4_102_444_800), {(BETWEEN, "timestamp")}),
    "text not a string": (_text_not_str, {(OF_TYPE, "review_text")}),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_table_fails_naming_the_expectation(good, case):
    mutate, expected = BROKEN[case]
    report = validate_table(mutate(good.copy()), "ratings")
    assert not report.success
    assert _failed(report) == expected
    assert all(f["detail"] and f["expectation"] for f in report.failures())


def test_missing_column_is_named_in_the_examples(good):
    report = validate_table(good.drop(columns="reviewer_name"), "ratings")
    columns = next(r for r in report.results if r["expectation"] == COLUMNS)
    assert columns["examples"] == ["reviewer_name"] and "missing ['reviewer_name']" in columns["detail"]


def test_validation_failed_lists_each_expectation_with_count_and_examples(good):
    df = good.copy()
    df.loc[[10, 20, 30], "rating"] = [0.0, 6.0, -1.0]
    df.loc[40, "user_id"] = ""
    with pytest.raises(ValidationFailed) as info:
        check(df, "ratings")
    err = info.value
    assert err.suite == "ratings"
    assert [f["expectation"] for f in err.failures] == [LENGTHS, BETWEEN]
    assert all(set(f) == {"expectation", "detail", "examples", "hint"} for f in err.failures)
    text = str(err)
    assert "2 expectation(s) broken" in text
    assert f"{BETWEEN}: rating between 1 and 5: 3 of 200 rows (1.50%) unexpected" in text
    assert "e.g. [0.0, 6.0, -1.0]" in text
    assert f"{LENGTHS}: user_id length >= 1: 1 of 200 rows (0.50%) unexpected" in text
    assert "e.g. ['']" in text


def test_timestamp_examples_keep_their_integer_values(good):
    df = good.copy()
    df.loc[[3, 4], "timestamp"] = [5, pd.NA]
    result = next(r for r in validate_table(df, "ratings").results if r["columns"] == ["timestamp"])
    assert not result["success"] and result["unexpected_count"] == 1 and result["examples"] == [5]


def test_failed_report_is_json_serialisable_and_renders_markdown(good):
    df = good.copy()
    df.loc[[1, 2], "rating"] = np.nan
    report = validate_table(df, "ratings")
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    nulls = next(r for r in data["results"] if r["expectation"] == NOT_NULL and r["columns"] == ["rating"])
    assert (
        nulls["unexpected_count"] == 2
        and nulls["examples"] == [None, None]
        and nulls["example_rows"] == [1, 2]
    )
    assert "FAILED (1 broken)" in report.to_markdown() and "| ❌ |" in report.to_markdown()
    # the flow's artifact is rendered from validation.json's content: the message, then each suite's table
    page = failure_markdown({"ratings": data}, "data validation failed")
    assert page.startswith("# Validation failed") and "data validation failed" in page
    assert report.to_markdown() in page


def test_tiny_synthetic_tables_pass(tiny):
    ratings, items = tiny
    assert validate_table(ratings, "ratings").success
    assert validate_table(items, "items").success


def test_items_suite():
    items = canonical_items(
        pd.DataFrame(
            {
                "item_id": ["I1", "I2", "I3"],
                "title": ["a", None, "c"],
                "brand": ["x", "y", "z"],
                "also_bought": [["I2"], [], None],
                "description": ["", "d", ""],
            }
        )
    )
    assert validate_table(items, "items").success
    assert validate_table(empty_items(), "items").success

    dup = pd.concat([items, items.head(1)], ignore_index=True)
    assert _failed(validate_table(dup, "items")) == {(UNIQUE, "item_id")}
    nulls = items.copy()
    nulls.loc[1, "item_id"] = None
    assert _failed(validate_table(nulls, "items")) == {(NOT_NULL, "item_id")}
    titles = items.astype({"title": object})
    titles.loc[0, "title"] = 3.5
    assert _failed(validate_table(titles, "items")) == {(OF_TYPE, "title")}
    with pytest.raises(ValidationFailed, match="expect_column_to_exist"):
        check(items.drop(columns="item_id"), "items")


@pytest.mark.parametrize("path", SUITE_FILES, ids=[p.stem for p in SUITE_FILES])
def test_every_expectation_has_a_one_line_meta_note(path):
    suite = json.loads(path.read_text())
    assert suite["name"] == path.stem and suite["expectations"]
    for e in suite["expectations"]:
        note = e.get("meta", {}).get("notes", "")
        assert isinstance(note, str) and note.strip() and "\n" not in note, e["type"]


def test_suites_are_loaded_from_the_expectations_dir(good, good_report, tmp_path, monkeypatch):
    for path in SUITE_FILES:
        shutil.copy(path, tmp_path / path.name)
    suite = json.loads((tmp_path / "ratings.json").read_text())
    rows = next(e for e in suite["expectations"] if e["type"] == ROWS)
    rows["kwargs"]["min_value"] = 500
    rows["meta"]["notes"] = "edited copy"
    (tmp_path / "ratings.json").write_text(json.dumps(suite))
    monkeypatch.setenv(EXPECTATIONS_ENV, str(tmp_path))

    report = validate_table(good, "ratings")
    assert good_report.success and not report.success
    assert _failed(report) == {(ROWS, "")}
    assert next(r for r in report.results if r["expectation"] == ROWS)["notes"] == "edited copy"

    (tmp_path / "items.json").unlink()
    with pytest.raises(MusicrecError, match="items.json"):
        validate_table(empty_items(), "items")
    for bad in (
        {"type": "expect_no_such_thing", "kwargs": {}},  # GX itself would only log and drop it
        {"type": ROWS, "kwargs": {"min_valu": 0}},
    ):
        (tmp_path / "items.json").write_text(json.dumps({"expectations": [bad]}))
        with pytest.raises(MusicrecError, match="invalid expectation suite"):
            validate_table(empty_items(), "items")


def test_unknown_suite_is_refused(good):
    with pytest.raises(ValueError, match="unknown suite"):
        validate_table(good, "users")


def test_great_expectations_is_imported_lazily():
    code = "import sys, musicrec.validation; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_failed_expectations_carry_their_own_advice(tiny):
    ratings = tiny[0].head(10).assign(rating=5.0)
    with pytest.raises(ValidationFailed) as info:
        check(ratings, "ratings")
    message = str(info.value)
    assert "give at least 50 ratings" in message
    assert "every row has the same value" in message
    assert "fix or drop the offending rows" not in message


def test_rating_bounds_are_the_runs_scale(good):
    ten = good.assign(rating=[float(1 + i % 10) for i in range(N)])
    assert _failed(validate_table(ten, "ratings")) == {(BETWEEN, "rating")}  # default 1-5
    assert validate_table(ten, "ratings", rating_range=(1, 10)).success
    half = good.copy()
    half.loc[[0, 1], "rating"] = [0.5, 0.0]
    with pytest.raises(ValidationFailed) as info:
        check(half, "ratings", rating_range=(0.5, 5))
    assert f"{BETWEEN}: rating between 0.5 and 5: 1 of 200 rows (0.50%) unexpected" in str(info.value)
    assert "e.g. [0.0]" in str(info.value) and "--rating-range MIN,MAX" in info.value.hint
