"""The canonical ratings and items tables every reader produces (see DESIGN.md, data contracts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "review_text", "reviewer_name"]
ITEM_COLUMNS = ["item_id", "title", "brand", "also_bought", "description"]
RATING_MIN, RATING_MAX = 1.0, 5.0  # the default scale; a run's own scale comes from musicrec.data.scales

# Header names (compared lower-case) each canonical column is found under, best first: when a file has two of
# them (a 2023 export with asin and parent_asin), the earlier one is used and the reader notes it.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "user_id": ("user_id", "userid", "user", "reviewerid", "reviewer_id"),
    "item_id": (
        "item_id",
        "itemid",
        "item",
        "parent_asin",
        "asin",
        "songid",
        "song_id",
        "product_id",
        "trackid",
        "track_id",
        "artistid",
        "artist_id",
        "id",
    ),
    "rating": ("rating", "stars", "overall", "score"),
    # an implicit value (musicrec.data.feedback): never a rating, whatever its values
    "weight": (
        "weight",
        "plays",
        "playcount",
        "play_count",
        "count",
        "listens",
        "listen_count",
        "listening_count",
        "clicks",
        "click_count",
        "scrobbles",
        "views",
    ),
    "timestamp": ("timestamp", "time", "unixreviewtime", "unix_review_time", "date", "datetime"),
    "review_text": ("review_text", "reviewtext"),
    "reviewer_name": ("reviewer_name", "reviewername"),
    "title": ("title", "name", "track_name", "song_title"),
    "brand": ("brand", "artist", "artist_name"),
    **{name: (name,) for name in ("text", "description", "also_bought")},
}
# --columns / columns= keys: the canonical names, or user/item/rating/timestamp for short
COLUMN_KEYS = {
    "user": "user_id",
    "item": "item_id",
    "rating": "rating",
    "timestamp": "timestamp",
    "user_id": "user_id",
    "item_id": "item_id",
    "weight": "weight",
    "plays": "weight",
}

COLUMNS_HINT = (
    "name the columns with --columns user=...,item=...,rating=...[,timestamp=...] (columns= in "
    "load_dataset/ingest), or rename them to user_id, item_id, rating[, timestamp]"
)


def header_key(name: str) -> str:
    """A header name as compared with the aliases: stripped (also of a BOM), lower-case."""
    return name.strip().lstrip("\ufeff").lower()


def canonical_column(name: str) -> str | None:
    """The canonical column a header name stands for (case-insensitively, aliases included); None if none."""
    key = header_key(name)
    return next((c for c, aliases in COLUMN_ALIASES.items() if key in aliases), None)


@dataclass
class ReadStats:
    """What a reader kept and dropped, so reports can say it."""

    path: str
    format: str
    rows_read: int = 0
    rows_kept: int = 0
    bad_lines: int = 0
    duplicates_dropped: int = 0
    bad_utf8: int = 0  # lines (or CSV rows) whose non-UTF-8 bytes became U+FFFD
    encoding: str = "utf-8"  # how the bytes were decoded (formats.sniff_encoding decides)
    delimiter: str = ""  # delimited text: "comma", "tab", ... (musicrec.data.delimited)
    value_column: str = ""  # the input column the value came from ("" when positional or absent)
    implicit: str = ""  # why the file is implicit feedback by its columns ("" when not known from them)
    notes: list[str] = field(default_factory=list)


def canonical_ratings(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame with at least user_id, item_id, rating into the canonical ratings table."""
    out = pd.DataFrame(
        {
            "user_id": df["user_id"].astype("str"),
            "item_id": df["item_id"].astype("str"),
            "rating": pd.to_numeric(df["rating"], errors="coerce").astype("float64"),
            "timestamp": _int_or_null(df["timestamp"])
            if "timestamp" in df
            else pd.Series(pd.array([pd.NA] * len(df), dtype="Int64"), index=df.index),
            "review_text": _text(df, "review_text"),
            "reviewer_name": _text(df, "reviewer_name"),
        }
    )
    return out.reset_index(drop=True)


def canonical_items(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame with at least item_id into the canonical items table."""
    also = df["also_bought"] if "also_bought" in df else pd.Series([[]] * len(df), index=df.index)
    out = pd.DataFrame(
        {
            "item_id": df["item_id"].astype("str"),
            "title": _text(df, "title"),
            "brand": _text(df, "brand"),
            "also_bought": [
                list(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else [] for v in also
            ],
            "description": _text(df, "description"),
        }
    )
    return out.drop_duplicates("item_id", keep="last").reset_index(drop=True)


def drop_duplicate_ratings(ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the latest review per (user, item) (ties: the
    last in file order); return it and the count dropped."""
    # the (user, item) pair as one integer (the string pairs hashed 2x slower); the keys sorted, not the text
    user = pd.factorize(ratings["user_id"], use_na_sentinel=False)[0].astype(np.int64)
    item = pd.factorize(ratings["item_id"], use_na_sentinel=False)[0].astype(np.int64)
    keys = pd.DataFrame(
        {
            "pair": user * (int(item.max(initial=0)) + 1) + item,
            "timestamp": ratings["timestamp"].to_numpy(),
            "_pos": np.arange(len(ratings)),
        }
    )
    keys = keys.sort_values(["timestamp", "_pos"], na_position="first", kind="stable")
    pos = np.sort(keys.drop_duplicates("pair", keep="last")["_pos"].to_numpy())
    return ratings.iloc[pos].reset_index(drop=True), len(ratings) - len(pos)


def empty_items() -> pd.DataFrame:
    """An items table with no rows (metadata is optional)."""
    return canonical_items(pd.DataFrame({"item_id": pd.Series([], dtype="str")}))


def _text(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df:
        return pd.Series([""] * len(df), index=df.index, dtype="str")
    s = df[col].where(df[col].notna(), "")
    if isinstance(s.dtype, pd.StringDtype):  # already text (what the readers hand over): no per-value map
        return s.astype("str")
    return s.map(_as_text).astype("str")


def _as_text(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return " ".join(str(x) for x in v)
    return str(v)


def _int_or_null(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").round().astype("Int64")
