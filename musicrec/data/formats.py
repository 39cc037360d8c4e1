"""Bytes to records: gzip detected from content (never
the name), lines parsed in blocks. Formats: detect.py."""

from __future__ import annotations

import ast
import codecs
import gzip
import io
import json
import re
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

BLOCK_BYTES = 16 << 20  # decompressed bytes per parsed block: bounds memory, ~30k review lines
GZIP_MAGIC, BOM = b"\x1f\x8b", b"\xef\xbb\xbf"
ENCODING_NAMES = {"utf-8": "UTF-8", "cp1252": "Windows-1252 (Latin-1)", "latin-1": "Latin-1 (ISO-8859-1)"}
_CP1252_UNDEFINED = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")  # bytes Windows-1252 leaves undefined
_NON_ASCII_TEXT = re.compile("[^\x00-\x7f\ufffd]")  # a character only valid UTF-8 decodes to


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
    return DataError(
        path,
        f"gzip stream is truncated or corrupt{reached} ({exc})",
        line=line,
        hint="the download is incomplete or damaged: download the file again (gzip -t checks it)",
    )


def first_nonblank_lines(
    path: str | Path, limit: int, max_bytes: int = BLOCK_BYTES
) -> list[tuple[int, bytes]]:
    """The first `limit` non-blank lines with their 1-based numbers, reading about max_bytes at most."""
    found: list[tuple[int, bytes]] = []
    size = 0
    with open_binary(path) as stream:
        for start, lines in iter_line_blocks(path, stream):
            found += [(n, ln) for n, ln in enumerate(lines, start) if ln.strip()][: limit - len(found)]
            size += sum(map(len, lines))
            if len(found) >= limit or size >= max_bytes:
                break
    return found


def sniff_encoding(path: str | Path) -> str:
    """How to decode a file: "utf-8", unless it has bytes
    that are not UTF-8 and no non-ASCII UTF-8 text at all.

    Such a file is in a one-byte encoding: "cp1252" (Windows' superset of Latin-1, what "Latin-1" exports
    usually are), or "latin-1" when it holds bytes cp1252 leaves undefined. A UTF-8 file with a few damaged
    bytes stays UTF-8 (the readers replace those bytes and say so)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    invalid = undefined = False
    with open_binary(path) as stream:
        while block := _read_block(path, stream, 1):
            text = decoder.decode(block)
            if _NON_ASCII_TEXT.search(text):
                return "utf-8"
            invalid = invalid or "\ufffd" in text
            undefined = undefined or bool(_CP1252_UNDEFINED.search(block))
    invalid = invalid or "\ufffd" in decoder.decode(b"", final=True)
    return ("latin-1" if undefined else "cp1252") if invalid else "utf-8"


def iter_line_blocks(
    path: str | Path, stream: BinaryIO, encoding: str = "utf-8"
) -> Iterator[tuple[int, list[bytes]]]:
    """Yield (1-based number of the first line, lines without newline) per ~BLOCK_BYTES of content.

    Lines come back as UTF-8: a one-byte `encoding` (see sniff_encoding) is transcoded block by block."""
    carry, lineno = b"", 1
    while block := _read_block(path, stream, lineno):
        if encoding != "utf-8":
            block = block.decode(encoding).encode("utf-8")
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        if lines:
            if lineno == 1 and lines[0].startswith(BOM):
                lines[0] = lines[0][len(BOM) :]
            yield lineno, lines
            lineno += len(lines)
    if carry.strip():
        yield lineno, [carry[len(BOM) :] if lineno == 1 and carry.startswith(BOM) else carry]


def _read_block(path: str | Path, stream: BinaryIO, lineno: int) -> bytes:
    """Read ~BLOCK_BYTES in small steps, so a gzip stream
    that ends early is reported at the line it reached."""
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
        stats.rows_read, stats.bad_lines, stats.bad_utf8 = self.lines, self.bad, self.bad_utf8
        if self.bad_utf8:
            stats.notes.append(f"{self.bad_utf8} line(s) had non-UTF-8 bytes, replaced with U+FFFD")
        if not self.bad:
            return
        allowed = max(10, self.lines // 1000)
        line, error = self.first_bad[0]
        if self.bad > allowed or kept == 0:
            why = "no line is usable" if kept == 0 else f"more than the {allowed} a file may have dropped"
            raise DataError(
                self.path,
                f"{self.bad} of {self.lines} lines are not valid {self.what} ({why}); "
                f"first bad line: {error}",
                line=line,
                hint="the file is corrupt or not in a supported format: re-download or fix it",
            )
        numbers = ", ".join(str(n) for n, _ in self.first_bad)
        stats.notes.append(
            f"dropped {self.bad} invalid {self.what} line(s) (at most {allowed} allowed), "
            f"first at line(s) {numbers}: {error}"
        )


def iter_records(
    path: str | Path,
    tally: Tally,
    literal: bool = False,
    schema: pa.Schema | None = None,
    encoding: str = "utf-8",
) -> Iterator[list[dict] | pa.Table]:
    """Yield a JSON-lines (or literal-lines) file block by block; bad lines go to tally.

    With a schema, a clean block comes back as an Arrow table of just those fields (fast, no Python dicts);
    any block Arrow rejects is parsed line by line into dicts instead, so both paths keep the same policy."""
    with open_binary(path) as stream:
        for start, lines in iter_line_blocks(path, stream, encoding):
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
        table = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=options,
        )
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
