"""Files as people have them: the real ratings-only CSV, other headers, column mappings, rating scales, encodings.

Each success runs ingest (read, scale, validate, write) into a fresh workspace and checks the exact user and item
counts and the rating scale; each failure checks the one message and that nothing was written for training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from musicrec.errors import DataError, ValidationFailed
from musicrec.pipeline.ingest import ingest
from musicrec.pipeline.workspace import Workspace

REAL_CSV = Path("/work/shared/data/amazon_musical_instruments_5core/ratings_Musical_Instruments_5.csv.gz")
N, USERS, ITEMS = 60, 20, 15  # user k % 20, item k % 15: 60 distinct pairs
T0 = 1_400_000_000
STARS = [float(1 + k % 5) for k in range(N)]
WHOLE_1_5 = {"min": 1.0, "max": 5.0, "step": 1.0, "name": "1-5 stars", "source": "data"}


def rows(ratings: list[float] = STARS) -> list[tuple[str, str, float, int]]:
    """(user, item, rating, timestamp) of the small dataset."""
    return [(f"U{k % USERS:02d}", f"I{k % ITEMS:02d}", ratings[k], T0 + 60 * k) for k in range(N)]


def csv_lines(header: str | None, data: list[tuple], order: str = "uirt", extra: str = "") -> list[str]:
    """The header (if any), then each row's fields in `order` (u, i, r, t) plus an optional trailing text."""
    pick = {"u": 0, "i": 1, "r": 2, "t": 3}
    body = [
        ",".join(f"{row[pick[c]]:g}" if c == "r" else str(row[pick[c]]) for c in order) + extra
        for row in data
    ]
    return ([] if header is None else [header]) + body


def jsonl_lines(data: list[tuple], text: str = "fine") -> list[str]:
    """Amazon 2018 review lines (reviewerID, asin, overall, unixReviewTime, reviewText)."""
    return [
        json.dumps(
            {"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t, "reviewText": f"{text} {k}"},
            ensure_ascii=False,
        )
        for k, (u, i, r, t) in enumerate(data)
    ]


def write(
    path: Path, lines: list[str], *, newline: str = "\n", encoding: str = "utf-8", bom: bool = False
) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join([*lines, ""]).encode(encoding))
    return path


def run(tmp_path: Path, reviews: Path, **kwargs: object) -> tuple[dict, Workspace]:
    ws = Workspace.create(tmp_path / "work", "run")
    return ingest(ws, [reviews], **kwargs), ws


def assert_ingested(out: dict, ws: Workspace, users: int, items: int, scale: dict) -> pd.DataFrame:
    """Exact counts and scale in the result, rating_scale.json beside ratings.parquet; returns the ratings."""
    assert (out["users"], out["items"]) == (users, items)
    assert out["rating_scale"] == scale and out["rating_range"] == [scale["min"], scale["max"]]
    assert ws.read_json("rating_scale.json") == scale
    ratings = pd.read_parquet(ws.ratings)
    assert (ratings["user_id"].nunique(), ratings["item_id"].nunique()) == (users, items)
    return ratings


def assert_nothing_written(ws_root: Path) -> None:
    assert not any(
        (ws_root / name).exists() for name in ("ratings.parquet", "items.parquet", "rating_scale.json")
    )


def test_the_real_ratings_only_csv(tmp_path: Path) -> None:
    local = tmp_path / REAL_CSV.name
    shutil.copy(REAL_CSV, local)
    out, ws = run(tmp_path, local)
    ratings = assert_ingested(out, ws, 1_429, 900, WHOLE_1_5)
    assert out["ratings"] == 10_261 and out["read"]["notes"] == []
    first = ratings.iloc[0]  # the headerless layout is item,user,rating,timestamp
    assert (first.item_id, first.user_id, first.rating, first.timestamp) == (
        "1384719342",
        "A2IBPI20UZIR0U",
        5.0,
        1393545600,
    )


@pytest.mark.parametrize(
    "header",
    ["userId,songId,stars,timestamp", "reviewerID,asin,overall,unixReviewTime", "USER,Item,Rating,Time"],
)
def test_a_header_with_aliases_is_matched_by_name(tmp_path: Path, header: str) -> None:
    out, ws = run(tmp_path, write(tmp_path / "r.csv", csv_lines(header, rows())))
    ratings = assert_ingested(out, ws, USERS, ITEMS, WHOLE_1_5)
    assert out["ratings"] == N and ratings["user_id"].str.startswith("U").all()  # never swapped with items
    assert ratings["timestamp"].min() == T0


