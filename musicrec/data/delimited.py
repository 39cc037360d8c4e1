"""Delimited text of any common dialect: which delimiter a file uses and whether its first line is a header,
both from its first lines (never its name).

Delimiters tried: tab, comma, semicolon, pipe and runs of spaces. A delimiter fits when most sampled lines
split into the same number (>= 2) of fields, quotes honoured (a quoted field may hold the delimiter or a
newline). The best fit wins (ties: the order above); two single-character delimiters that both fit every
line with different field counts, or none that fits, make the file ambiguous: one error naming the first
line and the two flags that settle it (--delimiter, --columns by position).

The first line is a header when it names a known column (schema.COLUMN_ALIASES) or holds text in a column
whose other sampled values are numbers.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from musicrec.data.schema import canonical_column
from musicrec.errors import DataError

DELIMITERS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", " ": "spaces"}
# what --delimiter accepts: the character itself or a name
DELIMITER_NAMES = {
    **{v: k for k, v in DELIMITERS.items()},
    "space": " ",
    "\\t": "\t",
    "tsv": "\t",
    "csv": ",",
}
FIT_SHARE, SURE_SHARE = 0.5, 0.9
POSITIONS_EXAMPLE = "--columns user=1,item=2,rating=3[,timestamp=4]"


@dataclass(frozen=True)
class Layout:
    """A delimited file's delimiter (" " = runs of whitespace), header, fields per line and sampled lines."""

    delimiter: str
    header: bool
    n_fields: int
    first: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # sampled data rows (after the header, if any)

    @property
    def name(self) -> str:
        """How the log and report name the delimiter ("tab", "comma", ...)."""
        return DELIMITERS[self.delimiter]

    @property
    def sep(self) -> str:
        """The delimiter as pandas' read_csv takes it."""
        return r"\s+" if self.delimiter == " " else self.delimiter

    def positions(self) -> list[str]:
        """Column names of a file read by position: "1", "2", ..."""
        return [str(i + 1) for i in range(self.n_fields)]


def parse_delimiter(text: str) -> str:
    """--delimiter's value as one of DELIMITERS (a character or its name); ValueError if none."""
    if text in DELIMITERS:
        return text
    key = text.strip().lower()
    if key in DELIMITER_NAMES:
        return DELIMITER_NAMES[key]
    raise ValueError(f"--delimiter {text!r} is none of: , tab ; | space")


def split_rows(text: str, delimiter: str) -> list[list[str]]:
    """The sample's records under one delimiter (quotes honoured; a record may span lines)."""
    if delimiter == " ":
        text = "\n".join(line.strip() for line in text.split("\n"))
        reader = csv.reader(io.StringIO(text), delimiter=" ", skipinitialspace=True)
    else:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        return [[f.strip() for f in row] for row in reader if row and any(f.strip() for f in row)]
    except csv.Error:  # a field over the csv module's size limit: no quoting then
        return [line.split(delimiter) for line in text.split("\n") if line.strip()]


def _fit(rows: list[list[str]]) -> tuple[int, float]:
    """(the most common field count, the share of rows with it)."""
    if not rows:
        return 0, 0.0
    count, n = Counter(map(len, rows)).most_common(1)[0]
    return count, n / len(rows)


def sniff_layout(
    path: str | Path,
    lines: list[tuple[int, bytes]],
    delimiter: str | None = None,
    complete: bool = True,
    formats: str = "",
) -> Layout:
    """The layout of a delimited file from its first non-blank lines (see the module docstring).

    complete=False: the sample may end inside a record, so its last record is not counted."""
    text = "\n".join(ln.decode("utf-8", errors="replace") for _, ln in lines)
    first_line = lines[0][1].decode("utf-8", errors="replace").strip() if lines else ""
    lineno = lines[0][0] if lines else None
    fits: dict[str, tuple[int, float, list[list[str]]]] = {}
    for d in [delimiter] if delimiter else DELIMITERS:
        rows = split_rows(text, d)
        rows = rows[:-1] if not complete and len(rows) > 1 else rows
        count, share = _fit(rows)
        if count >= 2 and share >= (SURE_SHARE if d == " " else FIT_SHARE):  # prose splits at spaces too
            fits[d] = (count, share, rows)
    if delimiter and not fits:
        raise DataError(
            path,
            f"with --delimiter {DELIMITERS[delimiter]!r} the lines do not split into fields "
            f"(first line: {first_line[:100]!r})",
            line=lineno,
            hint="leave out --delimiter to have it detected, or name the right one",
        )
    sure = {d: f for d, f in fits.items() if d != " " and f[1] >= SURE_SHARE}
    if len({f[0] for f in sure.values()}) > 1:
        names = " and ".join(f"{DELIMITERS[d]} ({f[0]} fields)" for d, f in sure.items())
        raise ambiguous(path, first_line, lineno, f"both {names} split every line", formats)
    if not fits:
        raise ambiguous(
            path,
            first_line,
            lineno,
            "no delimiter (comma, tab, semicolon, pipe, spaces) splits the "
            "lines into the same number of fields",
            formats,
        )
    best = max(fits, key=lambda d: (fits[d][1], -list(DELIMITERS).index(d)))
    count, _, rows = fits[best]
    header = is_header(rows[0], rows[1:])
    return Layout(best, header, count, rows[0], rows[1:] if header else rows)


def ambiguous(path: str | Path, first_line: str, line: int | None, why: str, formats: str = "") -> DataError:
    """The one error of a file whose delimiter or columns cannot be told: its first line and the two flags
    (formats: the list of supported formats to end the hint with)."""
    return DataError(
        path,
        f"cannot tell how to read this file: {why}; first line: {first_line[:100]!r}",
        line=line,
        hint="name the delimiter with --delimiter (one of , tab ; | space) and the columns "
        f"by position with {POSITIONS_EXAMPLE} (1 = the first field); or convert the file to a "
        f"supported format. {formats or 'delimited text, JSON lines or Parquet, plain or gzipped'}",
    )


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_header(first: list[str], rest: list[list[str]]) -> bool:
    """A known column name, or text above a column of numbers; a lone line of text only is a header too."""
    if any(canonical_column(f) for f in first if not is_number(f)):
        return True
    if not rest:
        return all(f and not is_number(f) for f in first)
    for j, value in enumerate(first):
        below = [r[j] for r in rest if j < len(r) and r[j] != ""]
        if value and not is_number(value) and below and sum(map(is_number, below)) >= SURE_SHARE * len(below):
            return True
    return False
