"""Bytes to records: gzip and format sniffed from content (never the file name), lines parsed in blocks."""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson
import pyarrow as pa
import pyarrow.json as pj

from musicrec.data.schema import ReadStats
from musicrec.errors import DataError

RATING_FORMATS = ("reviews-2014", "reviews-2018", "reviews-2023", "ratings-csv", "generic-csv", "generic-parquet")
ITEM_FORMATS = ("meta-2014", "meta-2018", "meta-2023", "items-csv", "items-parquet")
SUPPORTED = RATING_FORMATS + ITEM_FORMATS
BLOCK_BYTES = 16 << 20  # decompressed bytes per parsed block: bounds memory, ~30k review lines
SNIFF_LINES, SNIFF_BYTES = 50, 64 << 20
GZIP_MAGIC, PARQUET_MAGIC, BOM = b"\x1f\x8b", b"PAR1", b"\xef\xbb\xbf"
OTHER_COMPRESSIONS = {b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
HEADER_NAMES = {"user_id", "item_id", "rating", "timestamp", "review_text", "reviewer_name", "title", "brand",
                "text", "description", "also_bought"}
_SUPPORTED_HINT = "supported formats (plain or gzipped): " + ", ".join(SUPPORTED)


def open_binary(path: str | Path) -> BinaryIO:
    """Open a file for reading bytes, transparently gunzipping when it starts with the gzip magic bytes."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
        return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")
    except OSError as exc:
        raise DataError(path, f"cannot open the file: {exc.strerror or exc}", hint="check the path") from None


def truncated(path: str | Path, line: int | None, exc: BaseException) -> DataError:
    """The error for a gzip stream that ends early or is corrupt."""
    reached = f" after line {line - 1}" if line else ""
    return DataError(path, f"gzip stream is truncated or corrupt{reached} ({exc})", line=line,
                     hint="the download is incomplete or damaged: download the file again (gzip -t checks it)")


def iter_line_blocks(path: str | Path, stream: BinaryIO) -> Iterator[tuple[int, list[bytes]]]:
    """Yield (1-based number of the first line, lines without newline) per ~BLOCK_BYTES of content."""
    carry, lineno = b"", 1
    while block := _read_block(path, stream, lineno):
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        if lines:
            if lineno == 1 and lines[0].startswith(BOM):
                lines[0] = lines[0][len(BOM):]
            yield lineno, lines
            lineno += len(lines)
    if carry.strip():
        yield lineno, [carry[len(BOM):] if lineno == 1 and carry.startswith(BOM) else carry]


def _read_block(path: str | Path, stream: BinaryIO, lineno: int) -> bytes:
    """Read ~BLOCK_BYTES in small steps, so a gzip stream that ends early is reported at the line it reached."""
    parts: list[bytes] = []
    size = 0
    while size < BLOCK_BYTES:
        try:
            part = stream.read1(BLOCK_BYTES - size)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise truncated(path, lineno + sum(p.count(b"\n") for p in parts), exc) from None
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def parse_line(line: bytes, literal: bool = False) -> tuple[object, bool]:
    """Parse one JSON line (or, if literal, a Python literal via ast.literal_eval); return (value, bad_utf8).

    Never evaluates code. Raises ValueError with the parser's message when the line is not valid."""
    try:
        return orjson.loads(line), False
    except orjson.JSONDecodeError as exc:
        first_error = exc
    try:
        text, bad_utf8 = line.decode("utf-8"), False
    except UnicodeDecodeError:
        text, bad_utf8 = line.decode("utf-8", errors="replace"), True
    try:
        return (ast.literal_eval(text.strip()) if literal else json.loads(text)), bad_utf8  # json: allows NaN
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        if literal and "malformed node" in str(exc):
            raise ValueError("not a Python literal (it holds code such as a call; it was not run)") from None
        raise ValueError(str(exc) if literal else str(first_error)) from None


@dataclass
class Tally:
    """Lines seen and rejected while reading one file, and the repair-under-a-threshold policy."""

    path: str
    what: str = "JSON"
    lines: int = 0
    bad: int = 0
    bad_utf8: int = 0
    first_bad: list[tuple[int, str]] = field(default_factory=list)

    def add_bad(self, lineno: int, error: str) -> None:
        self.bad += 1
        if len(self.first_bad) < 5:
            self.first_bad.append((lineno, error))

    def finish(self, stats: ReadStats, kept: int) -> None:
        """Record counts in stats; raise if bad lines exceed max(10, 0.1% of lines) or nothing was usable."""
        stats.rows_read, stats.bad_lines = self.lines, self.bad
        if self.bad_utf8:
            stats.notes.append(f"{self.bad_utf8} line(s) had non-UTF-8 bytes, replaced with U+FFFD")
        if not self.bad:
            return
        allowed = max(10, self.lines // 1000)
        line, error = self.first_bad[0]
        if self.bad > allowed or kept == 0:
            why = "no line is usable" if kept == 0 else f"more than the {allowed} a file may have dropped"
            raise DataError(self.path, f"{self.bad} of {self.lines} lines are not valid {self.what} ({why}); "
                            f"first bad line: {error}", line=line,
                            hint="the file is corrupt or not in a supported format: re-download or fix it")
        numbers = ", ".join(str(n) for n, _ in self.first_bad)
        stats.notes.append(f"dropped {self.bad} invalid {self.what} line(s) (at most {allowed} allowed), "
                           f"first at line(s) {numbers}: {error}")


def iter_records(path: str | Path, tally: Tally, literal: bool = False,
                 schema: pa.Schema | None = None) -> Iterator[list[dict] | pa.Table]:
    """Yield a JSON-lines (or literal-lines) file block by block; bad lines go to tally.

    With a schema, a clean block comes back as an Arrow table of just those fields (fast, no Python dicts);
    any block Arrow rejects is parsed line by line into dicts instead, so both paths keep the same policy."""
    with open_binary(path) as stream:
        for start, lines in iter_line_blocks(path, stream):
            table = _arrow_block(lines, schema) if schema is not None else None
            if table is not None:
                tally.lines += len(lines)
                yield table
            else:
                yield _parse_block(start, lines, tally, literal)


def _arrow_block(lines: list[bytes], schema: pa.Schema) -> pa.Table | None:
    data = b"\n".join(lines)
    if len(data) >= 2**31 - 1:
        return None
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(use_threads=False,
                             block_size=len(data) + 1), parse_options=options)
        table.validate(full=True)  # Arrow's JSON reader does not check UTF-8 itself
    except pa.ArrowException:
        return None
    return table if table.num_rows == len(lines) else None  # blank lines or two objects on a line


def _parse_block(start: int, lines: list[bytes], tally: Tally, literal: bool) -> list[dict]:
    try:  # fast path: the whole block as one JSON array; any oddity falls back to line by line
        objs = orjson.loads(b"[" + b",".join(lines) + b"]")
    except orjson.JSONDecodeError:
        objs = None
    if objs is not None and len(objs) == len(lines) and all(type(o) is dict for o in objs):
        tally.lines += len(lines)
        return objs
    out = []
    for i, line in enumerate(lines, start):
        if not line.strip():
            continue
        tally.lines += 1
        try:
            obj, bad_utf8 = parse_line(line, literal)
        except ValueError as exc:
            tally.add_bad(i, str(exc))
            continue
        if not isinstance(obj, dict):
            tally.add_bad(i, f"expected an object {{...}}, got {type(obj).__name__}")
            continue
        tally.bad_utf8 += bad_utf8
        out.append(obj)
    return out


def detect_format(path: str | Path) -> str:
    """Name the format of a file from its content, never its name: one of SUPPORTED, else DataError."""
    with open_binary(path) as stream:
        try:
            magic = stream.read(8)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise truncated(path, 1, exc) from None
    if not magic:
        raise DataError(path, "file is empty", hint="re-download or re-export the file")
    if magic.startswith(PARQUET_MAGIC):
        return _parquet_kind(path)
    for prefix, name in OTHER_COMPRESSIONS.items():
        if magic.startswith(prefix):
            raise DataError(path, f"the file is {name}-compressed; only gzip is read",
                            hint=f"decompress it (or gzip it instead). {_SUPPORTED_HINT}")
    lines = _sniff_lines(path)
    if not lines:
        raise DataError(path, "file is empty (only blank lines)", hint="re-download or re-export the file")
    if lines[0][1].lstrip()[:1] == b"{":
        return _records_kind(path, lines)
    return _csv_kind(path, lines)


def _sniff_lines(path: str | Path) -> list[tuple[int, bytes]]:
    """The first SNIFF_LINES non-blank lines (with their numbers), reading at most ~SNIFF_BYTES."""
    found: list[tuple[int, bytes]] = []
    size = 0
    with open_binary(path) as stream:
        for start, lines in iter_line_blocks(path, stream):
            found += [(n, ln) for n, ln in enumerate(lines, start) if ln.strip()][: SNIFF_LINES - len(found)]
            size += sum(map(len, lines))
            if len(found) >= SNIFF_LINES or size >= SNIFF_BYTES:
                break
    return found


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


def _csv_kind(path: str | Path, lines: list[tuple[int, bytes]]) -> str:
    """A header names known columns; else most lines must look like item,user,rating[,timestamp]."""
    lineno, text = lines[0][0], lines[0][1].decode("utf-8", errors="replace").strip()
    printable = sum(c.isprintable() or c == "\t" for c in text)
    if "\x00" in text or printable < 0.9 * len(text):
        raise DataError(path, "binary content: not a supported format", hint=_SUPPORTED_HINT)
    fields = _csv_fields(text)
    if len(fields) < 2:
        raise _not_comma(path, lineno, text)
    names = {f.strip().lower() for f in fields}
    if names & HEADER_NAMES:
        return "generic-csv" if names & {"user_id", "rating"} or "item_id" not in names else "items-csv"
    rows = [_csv_fields(ln.decode("utf-8", errors="replace")) for _, ln in lines]
    if sum(len(r) in (3, 4) and any(_is_number(f) for f in r[2:]) for r in rows) * 2 >= len(rows):
        return "ratings-csv"
    raise DataError(path, f"a CSV line matching none of the supported layouts: {text[:80]!r}", line=lineno,
                    hint=f"expected item,user,rating,timestamp (no header) or a header naming user_id, item_id, "
                    f"rating. {_SUPPORTED_HINT}")


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
        names = {n.strip().lower() for n in pq.read_schema(path).names}
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the Parquet file: {exc}", hint="re-export or re-download it") from None
    return "items-parquet" if "item_id" in names and not names & {"user_id", "rating"} else "generic-parquet"