def test_an_unknown_header_is_an_error_naming_its_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", csv_lines("listener,track,grade,when", rows()))
    with pytest.raises(DataError) as info:
        run(tmp_path, path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 1: ") and "found: listener, track, grade, when" in message
    assert "--columns user=...,item=...,rating=...[,timestamp=...]" in info.value.hint
    assert_nothing_written(tmp_path / "work" / "run")


def test_columns_map_arbitrary_names(tmp_path: Path) -> None:
    # "rating" and "user" exist but hold something else: the mapping wins over the aliases
    lines = csv_lines(None, rows(), order="iurt", extra=",0")
    path = write(tmp_path / "r.csv", ["track,listener,grade,when,rating", *lines])
    columns = {"user": "Listener", "item_id": "track", "rating": "grade", "timestamp": "when"}
    out, ws = run(tmp_path, path, columns=columns)
    ratings = assert_ingested(out, ws, USERS, ITEMS, WHOLE_1_5)
    assert ratings["rating"].tolist() == STARS and ratings["timestamp"].min() == T0


def test_a_mapped_column_the_file_lacks_lists_its_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", csv_lines("track,listener,grade", rows(), order="iur"))
    with pytest.raises(
        DataError,
        match=r"'stars' given for rating is not in the file; its columns: track, "
        r"listener, grade",
    ):
        run(tmp_path, path, columns={"user": "listener", "item": "track", "rating": "stars"})
    assert_nothing_written(tmp_path / "work" / "run")


@pytest.mark.parametrize(
    ("ratings", "scale"),
    [
        (
            [0.5 * (1 + k % 10) for k in range(N)],
            {"min": 0.5, "max": 5.0, "step": 0.5, "name": "0.5-5 in half stars"},
        ),
        ([float(1 + k % 10) for k in range(N)], {"min": 1.0, "max": 10.0, "step": 1.0, "name": "1-10"}),
    ],
)
def test_the_rating_scale_comes_from_the_data(tmp_path: Path, ratings: list[float], scale: dict) -> None:
    out, ws = run(
        tmp_path, write(tmp_path / "r.csv", csv_lines("user_id,item_id,rating,timestamp", rows(ratings)))
    )
    stored = assert_ingested(out, ws, USERS, ITEMS, {**scale, "source": "data"})
    assert stored["rating"].tolist() == ratings


def test_ratings_outside_a_fixed_range_fail_validation_with_count_and_examples(tmp_path: Path) -> None:
    ratings = [float(1 + k % 10) for k in range(N)]  # 1-10 data, but the user says 1-5
    path = write(tmp_path / "r.csv", csv_lines("user_id,item_id,rating,timestamp", rows(ratings)))
    with pytest.raises(ValidationFailed) as info:
        run(tmp_path, path, rating_range=(1, 5))
    assert "rating between 1 and 5: 30 of 60 rows (50.00%) unexpected" in str(info.value)
    assert "e.g. [6.0, 7.0, 8.0, 9.0, 10.0]" in str(info.value) and str(path) in str(info.value)
    assert_nothing_written(tmp_path / "work" / "run")
    out, ws = run(tmp_path, path, rating_range=(1, 10))
    assert_ingested(
        out,
        ws,
        USERS,
        ITEMS,
        {"min": 1.0, "max": 10.0, "step": 1.0, "name": "1-10 (given)", "source": "fixed"},
    )


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("variant", ["bom", "crlf", "latin-1"])
def test_bom_crlf_and_latin1(tmp_path: Path, kind: str, variant: str) -> None:
    options: dict = {"bom": {"bom": True}, "crlf": {"newline": "\r\n"}, "latin-1": {"encoding": "latin-1"}}[
        variant
    ]
    lines = (
        csv_lines("reviewerID,asin,overall,unixReviewTime,reviewText", rows(), extra=",café")
        if kind == "csv"
        else jsonl_lines(rows(), text="café")
    )
    path = write(tmp_path / f"r.{kind}", lines, **options)
    out, ws = run(tmp_path, path)
    ratings = assert_ingested(out, ws, USERS, ITEMS, WHOLE_1_5)
    assert ratings["review_text"].str.startswith("café").all() and ratings["user_id"].iloc[0] == "U00"
    assert ratings["timestamp"].iloc[-1] == T0 + 60 * (N - 1)  # no stray \r left on the last field
    latin1_note = (
        f"{path}: not UTF-8: 60 line(s) hold bytes that are not UTF-8 and none holds UTF-8 text, so the "
        "file was decoded as Windows-1252 (Latin-1)"
    )
    assert out["read"]["notes"] == ([latin1_note] if variant == "latin-1" else [])
