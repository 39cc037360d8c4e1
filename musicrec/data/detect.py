"""Which format a file is in, from its content (never its name): magic bytes, then the first lines.

JSON lines are told apart by their keys (Amazon reviews 2014/2018/2023, metadata 2014/2018/2023),
delimited text (comma, tab, semicolon, pipe or spaces: musicrec.data.delimited) by its header (names
matched with their aliases, schema.COLUMN_ALIASES) or a headerless ratings layout, Parquet by its columns.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from musicrec.data.delimited import (
    DELIMITERS,
    POSITIONS_EXAMPLE,
    Layout,
    ambiguous,
    is_number,
    sniff_layout,
)
from musicrec.data.formats import first_nonblank_lines, open_binary, parse_line, truncated
from musicrec.data.schema import COLUMNS_HINT, canonical_column
from musicrec.errors import DataError

RATING_FORMATS = (
    "reviews-2014",
    "reviews-2018",
    "reviews-2023",
    "ratings-csv",
    "delimited-ratings",
    "generic-csv",
    "generic-parquet",
)
ITEM_FORMATS = ("meta-2014", "meta-2018", "meta-2023", "items-csv", "items-parquet")
SUPPORTED = RATING_FORMATS + ITEM_FORMATS
SNIFF_LINES, SNIFF_BYTES = 50, 64 << 20
PARQUET_MAGIC = b"PAR1"
OTHER_COMPRESSIONS = {b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_SUPPORTED_HINT = "supported formats (plain or gzipped): " + ", ".join(SUPPORTED)


def detect_format(
    path: str | Path, columns: Mapping[str, str] | None = None, delimiter: str | None = None
) -> str:
    """Name the format of a file from its content, never its name: one of SUPPORTED, else DataError.

    With columns (an explicit mapping, see tables.mapped_columns) a CSV's first line is its header and a CSV
    or Parquet file is a ratings table ("generic-csv"/"generic-parquet"): the reader checks the names.
    delimiter forces one (musicrec.data.delimited; detected otherwise)."""
    with open_binary(path) as stream:
        try:
            magic = stream.read(8)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise truncated(path, 1, exc) from None
    if not magic:
        raise DataError(path, "file is empty", hint="re-download or re-export the file")
    if magic.startswith(PARQUET_MAGIC):
        return "generic-parquet" if columns else _parquet_kind(path)
    for prefix, name in OTHER_COMPRESSIONS.items():
        if magic.startswith(prefix):
            raise DataError(
                path,
                f"the file is {name}-compressed; only gzip is read",
                hint=f"decompress it (or gzip it instead). {_SUPPORTED_HINT}",
            )
    lines = _sniff_lines(path)
    if not lines:
        raise DataError(path, "file is empty (only blank lines)", hint="re-download or re-export the file")
    if lines[0][1].lstrip()[:1] == b"{":
        return _records_kind(path, lines)
    return _csv_kind(path, lines, mapped=bool(columns), delimiter=delimiter)


def file_layout(path: str | Path, delimiter: str | None = None) -> Layout:
    """The delimiter and header of a delimited file (musicrec.data.delimited), from its first lines."""
    lines = _sniff_lines(path)
    return sniff_layout(path, lines, delimiter, complete=len(lines) < SNIFF_LINES)


def table_layout(path: str | Path) -> tuple[list[str], str]:
    """The header's column names and pandas' separator of a delimited table with a header line (the scoring
    jobs' --users and --pairs files: comma, tab, semicolon, pipe or spaces, as the training inputs). A header
    with no delimiter in it names the one column of a one-column file."""
    lines = _sniff_lines(path)
    if not lines:
        raise DataError(path, "file is empty", hint="give a CSV with a header line, or a Parquet file")
    first = lines[0][1].decode("utf-8", errors="replace").strip()
    if not any(d in first for d in DELIMITERS):
        return [first.strip('"')], ","
    layout = sniff_layout(path, lines, complete=len(lines) < SNIFF_LINES)
    return layout.first, layout.sep


def _sniff_lines(path: str | Path) -> list[tuple[int, bytes]]:
    """The first SNIFF_LINES non-blank lines (with their numbers), reading at most ~SNIFF_BYTES."""
    return first_nonblank_lines(path, SNIFF_LINES, SNIFF_BYTES)


def _json_kind(rec: dict) -> str | None:
    """Which JSON-lines format one record belongs to, by its keys."""
    keys = rec.keys()
    if "reviewerID" in keys or "overall" in keys:
        return "reviews-2018" if keys & {"verified", "vote", "style", "image"} else "reviews-2014"
    if "user_id" in keys or "rating" in keys:
        return "reviews-2023"
    if keys & {"parent_asin", "main_category", "details", "store"}:
        return "meta-2023"
    if keys & {"related", "categories", "salesRank", "imUrl"}:
        return "meta-2014"
    return "meta-2018" if "asin" in keys else None


def _records_kind(path: str | Path, lines: list[tuple[int, bytes]]) -> str:
    """The first recognised record decides, except that any
    Python-literal-only metadata line means meta-2014."""
    kinds: list[str] = []
    errors: list[tuple[int, str]] = []
    for lineno, line in lines:
        try:
            rec, literal = parse_line(line)[0], False
        except ValueError as exc:
            try:
                rec, literal = parse_line(line, literal=True)[0], True
            except (
                ValueError
            ) as lit_exc:  # say "it holds code" rather than a JSON error when that is the problem
                errors.append((lineno, str(lit_exc) if "it was not run" in str(lit_exc) else str(exc)))
                continue
        kind = _json_kind(rec) if isinstance(rec, dict) else None
        if kind and literal:
            kind = "meta-2014" if kind.startswith("meta") else None
        if kind:
            kinds.append(kind)
    if kinds:
        return "meta-2014" if "meta-2014" in kinds and kinds[0].startswith("meta") else kinds[0]
    if len(errors) == len(lines):
        raise DataError(
            path,
            f"looks like JSON lines but none of the first {len(lines)} lines parse: {errors[0][1]}",
            line=errors[0][0],
            hint="the file is corrupt: re-download or fix it",
        )
    raise DataError(
        path,
        "the records match none of the supported formats (no reviewerID/asin/user_id keys)",
        line=lines[0][0],
        hint=_SUPPORTED_HINT,
    )


def _csv_kind(
    path: str | Path, lines: list[tuple[int, bytes]], mapped: bool = False, delimiter: str | None = None
) -> str:
    """A header names ratings or items columns; a headerless comma file is item,user,rating[,timestamp]
    (Amazon's ratings-only layout), any other headerless file user,item[,rating[,timestamp]]."""
    lineno, text = lines[0][0], lines[0][1].decode("utf-8", errors="replace").strip()
    printable = sum(c.isprintable() or c == "\t" for c in text)
    if "\x00" in text or printable < 0.9 * len(text):
        raise DataError(path, "binary content: not a supported format", hint=_SUPPORTED_HINT)
    layout = sniff_layout(path, lines, delimiter, complete=len(lines) < SNIFF_LINES, formats=_SUPPORTED_HINT)
    if layout.header and not layout.rows and not {canonical_column(f) for f in layout.first} - {None}:
        raise DataError(
            path,
            f"one line of text naming none of the known columns: {text[:80]!r}",
            line=lineno,
            hint=f"not a ratings or items file. {_SUPPORTED_HINT}",
        )
    if layout.header and not layout.rows:
        raise DataError(
            path,
            f"has a header line but no data rows (header: {text[:80]!r})",
            line=lineno,
            hint="the export stopped early or was cut short: export it again with its rows",
        )
    if mapped:
        return "generic-csv"
    if layout.header:
        known = {canonical_column(f) for f in layout.first} - {None}
        if known:
            return "items-csv" if _items_only(known) else "generic-csv"
        raise DataError(
            path,
            "the first line is a header (text above numbers) but names none of the known "
            f"columns; found: {', '.join(layout.first)}",
            line=lineno,
            hint=f"{COLUMNS_HINT}; or by position, {POSITIONS_EXAMPLE}. {_SUPPORTED_HINT}",
        )
    if layout.delimiter == "," and layout.n_fields in (3, 4) and _numbers_at(layout.rows, 2):
        return "ratings-csv"
    if (
        layout.delimiter != ","
        and layout.n_fields in (2, 3, 4)
        and (layout.n_fields == 2 or _numbers_at(layout.rows, 2))
    ):
        return "delimited-ratings"
    raise ambiguous(
        path,
        text,
        lineno,
        f"{layout.n_fields} {layout.name}-separated fields and no header, so "
        "which field is the user, the item and the rating is not known",
        _SUPPORTED_HINT,
    )


def _numbers_at(rows: list[list[str]], j: int) -> bool:
    """Most sampled rows have a number in field j."""
    return sum(len(r) > j and is_number(r[j]) for r in rows) * 2 >= len(rows) > 0


def _parquet_kind(path: str | Path) -> str:
    import pyarrow.parquet as pq

    try:
        known = {canonical_column(n) for n in pq.read_schema(path).names}
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            path, f"cannot read the Parquet file: {exc}", hint="re-export or re-download it"
        ) from None
    return "items-parquet" if _items_only(known) else "generic-parquet"


def _items_only(known: set[str | None]) -> bool:
    """A table naming an item column but no user or rating column holds items, not ratings."""
    return "item_id" in known and not known & {"user_id", "rating", "weight"}
