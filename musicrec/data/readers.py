"""Readers: every Amazon review/metadata format, and generic CSV/Parquet tables, into the canonical tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow as pa

from musicrec.data.delimited import Layout
from musicrec.data.detect import detect_format, file_layout
from musicrec.data.formats import ENCODING_NAMES, Tally, iter_records, sniff_encoding
from musicrec.data.ids import contained
from musicrec.data.schema import (
    COLUMN_ALIASES,
    COLUMNS_HINT,
    ReadStats,
    canonical_items,
    canonical_ratings,
    drop_duplicate_ratings,
    empty_items,
)
from musicrec.data.tables import (
    named_columns,
    read_csv_table,
    read_parquet_table,
    split_ids,
    unix_seconds,
)
from musicrec.errors import DataError

__all__ = ["Dataset", "detect_format", "load_dataset", "read_items", "read_ratings"]

RATING_NEEDED = ("user_id", "item_id")
RATING_OPTIONAL = ("rating", "weight", "timestamp", "review_text", "reviewer_name")
ITEM_NEEDED, ITEM_OPTIONAL = ("item_id", "title"), ("brand", "text", "description", "also_bought")
TABLE_FORMATS = (
    "generic-csv",
    "items-csv",
    "generic-parquet",
    "items-parquet",
)  # the ones columns= applies to
DELIMITED_FORMATS = ("ratings-csv", "delimited-ratings", "generic-csv", "items-csv")
Records = list[dict]
Columns = Mapping[str, str]
Reader = Callable[..., pd.DataFrame]  # (path, stats[, columns=]) -> canonical table


@dataclass
class Dataset:
    """Canonical ratings (latest review per user-item),
    canonical items, and what each reader kept or dropped."""

    ratings: pd.DataFrame
    items: pd.DataFrame
    stats: list[ReadStats] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        """Counts for reports: ratings, distinct users and items rated, duplicates dropped, bad lines."""
        return {
            "ratings": len(self.ratings),
            "users": int(self.ratings["user_id"].nunique()),
            "items": int(self.ratings["item_id"].nunique()),
            "duplicates_dropped": sum(s.duplicates_dropped for s in self.stats),
            "bad_lines": sum(s.bad_lines for s in self.stats),
            "meta_items": len(self.items),
        }

    def delimiters(self) -> dict[str, str]:
        """Each delimited input's delimiter and header, as found ("tab (detected, no header)")."""
        return {s.path: s.delimiter for s in self.stats if s.delimiter}

    def notes(self) -> list[str]:
        """What was repaired or is worth a warning, one line per note, each naming its file."""
        return [f"{s.path}: {note}" for s in self.stats for note in s.notes]


def read_ratings(
    path: str | Path, columns: Columns | None = None, delimiter: str | None = None
) -> tuple[pd.DataFrame, ReadStats]:
    """Read one reviews/ratings file of any supported format
    as the canonical ratings table (not de-duplicated).

    columns maps user, item, rating[, timestamp] to a CSV/Parquet file's own column names, or to 1-based
    positions ("1", "2", ...); delimiter forces one for delimited text (detected otherwise)."""
    return _read_one(
        path,
        _RATING_READERS,
        "item metadata ({fmt}), not reviews or ratings",
        "pass it as metadata (meta=...) and give a reviews or ratings file as reviews",
        columns,
        delimiter,
    )


def read_items(path: str | Path) -> tuple[pd.DataFrame, ReadStats]:
    """Read one item metadata file of any supported format as the canonical items table (one row per item)."""
    df, stats = _read_one(
        path,
        _ITEM_READERS,
        "a reviews/ratings file ({fmt}), not item metadata",
        "pass it as reviews and give a metadata file as meta",
    )
    df = df.drop_duplicates("item_id", keep="last").reset_index(drop=True)
    stats.rows_kept = len(df)
    return df, stats


