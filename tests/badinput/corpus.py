"""The bad-input corpus: each broken input is built by the tests themselves, in a temporary folder.

Every case is a function (folder -> Case) registered in CASES under its name; docs/bad-input.md has one row
per case with the policy (fail or repair), the message and what the user should do.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

USERS, ITEMS, ROWS = 40, 25, 400
T0 = 1_400_000_000


@dataclass
class Case:
    """Input files for `musicrec train` and the outcome the policy promises.

    outcome: "fail" (exit 2, one message holding every fragment in `says`), "repair" (runs on and the read
    notes hold every fragment in `says`) or "ok" (runs, nothing dropped). `culprit` is the file the message
    must name."""

    reviews: list[Path]
    meta: list[Path] = field(default_factory=list)
    outcome: str = "fail"
    says: tuple[str, ...] = ()
    culprit: Path | None = None
    stage: str = "read"  # where a failure is caught: read (DataError), validate (ValidationFailed), split
    rating_range: tuple[float, float] | None = None  # --rating-range, when the case gives one


def review(k: int, **changes: object) -> dict[str, object]:
    """The k-th valid review (Amazon 2018 format) of a small
    varied dataset: 40 users x 25 items, ratings 1-5."""
    rec: dict[str, object] = {
        "overall": float(1 + (k * 7 + k // 25) % 5),
        "verified": True,
        "reviewTime": "05 13, 2014",
        "reviewerID": f"U{k % USERS:03d}",
        "asin": f"B{(k * 3 + k // USERS) % ITEMS:04d}",
        "reviewerName": f"name {k % USERS}",
        "reviewText": f"review {k} of a fine record",
        "summary": "ok",
        "unixReviewTime": T0 + 3600 * k,
    }
    rec.update(changes)
    return {k2: v for k2, v in rec.items() if v is not _DROP}


_DROP = object()  # review(k, overall=_DROP) leaves the key out


def reviews(n: int = ROWS, **changed_rows: dict[str, object]) -> list[dict[str, object]]:
    """n distinct (user, item) reviews; changed_rows maps "k<index>" to field changes for that row."""
    rows = [review(k) for k in range(n)]
    for key, changes in changed_rows.items():
        k = int(key[1:])
        rows[k] = review(k, **changes)
    return rows


def lines(records: list[dict[str, object]]) -> list[bytes]:
    """One JSON document per record (NaN allowed, as Python's json writes it)."""
    return [json.dumps(r).encode() for r in records]


def write(path: Path, rows: list[bytes], *, gz: bool = False) -> Path:
    data = b"".join(r + b"\n" for r in rows)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def meta_2014(asin: str, title: str) -> bytes:
    """A 2014 metadata line: a Python dict literal with single quotes (ast.literal_eval only)."""
    return repr(
        {
            "asin": asin,
            "title": title,
            "salesRank": {"Music": 1},
            "related": {"also_bought": []},
            "categories": [["CDs & Vinyl"]],
        }
    ).encode()


def good_meta(d: Path) -> list[bytes]:
    return [meta_2014(f"B{i:04d}", f"album {i}") for i in range(ITEMS)]


# --- the cases ----------------------------------------------------------------------------------------------


def empty_file(d: Path) -> Case:
    p = write(d / "reviews.json", [])
    return Case([p], says=("file is empty", "re-download"), culprit=p)


def blank_lines_only(d: Path) -> Case:
    p = d / "reviews.json"
    p.write_bytes(b"\n  \n\n")
    return Case([p], says=("file is empty (only blank lines)",), culprit=p)


def truncated_gz(d: Path) -> Case:
    full = gzip.compress(b"".join(ln + b"\n" for ln in lines(reviews())))
    p = d / "reviews.json.gz"
    p.write_bytes(full[: len(full) // 2])
    return Case([p], says=("gzip stream is truncated or corrupt", "download the file again"), culprit=p)


def gzip_named_json(d: Path) -> Case:
    return Case([write(d / "reviews.json", lines(reviews()), gz=True)], outcome="ok")


def plain_named_gz(d: Path) -> Case:
    return Case([write(d / "reviews.json.gz", lines(reviews()))], outcome="ok")


def invalid_json_line(d: Path) -> Case:
    rows = lines(reviews())
    rows[136] = b'{"overall": 4.0, "reviewerID": "U999", "asin": '  # line 137: cut off mid-record
    return Case(
        [write(d / "reviews.json", rows)],
        outcome="repair",
        says=("dropped 1 invalid JSON line(s)", "line(s) 137"),
    )


def invalid_json_many_lines(d: Path) -> Case:
    rows = lines(reviews())
    for k in range(100, 400, 15):  # 20 bad lines of 400: over the max(10, 0.1%) a file may drop
        rows[k] = b"{not json at all"
    p = write(d / "reviews.json", rows)
    return Case(
        [p], says=("20 of 400 lines are not valid JSON", "line 101", "re-download or fix it"), culprit=p
    )


def meta_2014_not_literal(d: Path) -> Case:
    rows = good_meta(d)
    rows[5] = b"{'asin': 'B0005', 'title': 'unclosed"
    return Case(
        [write(d / "reviews.json", lines(reviews()))],
        [write(d / "meta.json", rows)],
        outcome="repair",
        says=("dropped 1 invalid Python-literal line(s)", "line(s) 6"),
    )


def meta_2014_calls_function_line(d: Path) -> Case:
    """One line of many holds code: it is parsed with ast.literal_eval only, never run, and dropped."""
    rows = good_meta(d)
    rows[3] = _attack(d)
    return Case(
        [write(d / "reviews.json", lines(reviews()))],
        [write(d / "meta.json", rows)],
        outcome="repair",
        says=("dropped 1 invalid Python-literal line(s)", "line(s) 4", "it was not run"),
    )


def meta_2014_calls_function(d: Path) -> Case:
    """Every line holds code: nothing is usable, so the run fails (and nothing is run)."""
    p = write(d / "meta.json", [_attack(d)] * 3)
    return Case(
        [write(d / "reviews.json", lines(reviews()))],
        [p],
        culprit=p,
        says=("line 1", "not a Python literal", "it was not run"),
    )


def pwned_marker(d: Path) -> Path:
    """The file the attack line in the 2014 metadata would create if it were ever evaluated."""
    return d / "pwned"


def _attack(d: Path) -> bytes:
    return (
        f"{{'asin': __import__('os').system('touch {pwned_marker(d)}'), 'title': 'x', "
        f"'salesRank': {{'Music': 1}}}}"
    ).encode()


def missing_rating_column_csv(d: Path) -> Case:
    p = d / "ratings.csv"
    p.write_text(
        "user_id,item_id,grade,timestamp\n"
        + "".join(f"U{k % USERS},B{k % ITEMS},{k % 5},{T0 + k}\n" for k in range(ROWS))
    )
    return Case([p], says=("no rating or play-count column", "found: user_id, item_id, grade"), culprit=p)


def unknown_header_csv(d: Path) -> Case:
    """A header naming no known column: an error listing
    what it found, never read as a headerless data row."""
    p = d / "ratings.csv"
    p.write_text(
        "listener,track,grade,when\n"
        + "".join(f"U{k % USERS},B{k % ITEMS},{1 + k % 5},{T0 + k}\n" for k in range(ROWS))
    )
    return Case(
        [p],
        culprit=p,
        says=(
            "line 1",
            "names none of the known columns",
            "found: listener, track, grade, when",
            "--columns user=...,item=...,rating=...",
        ),
    )


def missing_rating_field_json(d: Path) -> Case:
    p = write(d / "reviews.json", lines([review(k, overall=_DROP) for k in range(ROWS)]))
    return Case(
        [p], stage="validate", culprit=p, says=("expect_column_values_to_not_be_null", "rating not null")
    )


def _bad_rating(
    value: object, shown: str, stage: str = "validate", rating_range: tuple[float, float] | None = None
) -> Callable[[Path], Case]:
    def build(d: Path) -> Case:
        p = write(d / "reviews.json", lines(reviews(k7={"overall": value}, k300={"overall": value})))
        return Case([p], stage=stage, culprit=p, says=tuple(shown.split("|")), rating_range=rating_range)

    return build


# Without --rating-range the scale comes from the data (musicrec.data.scales): a stray 0, 6 or -1 fits no
# known scale (two 6s are too few to make a 1-10 scale); with the range given, validation counts the rows
# outside it.
_NO_SCALE = (
    "fit none of the known rating scales|2 of 400 ratings lie off the closest, 1-5 stars|--rating-range"
)
rating_zero = _bad_rating(0, f"{_NO_SCALE}|(e.g. 0, 0)", stage="read")
rating_six = _bad_rating(6, f"{_NO_SCALE}|(e.g. 6, 6)|all fit 1-10, but only 0.50%", stage="read")
rating_negative = _bad_rating(-1, f"{_NO_SCALE}|(e.g. -1, -1)", stage="read")
rating_outside_given_range = _bad_rating(
    6, "expect_column_values_to_be_between|rating between 1 and 5|2 of 400 rows|e.g. [6", rating_range=(1, 5)
)
rating_nan = _bad_rating(float("nan"), "expect_column_values_to_not_be_null|rating not null|2 of 400 rows")
rating_text = _bad_rating("five", "expect_column_values_to_not_be_null|rating not null|2 of 400 rows")


def _bad_id(column: str, value: object) -> Callable[[Path], Case]:
    key = {"user_id": "reviewerID", "item_id": "asin"}[column]

    def build(d: Path) -> Case:
        p = write(d / "reviews.json", lines(reviews(k11={key: value}, k12={key: value}, k13={key: value})))
        return Case(
            [p],
            stage="validate",
            culprit=p,
            says=("expect_column_value_lengths_to_be_between", f"{column} length >= 1", "3 of 400 rows"),
        )

    return build


user_null, user_empty = _bad_id("user_id", None), _bad_id("user_id", "")
item_null, item_empty = _bad_id("item_id", None), _bad_id("item_id", "")


def duplicate_pairs(d: Path) -> Case:
    """30 (user, item) pairs reviewed twice; the later review (by time) is kept wherever it is in the file."""
    rows = reviews()
    older = [
        {**rows[k], "overall": 1.0 if rows[k]["overall"] != 1.0 else 2.0, "unixReviewTime": T0 - 1000 - k}
        for k in range(30)
    ]
    return Case(
        [write(d / "reviews.json", lines(rows + older))],
        outcome="repair",
        says=("dropped 30 duplicate (user, item) review(s)", "kept the latest"),
    )


def all_ratings_identical(d: Path) -> Case:
    p = write(d / "reviews.json", lines([review(k, overall=4.0) for k in range(ROWS)]))
    return Case(
        [p],
        stage="validate",
        culprit=p,
        says=("expect_column_unique_value_count_to_be_between", "rating distinct values >= 2", "observed 1"),
    )


def non_utf8_review_text(d: Path) -> Case:
    """A UTF-8 file (it holds UTF-8 text) with damaged bytes
    on 3 lines: those bytes are replaced, not guessed."""
    rows = lines(reviews())
    rows[5] = rows[5].replace(b"fine record", "naïve café record".encode())
    for k in (20, 21, 250):
        rows[k] = rows[k].replace(b"fine record", b"caf\xe9 \xff\xfe record")
    return Case(
        [write(d / "reviews.json", rows)],
        outcome="repair",
        says=("3 line(s) had non-UTF-8 bytes, replaced with U+FFFD",),
    )


def latin1_reviews(d: Path) -> Case:
    """A file exported in Latin-1 (Windows-1252): not UTF-8
    and no UTF-8 text in it, so it is decoded as such."""
    rows = [
        ln.replace(b"fine record", "café crème".encode("cp1252")) if k % 3 == 0 else ln
        for k, ln in enumerate(lines(reviews()))
    ]
    return Case(
        [write(d / "reviews.json", rows)],
        outcome="repair",
        says=("not UTF-8: 134 line(s) hold bytes that are not UTF-8", "decoded as Windows-1252 (Latin-1)"),
    )


def enormous_review_text(d: Path) -> Case:
    return Case(
        [write(d / "reviews.json", lines(reviews(k42={"reviewText": "la " * 3_500_000})))], outcome="ok"
    )


def ambiguous_delimiter_csv(d: Path) -> Case:
    """Semicolons with decimal commas: both split every line, into different field counts."""
    p = d / "ratings.csv"
    p.write_text("".join(f"B{k % ITEMS};U{k % USERS};{1 + k % 4},5;{T0 + k}\n" for k in range(ROWS)))
    return Case(
        [p],
        culprit=p,
        says=("line 1", "cannot tell how to read this file", "first line", "--delimiter", "--columns user=1"),
    )


def meta_matches_no_review(d: Path) -> Case:
    """Policy: metadata is optional, so unmatched ids are a warning (with counts), never a failure."""
    rows = [meta_2014(f"X{i:04d}", f"other {i}") for i in range(10)]
    return Case(
        [write(d / "reviews.json", lines(reviews()))],
        [write(d / "meta.json", rows)],
        outcome="repair",
        says=("warning: none of the 10 metadata item(s) match a rated item",),
    )


def too_small_to_split(d: Path) -> Case:
    p = write(d / "reviews.json", lines(reviews(3)))
    return Case(
        [p],
        stage="validate",
        culprit=p,
        says=("expect_table_row_count_to_be_between", "row count between 50", "observed 3"),
    )


def missing_file(d: Path) -> Case:
    p = d / "no-such-reviews.json"
    return Case([p], says=("cannot open the file", "check the path"), culprit=p)


def zip_compressed(d: Path) -> Case:
    p = d / "reviews.json"
    p.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    return Case([p], says=("zip-compressed; only gzip is read", "decompress it"), culprit=p)


def metadata_given_as_reviews(d: Path) -> Case:
    p = write(d / "meta.json", good_meta(d))
    return Case(
        [p], says=("this is item metadata (meta-2014), not reviews", "pass it as metadata"), culprit=p
    )


CASES: dict[str, Callable[[Path], Case]] = {
    f.__name__: f
    for f in [
        empty_file,
        blank_lines_only,
        truncated_gz,
        gzip_named_json,
        plain_named_gz,
        invalid_json_line,
        invalid_json_many_lines,
        meta_2014_not_literal,
        meta_2014_calls_function_line,
        meta_2014_calls_function,
        missing_rating_column_csv,
        unknown_header_csv,
        missing_rating_field_json,
        duplicate_pairs,
        all_ratings_identical,
        non_utf8_review_text,
        latin1_reviews,
        enormous_review_text,
        ambiguous_delimiter_csv,
        meta_matches_no_review,
        too_small_to_split,
        missing_file,
        zip_compressed,
        metadata_given_as_reviews,
    ]
}
CASES.update(
    {
        "rating_zero": rating_zero,
        "rating_six": rating_six,
        "rating_negative": rating_negative,
        "rating_outside_given_range": rating_outside_given_range,
        "rating_nan": rating_nan,
        "rating_text": rating_text,
        "user_null": user_null,
        "user_empty": user_empty,
        "item_null": item_null,
        "item_empty": item_empty,
    }
)
