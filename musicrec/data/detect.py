"""Which format a file is in, from its content (never its name): magic bytes, then the first lines.

JSON lines are told apart by their keys (Amazon reviews 2014/2018/2023, metadata 2014/2018/2023), CSV by its
header (names matched with their aliases, schema.COLUMN_ALIASES) or the headerless ratings-only layout, Parquet
by its columns. A first line whose rating-position (3rd) field is text is a header, never a data row.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from musicrec.data.formats import first_nonblank_lines, open_binary, parse_line, truncated
from musicrec.data.schema import COLUMNS_HINT, canonical_column
from musicrec.errors import DataError

RATING_FORMATS = ("reviews-2014", "reviews-2018", "reviews-2023", "ratings-csv", "generic-csv", "generic-parquet")
ITEM_FORMATS = ("meta-2014", "meta-2018", "meta-2023", "items-csv", "items-parquet")
SUPPORTED = RATING_FORMATS + ITEM_FORMATS
SNIFF_LINES, SNIFF_BYTES = 50, 64 << 20
PARQUET_MAGIC = b"PAR1"
OTHER_COMPRESSIONS = {b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_SUPPORTED_HINT = "supported formats (plain or gzipped): " + ", ".join(SUPPORTED)


def detect_format(path: str | Path, columns: Mapping[str, str] | None = None) -> str:
    """Name the format of a file from its content, never its name: one of SUPPORTED, else DataError.

    With columns (an explicit mapping, see tables.mapped_columns) a CSV's first line is its header and a CSV or
    Parquet file is a ratings table ("generic-csv"/"generic-parquet"): the reader checks the names."""
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
            raise DataError(path, f"the file is {name}-compressed; only gzip is read",
                            hint=f"decompress it (or gzip it instead). {_SUPPORTED_HINT}")
    lines = _sniff_lines(path)
    if not lines:
        raise DataError(path, "file is empty (only blank lines)", hint="re-download or re-export the file")
    if lines[0][1].lstrip()[:1] == b"{":
        return _records_kind(path, lines)
    return _csv_kind(path, lines, mapped=bool(columns))


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
    """The first recognised record decides, except that any Python-literal-only metadata line means meta-2014."""
    kinds: list[str] = []
    errors: list[tuple[int, str]] = []
    for lineno, line in lines:
        try:
            rec, literal = parse_line(line)[0], False
        except ValueError as exc:
            try:
                rec, literal = parse_line(line, literal=True)[0], True
            except ValueError as lit_exc:  # say "it holds code" rather than a JSON error when that is the problem
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
        raise DataError(path, f"looks like JSON lines but none of the first {len(lines)} lines parse: "
                        f"{errors[0][1]}", line=errors[0][0], hint="the file is corrupt: re-download or fix it")
    raise DataError(path, "the records match none of the supported formats (no reviewerID/asin/user_id keys)",
                    line=lines[0][0], hint=_SUPPORTED_HINT)


def _csv_kind(path: str | Path, lines: list[tuple[int, bytes]], mapped: bool = False) -> str:
    """A first line with text at the rating position is a header, of ratings or items by the names it holds;
    else most lines must look like the headerless item,user,rating[,timestamp]."""
    lineno, text = lines[0][0], lines[0][1].decode("utf-8", errors="replace").strip()
    printable = sum(c.isprintable() or c == "\t" for c in text)
    if "\x00" in text or printable < 0.9 * len(text):
        raise DataError(path, "binary content: not a supported format", hint=_SUPPORTED_HINT)
    fields = _csv_fields(text)
    if len(fields) < 2:
        raise _not_comma(path, lineno, text)
    if mapped:
        return "generic-csv"
    if _is_header(fields):
        known = {canonical_column(f) for f in fields} - {None}
        if known:
            return "items-csv" if _items_only(known) else "generic-csv"
        if len(fields) > 2 or not any(map(_is_number, fields)):
            raise DataError(path, "the first line is a header (its 3rd field is not a number) but names none of "
                            f"the known columns; found: {', '.join(f.strip() for f in fields)}", line=lineno,
                            hint=f"{COLUMNS_HINT}; or convert the file to a supported format. {_SUPPORTED_HINT}")
    rows = [_csv_fields(ln.decode("utf-8", errors="replace")) for _, ln in lines]
    if sum(len(r) in (3, 4) and any(_is_number(f) for f in r[2:]) for r in rows) * 2 >= len(rows):
        return "ratings-csv"
    raise DataError(path, f"a CSV line matching none of the supported layouts: {text[:80]!r}", line=lineno,
                    hint=f"expected item,user,rating,timestamp (no header) or a header naming the user, item and "
                    f"rating columns. {_SUPPORTED_HINT}")


def _is_header(fields: list[str]) -> bool:
    """Text (not a number, not empty) where the headerless layout has its rating, or fewer than 3 fields."""
    return len(fields) < 3 or (fields[2].strip() != "" and not _is_number(fields[2]))


def _csv_fields(text: str) -> list[str]:
    try:
        return next(csv.reader([text.strip()]), [])
    except csv.Error:  # e.g. a field over the csv module's size limit
        return text.split(",")


def _not_comma(path: str | Path, lineno: int, text: str) -> DataError:
    names = {";": "semicolon ';'", "\t": "tab", "|": "pipe '|'"}
    counts = {d: text.count(d) for d in names}
    delim = max(counts, key=counts.__getitem__)
    if counts[delim]:
        return DataError(path, f"the delimiter looks wrong: the line has no commas but {counts[delim]} "
                         f"{names[delim]} separator(s); CSV input must be comma-separated", line=lineno,
                         hint="re-export the file with ',' as the delimiter")
    return DataError(path, f"not a supported format (first line: {text[:80]!r})", line=lineno, hint=_SUPPORTED_HINT)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parquet_kind(path: str | Path) -> str:
    import pyarrow.parquet as pq

    try:
        known = {canonical_column(n) for n in pq.read_schema(path).names}
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the Parquet file: {exc}", hint="re-export or re-download it") from None
    return "items-parquet" if _items_only(known) else "generic-parquet"


def _items_only(known: set[str | None]) -> bool:
    """A table naming an item column but no user or rating column holds items, not ratings."""
    return "item_id" in known and not known & {"user_id", "rating"}