def _read_one(
    path: str | Path,
    readers: dict[str, Reader],
    wrong_kind: str,
    hint: str,
    columns: Columns | None = None,
    delimiter: str | None = None,
) -> tuple[pd.DataFrame, ReadStats]:
    """Detect the format, refuse a file of the other kind, read it with the matching reader; a file that is
    not UTF-8 and holds no UTF-8 text is read again in its one-byte encoding (formats.sniff_encoding)."""
    fmt = detect_format(path, columns, delimiter)
    if fmt not in readers:
        raise DataError(path, "this is " + wrong_kind.format(fmt=fmt), hint=hint)
    if columns and fmt not in TABLE_FORMATS:
        raise DataError(
            path,
            f"columns= (--columns) names the columns of CSV and Parquet tables; this file is "
            f"{fmt}, whose fields musicrec knows",
            hint="leave out --columns for this file",
        )
    read = partial(readers[fmt], columns=columns) if columns else readers[fmt]
    stats = ReadStats(str(path), fmt)
    if fmt in DELIMITED_FORMATS:
        layout = file_layout(path, delimiter)
        read = partial(read, layout=layout)
        stats.delimiter = f"{layout.name} ({'given' if delimiter else 'detected'}, " + (
            "with a header)" if layout.header else "no header)"
        )
    df = read(path, stats)
    if stats.bad_utf8 and (encoding := sniff_encoding(path)) != "utf-8":
        bad, first = stats.bad_utf8, stats
        stats = ReadStats(str(path), fmt, encoding=encoding, delimiter=first.delimiter)
        df = read(path, stats)
        stats.notes.insert(
            0,
            f"not UTF-8: {bad} line(s) hold bytes that are not UTF-8 and none holds UTF-8 "
            f"text, so the file was decoded as {ENCODING_NAMES[encoding]}",
        )
    stats.rows_kept = len(df)
    return df, stats


def load_dataset(
    reviews: Sequence[str | Path],
    meta: Sequence[str | Path] = (),
    columns: Columns | None = None,
    delimiter: str | None = None,
) -> Dataset:
    """Read review files (+ optional metadata) into one Dataset, keeping the latest review per (user, item).

    columns ({"user": ..., "item": ..., "rating": ...[, "timestamp": ...]}) names the review tables' columns
    (or their 1-based positions); delimiter forces the review files' delimiter."""
    if not reviews:
        raise DataError("reviews", "no reviews or ratings file given", hint="pass at least one reviews file")
    # the metadata is read on a second thread meanwhile: its JSON parsing holds the GIL, the reviews' Arrow
    # parser and gzip do not (seed size: 9 s of metadata beside 4 s of reviews)
    with ThreadPoolExecutor(1, thread_name_prefix="musicrec-meta") as pool:
        pending = [pool.submit(read_items, p) for p in meta]
        try:
            parts, stats = [], []
            for i, path in enumerate(reviews):
                df, st = read_ratings(path, columns, delimiter)
                parts.append(df.assign(_src=i))
                stats.append(st)
        except BaseException:
            for f in pending:
                f.cancel()
            raise
        read = [f.result() for f in pending]  # a file's DataError, raised here in the files' order
    ratings, _ = drop_duplicate_ratings(pd.concat(parts, ignore_index=True))
    kept = ratings["_src"].value_counts()
    for i, st in enumerate(stats):
        st.duplicates_dropped = st.rows_kept - int(kept.get(i, 0))
        if st.duplicates_dropped:
            st.notes.append(
                f"dropped {st.duplicates_dropped} duplicate (user, item) review(s): "
                "kept the latest of each pair"
            )
    items = empty_items()
    if read:
        for df, st in read:
            _note_unmatched(df, st, ratings["item_id"])
        stats += [st for _, st in read]
        items = pd.concat([df for df, _ in read], ignore_index=True)
        items = items.drop_duplicates("item_id", keep="last").reset_index(drop=True)
    return Dataset(ratings.drop(columns="_src"), items, stats)


def _note_unmatched(items: pd.DataFrame, stats: ReadStats, rated: pd.Series) -> None:
    """Metadata is optional, so ids matching no rated item only warn (the items add no text); none matching at
    all usually means the metadata belongs to another dataset."""
    if len(items) and not contained(items["item_id"], rated).any():
        stats.notes.append(
            f"warning: none of the {len(items)} metadata item(s) match a rated item, so item text "
            "comes from the reviews only; check that this metadata belongs to these reviews"
        )


# --- JSON-lines reviews and metadata ------------------------------------------------------------------------


REVIEWS_2014 = pa.schema(
    [
        ("reviewerID", pa.string()),
        ("asin", pa.string()),
        ("overall", pa.float64()),
        ("unixReviewTime", pa.int64()),
        ("reviewTime", pa.string()),
        ("summary", pa.string()),
        ("reviewText", pa.string()),
        ("reviewerName", pa.string()),
    ]
)
REVIEWS_2023 = pa.schema(
    [
        ("user_id", pa.string()),
        ("parent_asin", pa.string()),
        ("asin", pa.string()),
        ("rating", pa.float64()),
        ("timestamp", pa.int64()),
        ("title", pa.string()),
        ("text", pa.string()),
    ]
)


