"""Generic CSV and Parquet tables: pandas' C parser under
the bad-line policy, header checks, id lists, times."""

from __future__ import annotations

import gzip
import re
import threading
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa

from musicrec.data.delimited import Layout
from musicrec.data.formats import Tally, first_nonblank_lines, open_binary, truncated
from musicrec.data.schema import COLUMN_ALIASES, COLUMN_KEYS, COLUMNS_HINT, ReadStats, header_key
from musicrec.errors import DataError

RATINGS_CSV_NAMES = ["item_id", "user_id", "rating", "timestamp"]  # the headerless ratings-only layout
MILLISECONDS = 1e11  # epoch seconds past this are in the year 5138: such a column holds milliseconds
HEADERLESS_NAMES = ["user_id", "item_id", "rating", "timestamp"]  # any other headerless delimited file
_CSV_LOCK = threading.Lock()


def read_csv_table(
    path: str | Path,
    stats: ReadStats,
    *,
    headerless: bool = False,
    layout: Layout | None = None,
    positions: bool = False,
) -> pd.DataFrame:
    """pandas' C parser: no field-size limit, bad UTF-8
    replaced, rows with extra fields dropped under the policy.

    layout (musicrec.data.delimited): the delimiter and header; positions: columns named "1", "2", ... (a
    header line, if any, skipped). pandas silently truncates rows when the first data row is the long one, so
    such rows are skipped first."""
    base: dict[str, object] = {"header": None, "names": RATINGS_CSV_NAMES} if headerless else {}
    if layout is not None:
        base["sep"] = layout.sep
        if positions:
            base.update(header=0 if layout.header else None, names=layout.positions())
        elif not layout.header:
            base.update(header=None, names=HEADERLESS_NAMES[: layout.n_fields])
    base["encoding"] = stats.encoding
    leading: list[int] = []
    candidates: list[int] = []
    while True:
        df, messages = parse_csv(path, {**base, "skiprows": [n - 1 for n in leading]})
        if not any("Length of header or names" in m for m in messages):
            return tallied(path, stats, df, messages, leading)
        if not leading:  # the rare case: read the first data lines' numbers only now
            skip = 0 if base.get("header", 0) is None else 1
            candidates = [n for n, _ in first_nonblank_lines(path, 11)][skip:]
        if len(leading) >= min(10, len(candidates)):
            raise DataError(
                path,
                f"each of the first {len(leading)} data lines has too many fields",
                line=candidates[0] if candidates else None,
                hint="expected item,user,rating,timestamp with no header, or one field per header name",
            )
        leading.append(candidates[len(leading)])


def tallied(
    path: str | Path,
    stats: ReadStats,
    df: pd.DataFrame,
    messages: list[str],
    leading: list[int] | None = None,
) -> pd.DataFrame:
    """Apply the bad-line policy to the rows pandas skipped (and any leading rows skipped before it ran)."""
    tally = Tally(str(path), what="CSV")
    for lineno in leading or []:
        tally.add_bad(lineno, "too many fields")
    for message in messages:
        for lineno, error in re.findall(r"Skipping line (\d+): ([^\n]*)", message):
            tally.add_bad(int(lineno), error)
    tally.lines, tally.bad_utf8 = len(df) + tally.bad, int(has_replacement(df).sum())
    tally.finish(stats, len(df))
    return df


def parse_csv(path: str | Path, options: dict[str, object]) -> tuple[pd.DataFrame, list[str]]:
    """All columns as str; returns the frame and pandas'
    ParserWarning messages (its only report of bad rows)."""
    with _CSV_LOCK, open_binary(path) as stream, warnings.catch_warnings(record=True) as caught:
        # the lock keeps concurrent reads' warnings apart (catch_warnings is process-wide)
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            df = pd.read_csv(
                stream,
                dtype=str,
                keep_default_na=False,
                on_bad_lines="warn",
                engine="c",
                encoding_errors="replace",
                index_col=False,
                **options,
            )
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise truncated(path, None, exc) from None
        except pd.errors.EmptyDataError:
            raise DataError(path, "file is empty", hint="re-download or re-export the file") from None
        except (pd.errors.ParserError, ValueError) as exc:
            line = re.search(r"line (\d+)", str(exc))
            raise DataError(
                path,
                f"cannot parse the CSV: {str(exc).strip()}",
                line=int(line[1]) if line else None,
                hint="fix the quoting or field count on that line",
            ) from None
    for w in caught:
        if not issubclass(w.category, pd.errors.ParserWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return df, [str(w.message) for w in caught if issubclass(w.category, pd.errors.ParserWarning)]


def has_replacement(df: pd.DataFrame) -> pd.Series:
    found = pd.Series(False, index=df.index)
    for col in df.columns:
        found |= df[col].astype("str").str.contains("\ufffd", regex=False, na=False)
    return found


def read_parquet_table(path: str | Path, stats: ReadStats) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            path, f"cannot read the Parquet file: {exc}", hint="re-export or re-download it"
        ) from None
    stats.rows_read = len(df)
    return df


