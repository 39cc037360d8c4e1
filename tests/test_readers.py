"""Readers: every real Amazon format (plain and gzipped)
into the canonical tables, and each bad-input policy."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from musicrec.data import formats
from musicrec.data.readers import detect_format, load_dataset, read_items, read_ratings
from musicrec.data.schema import ITEM_COLUMNS, RATING_COLUMNS
from musicrec.errors import DataError

R2014 = {
    "reviewerID": "A2SUAM1J3GNN3B",
    "asin": "0000013714",
    "reviewerName": "J. McDonald",
    "helpful": [2, 3],
    "reviewText": "I bought this for my husband.",
    "overall": 5.0,
    "summary": "Heavenly Highway Hymns",
    "unixReviewTime": 1252800000,
    "reviewTime": "09 13, 2009",
}
R2018 = {
    "overall": 4.0,
    "verified": True,
    "reviewTime": "06 3, 2013",
    "reviewerID": "A1ZCPG3D3HGRSS",
    "asin": "0001388703",
    "style": {"Format:": " Audio CD"},
    "reviewerName": "mark l. massey",
    "reviewText": "This is a great cd.",
    "summary": "Five Stars",
    "unixReviewTime": 1370217600,
    "vote": "3",
    "image": ["https://example.com/a.jpg"],
}
R2023 = {
    "rating": 5.0,
    "title": "Great album",
    "text": "Loved every track.",
    "images": [],
    "asin": "B00CHILD1",
    "parent_asin": "B00PARENT",
    "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ",
    "timestamp": 1588687728923,
    "helpful_vote": 2,
    "verified_purchase": True,
}
META_2014 = (
    "{'asin': '0001388703', 'title': \"Let's Dance\", 'price': 13.01, 'imUrl': 'http://x/y.jpg', "
    "'related': {'also_bought': ['B000002UJQ', 'B00002N9HZ'], 'also_viewed': ['B0000025P2']}, "
    "'salesRank': {'Music': 1}, 'categories': [['CDs & Vinyl', 'Pop']], 'brand': 'EMI', "
    "'description': 'A classic record.'}"
)
META_2018 = {
    "category": ["CDs & Vinyl"],
    "description": ["Remastered.", "With bonus tracks."],
    "title": "Abbey Road",
    "also_buy": ["B1", "B2"],
    "brand": "The Beatles",
    "also_view": ["B3"],
    "asin": "B000002UAL",
}
META_2023 = {
    "main_category": "Digital Music",
    "title": "Blue Train",
    "average_rating": 4.8,
    "rating_number": 10,
    "features": [],
    "description": ["Hard bop classic."],
    "price": None,
    "images": [],
    "videos": [],
    "store": "John Coltrane",
    "categories": [],
    "details": {"Label": "Blue Note"},
    "parent_asin": "B0PARENT1",
}


def write(path: Path, lines: list[str] | list[bytes], *, gz: bool = False) -> Path:
    """Write lines (str or bytes) one per line, gzipped if asked: the name never says which."""
    data = b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def jsonl(records: list[dict]) -> list[str]:
    return [json.dumps(r) for r in records]


# --- formats ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_reviews_2014_canonical(tmp_path: Path, gz: bool) -> None:
    path = write(
        tmp_path / "reviews.txt", jsonl([R2014, {**R2014, "reviewerID": "B2", "summary": ""}]), gz=gz
    )
    df, stats = read_ratings(path)
    assert detect_format(path) == "reviews-2014" and stats.format == "reviews-2014"
    assert list(df.columns) == RATING_COLUMNS
    first = df.iloc[0]
    assert (first.user_id, first.item_id, first.rating, first.timestamp) == (
        "A2SUAM1J3GNN3B",
        "0000013714",
        5.0,
        1252800000,
    )
    assert first.review_text == "Heavenly Highway Hymns. I bought this for my husband."
    assert first.reviewer_name == "J. McDonald"
    assert df.iloc[1].review_text == "I bought this for my husband."
    assert (stats.rows_read, stats.rows_kept, stats.bad_lines) == (2, 2, 0)


@pytest.mark.parametrize("gz", [False, True])
def test_reviews_2018_canonical(tmp_path: Path, gz: bool) -> None:
    no_text = {k: v for k, v in R2018.items() if k not in ("reviewText", "reviewerName")}
    path = write(tmp_path / "r.json", jsonl([R2018, no_text]), gz=gz)
    df, _ = read_ratings(path)
    assert detect_format(path) == "reviews-2018"
    assert df.rating.tolist() == [4.0, 4.0] and df.timestamp.tolist() == [1370217600, 1370217600]
    assert df.review_text.tolist() == ["Five Stars. This is a great cd.", "Five Stars"]
    assert df.reviewer_name.tolist() == ["mark l. massey", ""]


def test_review_time_used_when_unix_time_missing(tmp_path: Path) -> None:
    rec = {k: v for k, v in R2014.items() if k != "unixReviewTime"}
    df, _ = read_ratings(write(tmp_path / "r", jsonl([rec])))
    assert df.timestamp.tolist() == [1252800000]


@pytest.mark.parametrize("gz", [False, True])
def test_reviews_2023_ms_timestamps_and_parent_asin(tmp_path: Path, gz: bool) -> None:
    no_parent = {k: v for k, v in R2023.items() if k != "parent_asin"} | {
        "title": "",
        "timestamp": 1600000000999,
    }
    path = write(tmp_path / "Digital_Music.jsonl", jsonl([R2023, no_parent]), gz=gz)
    df, stats = read_ratings(path)
    assert stats.format == "reviews-2023"
    assert df.item_id.tolist() == ["B00PARENT", "B00CHILD1"]
    assert df.timestamp.tolist() == [1588687728, 1600000000]  # milliseconds -> whole seconds
    assert df.review_text.tolist() == ["Great album. Loved every track.", "Loved every track."]
    assert df.user_id.tolist() == ["AGKHLEW2SOWHNMFQIJGBECAF7INQ"] * 2


@pytest.mark.parametrize("gz", [False, True])
def test_ratings_only_csv_without_header(tmp_path: Path, gz: bool) -> None:
    path = write(
        tmp_path / "ratings.csv",
        ["0001388703,A1ZCPG3D3HGRSS,5.0,1387670400", "B0001,U02,3.0,1400000000"],
        gz=gz,
    )
    df, stats = read_ratings(path)
    assert stats.format == "ratings-csv"
    assert df.item_id.tolist() == ["0001388703", "B0001"]  # leading zeros survive: ids are strings
    assert df.user_id.tolist() == ["A1ZCPG3D3HGRSS", "U02"]
    assert df.rating.tolist() == [5.0, 3.0] and df.timestamp.tolist() == [1387670400, 1400000000]
    assert (df.review_text == "").all()


def test_generic_ratings_csv_and_parquet(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["007", "i2"],
            "rating": [4.5, 2.0],
            "timestamp": [100, 200],
            "review_text": ["nice", "meh"],
        }
    )
    csv_path = tmp_path / "ratings.csv"
    table.to_csv(csv_path, index=False)
    pq_path = tmp_path / "ratings.parquet"
    table.to_parquet(pq_path)
    for path, fmt in ((csv_path, "generic-csv"), (pq_path, "generic-parquet")):
        df, stats = read_ratings(path)
        assert stats.format == fmt
        assert df.item_id.tolist() == ["007", "i2"] and df.rating.tolist() == [4.5, 2.0]
        assert df.timestamp.tolist() == [100, 200] and df.review_text.tolist() == ["nice", "meh"]


def test_generic_csv_without_optional_columns(tmp_path: Path) -> None:
    df, _ = read_ratings(write(tmp_path / "r.csv", ["user_id,item_id,rating", "u1,i1,3"]))
    assert df.timestamp.isna().all() and df.rating.tolist() == [3.0]


@pytest.mark.parametrize("gz", [False, True])
def test_meta_2014_python_literals(tmp_path: Path, gz: bool) -> None:
    path = write(
        tmp_path / "meta.json", [META_2014, "{'asin': 'B2', 'related': {'also_viewed': ['B3']}}"], gz=gz
    )
    df, stats = read_items(path)
    assert stats.format == "meta-2014" and list(df.columns) == ITEM_COLUMNS
    first = df.iloc[0]
    assert first.item_id == "0001388703" and first.title == "Let's Dance" and first.brand == "EMI"
    assert first.also_bought == ["B000002UJQ", "B00002N9HZ"] and first.description == "A classic record."
    assert df.iloc[1].also_bought == [] and df.iloc[1].title == ""


def test_meta_2014_detected_even_if_its_first_line_is_valid_json(tmp_path: Path) -> None:
    df, stats = read_items(write(tmp_path / "meta", ['{"asin": "B1", "title": "Plain"}', META_2014]))
    assert stats.format == "meta-2014" and df.item_id.tolist() == ["B1", "0001388703"]


def test_meta_2014_code_is_rejected_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = f"__import__('os').system('touch {marker}')"
    df, stats = read_items(write(tmp_path / "meta", [META_2014, evil, "{'asin': 'B9', '__class__': 1}"]))
    assert not marker.exists()
    assert df.item_id.tolist() == ["0001388703", "B9"]
    assert stats.bad_lines == 1 and "line(s) 2" in stats.notes[0]


@pytest.mark.parametrize("gz", [False, True])
def test_meta_2018_and_2023(tmp_path: Path, gz: bool) -> None:
    df18, st18 = read_items(write(tmp_path / "m18", jsonl([META_2018]), gz=gz))
    assert st18.format == "meta-2018"
    assert df18.iloc[0].to_dict() == {
        "item_id": "B000002UAL",
        "title": "Abbey Road",
        "brand": "The Beatles",
        "also_bought": ["B1", "B2"],
        "description": "Remastered. With bonus tracks.",
    }
    df23, st23 = read_items(write(tmp_path / "m23", jsonl([META_2023]), gz=gz))
    assert st23.format == "meta-2023"
    assert df23.iloc[0].to_dict() == {
        "item_id": "B0PARENT1",
        "title": "Blue Train",
        "brand": "John Coltrane",
        "also_bought": [],
        "description": "Hard bop classic.",
    }


def test_generic_items_csv_and_parquet(tmp_path: Path) -> None:
    table = pd.DataFrame({"item_id": ["i1", "i2"], "title": ["A", "B"], "text": ["about a", ""]})
    csv_path, pq_path = tmp_path / "items.csv", tmp_path / "items.parquet"
    table.to_csv(csv_path, index=False)
    table.to_parquet(pq_path)
    for path, fmt in ((csv_path, "items-csv"), (pq_path, "items-parquet")):
        df, stats = read_items(path)
        assert stats.format == fmt
        assert df.description.tolist() == ["about a", ""] and df.brand.tolist() == ["", ""]


def test_detection_ignores_file_names(tmp_path: Path) -> None:
    gz_named_json = write(tmp_path / "reviews.json", jsonl([R2018]), gz=True)
    plain_named_gz = write(tmp_path / "reviews.json.gz", jsonl([R2023]))
    csv_named_json = write(tmp_path / "meta.json", ["A,U,5.0,1"])
    parquet_named_csv = tmp_path / "x.csv"
    pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "rating": [1.0]}).to_parquet(parquet_named_csv)
    meta_named_csv = write(tmp_path / "ratings.csv", [META_2014], gz=True)
    assert [
        detect_format(p)
        for p in (gz_named_json, plain_named_gz, csv_named_json, parquet_named_csv, meta_named_csv)
    ] == ["reviews-2018", "reviews-2023", "ratings-csv", "generic-parquet", "meta-2014"]
    assert read_ratings(gz_named_json)[0].user_id.tolist() == ["A1ZCPG3D3HGRSS"]
    assert read_ratings(plain_named_gz)[0].item_id.tolist() == ["B00PARENT"]


def test_header_names_are_matched_with_aliases_for_ratings_and_items(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", ["user_id,parent_asin,asin,rating,timestamp", "u1,P1,C1,4,100"])
    df, stats = read_ratings(path)  # a 2023-style export: parent_asin is the item, as in the 2023 JSON reader
    assert stats.format == "generic-csv" and df.item_id.tolist() == ["P1"] and df.user_id.tolist() == ["u1"]
    assert stats.notes == [
        "columns parent_asin, asin all name item_id: used parent_asin (--columns chooses another)"
    ]
    items, stats = read_items(write(tmp_path / "i.csv", ["ASIN,Title", "B1,Abbey Road"]))
    assert (
        stats.format == "items-csv"
        and items.item_id.tolist() == ["B1"]
        and items.title.tolist() == ["Abbey Road"]
    )


def test_columns_apply_to_tables_only(tmp_path: Path) -> None:
    path = write(tmp_path / "r.json", jsonl([R2018]))
    with pytest.raises(DataError, match="columns= .* CSV and Parquet tables; this file is reviews-2018"):
        read_ratings(path, {"user": "reviewerID", "item": "asin", "rating": "overall"})
    with pytest.raises(DataError, match="'colour' is not one of user, item, rating, timestamp"):
        read_ratings(write(tmp_path / "r.csv", ["a,b,c", "u,i,5"]), {"colour": "a"})
    pq = tmp_path / "r.parquet"
    pd.DataFrame({"who": ["u1", "u2"], "what": ["i1", "i2"], "stars": [4.0, 5.0]}).to_parquet(pq)
    df, stats = read_ratings(pq, {"user": "who", "item": "what"})  # rating found by its alias
    assert (
        stats.format == "generic-parquet"
        and df.user_id.tolist() == ["u1", "u2"]
        and df.rating.tolist() == [4, 5]
    )


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"", gzip.compress(b"", mtime=0), b"\n  \n"], ids=["empty", "empty-gzip", "blank"]
)
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match="file is empty") as err:
        read_ratings(path)
    assert str(path) in str(err.value)


def test_truncated_gzip_names_file_and_line(tmp_path: Path) -> None:
    lines = jsonl([{**R2018, "reviewText": f"review {i} " + "x" * (i % 97)} for i in range(20000)])
    full = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        read_ratings(path)
    assert str(path) in str(err.value) and err.value.line is not None and err.value.line > 1
    assert "download" in err.value.hint


def test_bad_json_lines_under_threshold_are_dropped(tmp_path: Path) -> None:
    lines = jsonl([{**R2014, "reviewerID": f"U{i}"} for i in range(1000)])
    for i in (4, 500, 900):
        lines[i] = lines[i][:-5]  # cut mid-object
    df, stats = read_ratings(write(tmp_path / "r.json", lines))
    assert len(df) == 997 and stats.bad_lines == 3 and stats.rows_read == 1000
    assert "line(s) 5, 501, 901" in stats.notes[0]
    assert "U4" not in set(df.user_id)


def test_bad_json_lines_over_threshold_raise_with_first_line(tmp_path: Path) -> None:
    lines = jsonl([R2014] * 100)
    for i in range(30, 41):  # 11 bad lines > max(10, 0.1% of 100)
        lines[i] = "{not json"
    path = write(tmp_path / "r.json", lines)
    with pytest.raises(DataError, match="11 of 100 lines are not valid JSON") as err:
        read_ratings(path)
    assert err.value.line == 31 and f"{path}, line 31" in str(err.value)


@pytest.mark.parametrize(("bad", "ok"), [(20, True), (21, False)])
def test_threshold_is_a_tenth_of_a_percent_for_large_files(tmp_path: Path, bad: int, ok: bool) -> None:
    lines = jsonl([R2014] * 20000)
    for i in range(bad):
        lines[100 * i + 7] = "oops"
    path = write(tmp_path / "r.json", lines)
    if ok:
        assert read_ratings(path)[1].bad_lines == 20
    else:
        with pytest.raises(DataError, match="line 8"):
            read_ratings(path)


def test_meta_2014_over_threshold_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "meta", [META_2014] + ["{'asin': 'B1', 'title': 'unterminated}"] * 11)
    with pytest.raises(DataError, match="not valid Python-literal") as err:
        read_items(path)
    assert err.value.line == 2


def test_line_numbers_count_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "BLOCK_BYTES", 1000)
    lines = jsonl([{**R2014, "reviewerID": f"U{i}"} for i in range(300)])
    lines[250] = "{broken"
    df, stats = read_ratings(write(tmp_path / "r.json", lines, gz=True))
    assert len(df) == 299 and df.user_id.iloc[-1] == "U299"
    assert "line(s) 251" in stats.notes[0]


def test_fast_path_and_line_by_line_path_agree(tmp_path: Path) -> None:
    recs = [{**R2018, "reviewerID": f"U{i}", "overall": float(i % 5 + 1)} for i in range(50)]
    clean, _ = read_ratings(write(tmp_path / "clean", jsonl(recs)))
    messy, _ = read_ratings(write(tmp_path / "messy", jsonl(recs) + ["[1, 2]"]))  # forces the dict path
    pd.testing.assert_frame_equal(clean, messy)


def test_missing_fields_and_non_numeric_ratings_are_kept_for_validation(tmp_path: Path) -> None:
    recs = [
        R2014,
        {**R2014, "overall": "five"},
        {k: v for k, v in R2014.items() if k != "reviewerID"},
        {k: v for k, v in R2014.items() if k not in ("asin", "overall")},
    ]
    lines = [*jsonl(recs), json.dumps({**R2014, "overall": float("nan")})]  # json.dumps writes NaN
    df, stats = read_ratings(write(tmp_path / "r.json", lines))
    assert stats.bad_lines == 0 and len(df) == 5
    assert df.rating.isna().tolist() == [False, True, False, True, True]
    assert df.user_id.tolist()[2] == "" and df.item_id.tolist()[3] == ""


def test_missing_required_column_lists_found_and_needed(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", ["user_id,item_id,grade", "u,i,5"])  # "score" is now a rating alias
    message = "no rating or play-count column; found: user_id, item_id, grade"
    with pytest.raises(DataError, match=message) as e:
        read_ratings(path)
    assert str(path) in str(e.value) and "weight=COLUMN" in str(e.value)
    assert "rating: rating, stars, overall, score" in str(e.value) and "--columns user=" in e.value.hint


def test_damaged_bytes_in_a_utf8_file_are_replaced_and_noted(tmp_path: Path) -> None:
    # the file holds real UTF-8 text ("café" as UTF-8 bytes),
    # so it is UTF-8 with a few damaged bytes, not Latin-1
    good = json.dumps({**R2014, "reviewText": "caf\u00e9"}, ensure_ascii=False).encode()
    bad = good.replace("caf\u00e9".encode(), b"caf\xe9 \xff")
    df, stats = read_ratings(write(tmp_path / "r.json", [good, bad]))
    assert df.review_text.tolist() == [
        "Heavenly Highway Hymns. caf\u00e9",
        "Heavenly Highway Hymns. caf\ufffd \ufffd",
    ]
    assert stats.bad_lines == 0 and stats.encoding == "utf-8"
    assert any("1 line(s) had non-UTF-8 bytes" in n for n in stats.notes)
    df, stats = read_ratings(write(tmp_path / "r.csv", [b"B1,U\xff1,5.0,1", b"B2,U\xc3\xa92,4.0,2"]))
    assert df.user_id.tolist() == ["U\ufffd1", "U\u00e92"] and any("non-UTF-8" in n for n in stats.notes)


@pytest.mark.parametrize("name", ["r.json", "r.csv"])
def test_latin1_file_is_decoded_as_latin1_and_noted(tmp_path: Path, name: str) -> None:
    if name == "r.json":
        lines = [
            json.dumps({**R2014, "reviewerName": n}, ensure_ascii=False).encode("cp1252")
            for n in ("Zoé", "Jürgen")
        ]
    else:
        lines = [
            b"user_id,item_id,rating,reviewer_name",
            *(f"u{i},i,5,{n}".encode("cp1252") for i, n in enumerate(("Zoé", "Jürgen"))),
        ]
    df, stats = read_ratings(write(tmp_path / name, lines))
    assert df.reviewer_name.tolist() == ["Zoé", "Jürgen"] and stats.encoding == "cp1252"
    assert stats.notes == [
        "not UTF-8: 2 line(s) hold bytes that are not UTF-8 and none holds UTF-8 text, so the "
        "file was decoded as Windows-1252 (Latin-1)"
    ]


def test_enormous_text_field(tmp_path: Path) -> None:
    huge = "la " * 3_500_000  # ~10 MB in one line
    df, _ = read_ratings(write(tmp_path / "r.json", jsonl([R2014, {**R2014, "reviewText": huge}]), gz=True))
    assert len(df.review_text.iloc[1]) == len("Heavenly Highway Hymns. ") + len(huge)
    csv_path = tmp_path / "big.csv"
    pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "rating": [5], "review_text": [huge]}).to_csv(
        csv_path, index=False
    )
    assert read_ratings(csv_path)[0].review_text.iloc[0] == huge


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_other_csv_delimiters_are_read(tmp_path: Path, sep: str, name: str) -> None:
    path = write(tmp_path / "r.csv", [sep.join(["user_id", "item_id", "rating"]), sep.join(["u", "i", "5"])])
    df, stats = read_ratings(path)
    assert stats.delimiter.startswith(name)
    assert df[["user_id", "item_id", "rating"]].values.tolist() == [["u", "i", 5.0]]


def test_csv_rows_with_too_many_fields_follow_the_policy(tmp_path: Path) -> None:
    df, stats = read_ratings(write(tmp_path / "r.csv", ["B1,U1,5.0,1", "B2,U2,4.0,2,extra", "B3,U3,3.0,3"]))
    assert df.item_id.tolist() == ["B1", "B3"] and stats.bad_lines == 1 and "line(s) 2" in stats.notes[0]


def test_csv_first_row_with_extra_fields_is_dropped_like_any_other(tmp_path: Path) -> None:
    df, stats = read_ratings(write(tmp_path / "r.csv", ["B0,U0,5.0,1,junk", "B1,U1,4.0,2", "B2,U2,3.0,3"]))
    assert df.item_id.tolist() == ["B1", "B2"] and stats.bad_lines == 1 and "line(s) 1" in stats.notes[0]
    df, stats = read_ratings(write(tmp_path / "g.csv", ["user_id,item_id,rating", "u1,i1,5,x", "u2,i2,4"]))
    assert df.user_id.tolist() == ["u2"] and stats.bad_lines == 1 and "line(s) 2" in stats.notes[0]


def test_csv_bad_rows_over_threshold_raise(tmp_path: Path) -> None:
    lines = ["B1,U1,5.0,1"] * 20 + ["B2,U2,4.0,2,x,y"] * 11
    with pytest.raises(DataError, match="11 of 31 lines are not valid CSV") as err:
        read_ratings(write(tmp_path / "r.csv", lines))
    assert err.value.line == 21


def test_truncated_gzip_csv_names_file(tmp_path: Path) -> None:
    full = gzip.compress("".join(f"B{i},U{i},5.0,{i}\n" for i in range(100000)).encode())
    path = tmp_path / "ratings.csv"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        read_ratings(path)
    assert str(path) in str(err.value) and "download" in err.value.hint


def test_other_compressions_are_named(tmp_path: Path) -> None:
    import bz2

    path = tmp_path / "reviews.json"
    path.write_bytes(bz2.compress(json.dumps(R2014).encode()))
    with pytest.raises(DataError, match="bzip2-compressed"):
        detect_format(path)


@pytest.mark.parametrize(
    "content",
    [
        b"hello world\nthis is prose\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b'{"foo": 1}\n',
        b"a,b,c,d,e,f\n",
    ],
)
def test_unknown_content_lists_supported_formats(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "mystery.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match="supported") as err:
        read_ratings(path)
    assert str(path) in str(err.value) and "reviews-2018" in str(err.value) and "meta-2014" in str(err.value)


def test_wrong_kind_of_file_and_missing_file(tmp_path: Path) -> None:
    meta = write(tmp_path / "meta", jsonl([META_2018]))
    with pytest.raises(DataError, match="item metadata"):
        read_ratings(meta)
    with pytest.raises(DataError, match="not item metadata"):
        read_items(write(tmp_path / "reviews", jsonl([R2018])))
    with pytest.raises(DataError, match="cannot open") as err:
        read_ratings(tmp_path / "nope.json")
    assert "nope.json" in str(err.value)


# --- load_dataset -------------------------------------------------------------------------------------------


def test_load_dataset_keeps_latest_review_and_counts_drops(tmp_path: Path) -> None:
    old = {**R2014, "overall": 1.0, "unixReviewTime": 100}
    new = {**R2014, "overall": 5.0, "unixReviewTime": 200}
    other = {**R2014, "reviewerID": "U2"}
    first = write(tmp_path / "a.json", jsonl([new, other]), gz=True)
    second = write(tmp_path / "b.csv", [f"{R2014['asin']},{R2014['reviewerID']},3.0,50", "B9,U3,4.0,10"])
    meta = write(tmp_path / "m", [META_2014])
    ds = load_dataset([first, second, write(tmp_path / "c.json", jsonl([old]))], meta=[meta])
    key = ds.ratings[ds.ratings.user_id == R2014["reviewerID"]]
    assert key.rating.tolist() == [5.0] and key.timestamp.tolist() == [200]
    assert [s.duplicates_dropped for s in ds.stats] == [0, 1, 1, 0]
    assert ds.summary() == {
        "ratings": 3,
        "users": 3,
        "items": 2,
        "duplicates_dropped": 2,
        "bad_lines": 0,
        "meta_items": 1,
    }
    assert ds.items.item_id.tolist() == ["0001388703"]


def test_load_dataset_without_meta_has_empty_items(tmp_path: Path) -> None:
    ds = load_dataset([write(tmp_path / "r", jsonl([R2014]))])
    assert list(ds.items.columns) == ITEM_COLUMNS and ds.items.empty
    assert list(ds.ratings.columns) == RATING_COLUMNS and len(ds.stats) == 1