def _raw(block: Records | pa.Table, schema: pa.Schema) -> pd.DataFrame:
    """The schema's fields of one block as columns; text fields as str ("" when absent)."""
    if isinstance(block, pa.Table):
        df = block.to_pandas()
        return df.fillna({f.name: "" for f in schema if f.type == pa.string()})
    return pd.DataFrame(
        {
            f.name: _strs([d.get(f.name) for d in block])
            if f.type == pa.string()
            else [d.get(f.name) for d in block]
            for f in schema
        }
    )


def _reviews_2014(block: Records | pa.Table) -> pd.DataFrame:
    """2014 and 2018 reviews share these keys (2018 adds verified, vote, style, image: not needed)."""
    raw = _raw(block, REVIEWS_2014)
    stamps = pd.to_numeric(raw["unixReviewTime"], errors="coerce")
    if stamps.isna().any():  # fall back to reviewTime, e.g. "09 13, 2009"
        days = pd.to_datetime(
            raw["reviewTime"].where(stamps.isna()), format="%m %d, %Y", errors="coerce", utc=True
        )
        stamps = stamps.fillna(unix_seconds(days))
    return _ratings_table(
        pd.DataFrame(
            {
                "user_id": raw["reviewerID"],
                "item_id": raw["asin"],
                "rating": raw["overall"],
                "timestamp": stamps,
                "review_text": _joined(raw["summary"], raw["reviewText"]),
                "reviewer_name": raw["reviewerName"],
            }
        )
    )


def _reviews_2023(block: Records | pa.Table) -> pd.DataFrame:
    """2023 reviews: item = parent_asin (else asin), timestamp in milliseconds, text = title + text."""
    raw = _raw(block, REVIEWS_2023)
    return _ratings_table(
        pd.DataFrame(
            {
                "user_id": raw["user_id"],
                "item_id": raw["parent_asin"].where(raw["parent_asin"] != "", raw["asin"]),
                "rating": raw["rating"],
                "timestamp": pd.to_numeric(raw["timestamp"], errors="coerce") // 1000,
                "review_text": _joined(raw["title"], raw["text"]),
            }
        )
    )


def _meta(objs: Records) -> pd.DataFrame:
    """All three metadata releases: item id, title, brand (2023: store), also-bought, description."""
    return _items_table(
        pd.DataFrame(
            {
                "item_id": [d.get("parent_asin") or d.get("asin") for d in objs],
                "title": _strs([d.get("title") for d in objs]),
                "brand": _strs([d.get("brand") or d.get("store") for d in objs]),
                "also_bought": [_also_bought(d) for d in objs],
                "description": _strs([d.get("description") for d in objs]),
            }
        )
    )


def _also_bought(rec: dict) -> list[str]:
    related = rec.get("related")
    ids = related.get("also_bought") if isinstance(related, dict) else rec.get("also_buy")
    return [str(x) for x in ids] if isinstance(ids, list) else []


def _read_records(
    path: str | Path,
    stats: ReadStats,
    *,
    to_table: Callable[[Records | pa.Table], pd.DataFrame],
    schema: pa.Schema | None = None,
    literal: bool = False,
) -> pd.DataFrame:
    tally = Tally(str(path), what="Python-literal" if literal else "JSON")
    frames = [
        to_table(block) for block in iter_records(path, tally, literal, schema, stats.encoding) if len(block)
    ]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else to_table([])
    tally.finish(stats, len(df))
    return df


def _joined(heads: pd.Series, bodies: pd.Series) -> pd.Series:
    """'summary. text' (or whichever is present): the summary or title goes before the review text."""
    both = (heads != "") & (bodies != "")
    return (heads + ". " + bodies).where(both, heads + bodies)


def _strs(values: list[object]) -> list[str]:
    return [v if type(v) is str else _as_str(v) for v in values]


def _as_str(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_as_str(v) for v in value)
    return str(value)