def named_columns(
    path: str | Path,
    df: pd.DataFrame,
    needed: tuple[str, ...],
    optional: tuple[str, ...],
    columns: Mapping[str, str] | None = None,
    stats: ReadStats | None = None,
) -> pd.DataFrame:
    """The needed and optional columns under their canonical names, nothing else: those columns= maps first,
    then header names matched case-insensitively with their aliases. A needed column not found lists what
    was."""
    found = [str(c) for c in df.columns]
    chosen = mapped_columns(path, found, columns)
    for canon in (c for c in needed + optional if c not in chosen):
        aliases = COLUMN_ALIASES.get(canon, (canon,))
        free = [c for c in found if c not in chosen.values()]
        rank = {c: aliases.index(header_key(c)) for c in free if header_key(c) in aliases}
        if rank:
            chosen[canon] = min(rank, key=rank.__getitem__)
        if len(rank) > 1 and stats is not None:
            stats.notes.append(
                f"columns {', '.join(rank)} all name {canon}: used {chosen[canon]} "
                "(--columns chooses another)"
            )
    missing = [c for c in needed if c not in chosen]
    if missing:
        accepted = "; ".join(f"{c}: {', '.join(COLUMN_ALIASES.get(c, (c,)))}" for c in missing)
        hint = COLUMNS_HINT if "rating" in needed else "rename the columns (the first row must be a header)"
        raise DataError(
            path,
            f"missing column(s) {', '.join(missing)}; found: {', '.join(found) or 'none'}; "
            f"needed: {', '.join(needed)} (optional: {', '.join(optional)}); names accepted "
            f"(any case): {accepted}",
            hint=f"{hint}; rename the columns or convert the file",
        )
    return pd.DataFrame({canon: df[column] for canon, column in chosen.items()}, index=df.index)


def mapped_columns(path: str | Path, found: list[str], columns: Mapping[str, str] | None) -> dict[str, str]:
    """columns= ({"user": "listener", "item": "track", ...}) as canonical name -> the file's column (matched
    exactly, else ignoring case); a key that is no canonical name, or a column the file lacks, is an error."""
    chosen: dict[str, str] = {}
    for key, name in (columns or {}).items():
        canon = COLUMN_KEYS.get(key.strip().lower())
        if canon is None or canon in chosen:
            why = "is given twice" if canon else "is not one of user, item, rating, timestamp"
            raise DataError(path, f"columns= key {key!r} {why}", hint=COLUMNS_HINT)
        column = (
            name if name in found else next((c for c in found if header_key(c) == header_key(name)), None)
        )
        if column is None:
            raise DataError(
                path,
                f"the column {name!r} given for {canon} is not in the file; its columns: "
                f"{', '.join(found) or 'none'}",
                hint="fix --columns (names match ignoring case; the first row must be a header)",
            )
        chosen[canon] = column
    return chosen


def split_ids(value: object) -> list[str]:
    if isinstance(value, str):  # "a|b", "a b" or "['a', 'b']"
        return re.findall(r"[^\s,;|\[\]'\"]+", value)
    return [str(v) for v in value] if value is not None and hasattr(value, "__iter__") else []


def unix_seconds(values: pd.Series) -> pd.Series:
    """Unix seconds from numbers (epoch milliseconds when a column's values are past MILLISECONDS), numeric
    strings or dates (naive dates are UTC); anything else is null."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().any() and numbers.dropna().median() > MILLISECONDS:
            numbers = numbers // 1000
        dates = numbers.isna() & values.notna() & (values.astype("str").str.strip() != "")
        if not dates.any():
            return numbers
        values = pd.to_datetime(values.where(dates), errors="coerce", format="mixed", utc=True)
        return numbers.fillna(unix_seconds(values))
    utc = values.dt.tz_localize("UTC") if values.dt.tz is None else values
    return (utc - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