def _ratings_table(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical ratings; a missing user or item id becomes "" so validation can report the row."""
    return canonical_ratings(_fill_ids(df, ("user_id", "item_id")))


def _items_table(df: pd.DataFrame) -> pd.DataFrame:
    return canonical_items(_fill_ids(df, ("item_id",)))


def _fill_ids(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    return df.assign(**{c: df[c].where(df[c].notna(), "") for c in columns})


# --- CSV and Parquet tables (parsing in tables.py) ----------------------------------------------------------


def _read_ratings_csv(path: str | Path, stats: ReadStats, *, layout: Layout | None = None) -> pd.DataFrame:
    return _ratings_table(read_csv_table(path, stats, headerless=True))


def _read_delimited(path: str | Path, stats: ReadStats, *, layout: Layout) -> pd.DataFrame:
    """A headerless delimited file: user, item[, value[, timestamp]]; a 4th field that holds no times
    (CM100k's 0/1 "known") is left out, said in a note."""
    df = read_csv_table(path, stats, layout=layout)
    stats.notes.append(
        f"{layout.name}-separated, no header: read as {', '.join(df.columns)} (--columns "
        "names them by position otherwise)"
    )
    if "timestamp" in df and not _looks_like_times(df["timestamp"]):
        stats.notes.append("the 4th field holds no times (numbers before 1973 as seconds): left out")
        df = df.drop(columns="timestamp")
    if "rating" not in df:
        stats.implicit = "it has no value column (user, item pairs)"
    return _ratings_table(_with_value(df, stats))


def _generic_ratings(
    path: str | Path,
    stats: ReadStats,
    *,
    load: Reader,
    columns: Columns | None = None,
    layout: Layout | None = None,
) -> pd.DataFrame:
    positions = bool(columns) and all(str(v).strip().isdigit() for v in columns.values())
    options = {"layout": layout, "positions": positions} if layout is not None else {}
    table = load(path, stats, **options)
    df = named_columns(path, table, RATING_NEEDED, RATING_OPTIONAL, columns, stats)
    if "timestamp" in df:
        df["timestamp"] = unix_seconds(df["timestamp"])
    if "rating" not in df and "weight" not in df:
        if len(table.columns) > len(df.columns) and not positions:
            accepted = "; ".join(f"{c}: {', '.join(COLUMN_ALIASES[c])}" for c in ("rating", "weight"))
            found = ", ".join(map(str, table.columns))
            raise DataError(
                path,
                f"no rating or play-count column; found: {found}; names accepted (any case): {accepted}",
                hint=f"{COLUMNS_HINT} (a play count: weight=COLUMN)",
            )
        stats.implicit = "it has no value column (user, item pairs)"
    return _ratings_table(_with_value(df, stats))


def _with_value(df: pd.DataFrame, stats: ReadStats) -> pd.DataFrame:
    """The value of each row in the rating column: the rating, else an implicit count (weight; never a
    rating, stats.implicit says so), else 1 for a bare (user, item) pair."""
    if "weight" in df:
        stats.implicit = stats.implicit or "its value column is named like a count"
        df = df.drop(columns="rating", errors="ignore").rename(columns={"weight": "rating"})
    elif "rating" not in df:
        df = df.assign(rating=1.0)
    return df


def _looks_like_times(values: pd.Series) -> bool:
    """Dates, or numbers from 1973 on as epoch seconds (or milliseconds)."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().mean() > 0.5:
        return values.astype("str").str.strip().ne("").mean() > 0.5
    return bool(numbers.dropna().ge(1e8).mean() > 0.5)


def _generic_items(
    path: str | Path, stats: ReadStats, *, load: Reader, layout: Layout | None = None
) -> pd.DataFrame:
    df = named_columns(
        path,
        load(path, stats, **({"layout": layout} if layout else {})),
        ITEM_NEEDED,
        ITEM_OPTIONAL,
        stats=stats,
    )
    if "description" not in df and "text" in df:
        df = df.rename(columns={"text": "description"})
    if "also_bought" in df:
        df["also_bought"] = [split_ids(v) for v in df["also_bought"]]
    return _items_table(df)


_RATING_READERS: dict[str, Reader] = {
    "reviews-2014": partial(_read_records, to_table=_reviews_2014, schema=REVIEWS_2014),
    "reviews-2018": partial(_read_records, to_table=_reviews_2014, schema=REVIEWS_2014),
    "reviews-2023": partial(_read_records, to_table=_reviews_2023, schema=REVIEWS_2023),
    "ratings-csv": _read_ratings_csv,
    "delimited-ratings": _read_delimited,
    "generic-csv": partial(_generic_ratings, load=read_csv_table),
    "items-csv": partial(_generic_ratings, load=read_csv_table),
    "generic-parquet": partial(_generic_ratings, load=read_parquet_table),
    "items-parquet": partial(_generic_ratings, load=read_parquet_table),
}
_meta_items = partial(_read_records, to_table=_meta)
_ITEM_READERS: dict[str, Reader] = {
    "meta-2014": partial(_meta_items, literal=True),
    "meta-2018": _meta_items,
    "meta-2023": _meta_items,
    "items-csv": partial(_generic_items, load=read_csv_table),
    "generic-csv": partial(_generic_items, load=read_csv_table),
    "items-parquet": partial(_generic_items, load=read_parquet_table),
    "generic-parquet": partial(_generic_items, load=read_parquet_table),
}
