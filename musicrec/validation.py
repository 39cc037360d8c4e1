"""Data validation with Great Expectations: suites are JSON data in expectations/, reports are plain dicts.

great_expectations is imported inside the functions (about 3 s), so importing this module stays cheap.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from musicrec.data.schema import RATING_MAX, RATING_MIN
from musicrec.errors import MusicrecError, ValidationFailed
from musicrec.settings import get_settings

SUITES = ("ratings", "interactions", "items")
EXPECTATIONS_ENV = "MUSICREC_EXPECTATIONS_DIR"
MAX_EXAMPLES = 5
ONE_DAY = 86_400

# Short phrases for the details in reports and error messages; unknown types fall back to their name.
_PHRASES = {
    "expect_table_columns_to_match_set": "columns include {column_set}",
    "expect_table_row_count_to_be_between": "row count {bounds}",
    "expect_column_to_exist": "{column} exists",
    "expect_column_values_to_not_be_null": "{column} not null",
    "expect_column_value_lengths_to_be_between": "{column} length {bounds}",
    "expect_column_values_to_be_between": "{column} {bounds}",
    "expect_column_stdev_to_be_between": "{column} stdev {bounds}",
    "expect_column_unique_value_count_to_be_between": "{column} distinct values {bounds}",
    "expect_column_values_to_be_unique": "{column} unique",
    "expect_compound_columns_to_be_unique": "({columns}) unique",
    "expect_column_values_to_be_of_type": "{column} of type {type_}",
}


@dataclass
class ValidationReport:
    """The outcome of one suite on one table: one result dict per expectation, in suite order."""

    suite: str
    success: bool
    rows: int
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def raise_if_failed(self, source: str = "") -> None:
        """ValidationFailed listing each broken expectation
        (and the input it came from), unless all passed."""
        if not self.success:
            raise ValidationFailed(self.suite, self.failures(), source=source)

    def failures(self) -> list[dict[str, Any]]:
        """The broken expectations as {expectation, detail, examples} (the shape ValidationFailed takes);
        the detail ends with the expectation's note of intent, so a message says why the rule exists."""
        return [
            {
                "expectation": r["expectation"],
                "examples": r["examples"],
                "hint": r.get("hint", ""),
                "detail": f"{r['detail']}\n      why: {r['notes']}" if r["notes"] else r["detail"],
            }
            for r in self.results
            if not r["success"]
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (examples hold only str/int/float/bool/None, lists and dicts)."""
        return asdict(self)

    def to_markdown(self) -> str:
        """A Markdown summary and table, e.g. for a Prefect markdown artifact."""
        verdict = "passed" if self.success else f"FAILED ({len(self.failures())} broken)"
        lines = [
            f"### Data validation: suite `{self.suite}` {verdict}",
            "",
            f"{self.rows:,} rows, {len(self.results)} expectations, {self.seconds:.2f} s",
            "",
            "| ok | expectation | column(s) | unexpected | detail | examples |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.results:
            unexpected = "" if r["unexpected_count"] is None else f"{r['unexpected_count']:,}"
            examples = json.dumps(r["examples"], ensure_ascii=False) if r["examples"] else ""
            cells = [
                "✅" if r["success"] else "❌",
                f"`{r['expectation']}`",
                ", ".join(r["columns"]),
                unexpected,
                r["detail"],
                examples,
            ]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        return "\n".join(lines) + "\n"


def failure_markdown(suites: dict[str, dict[str, Any]], message: str) -> str:
    """The artifact for a failed validation: the error,
    then each suite's table (validation.json's content)."""
    tables = [ValidationReport(**report).to_markdown() for report in suites.values()]
    return "\n".join(["# Validation failed", "", "```", message, "```", "", *tables])


def expectations_dir() -> Path:
    """Where the suites live: $MUSICREC_EXPECTATIONS_DIR, else expectations/ at the repository root."""
    configured = get_settings().expectations_dir
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "expectations"


def load_suite(suite: str) -> dict[str, Any]:
    """Read expectations/<suite>.json as a dict (the JSON form of a GX ExpectationSuite)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    path = expectations_dir() / f"{suite}.json"
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise MusicrecError(
            f"cannot read expectation suite {path}: {exc}",
            hint=f"restore the file or point {EXPECTATIONS_ENV} at a folder holding {suite}.json",
        ) from exc
    return {**data, "name": suite}


def suite_parameters(
    now: float | None = None, rating_range: tuple[float, float] = (RATING_MIN, RATING_MAX)
) -> dict[str, Any]:
    """Run-time values the JSON suites refer to as {"$PARAMETER": name}: the newest plausible timestamp and
    the run's rating scale (musicrec.data.scales)."""
    now = time.time() if now is None else now
    return {
        "max_timestamp": int(now) + ONE_DAY,
        "rating_min": float(rating_range[0]),
        "rating_max": float(rating_range[1]),
    }


def validate_table(
    df: pd.DataFrame, suite: str, rating_range: tuple[float, float] = (RATING_MIN, RATING_MAX)
) -> ValidationReport:
    """Run the named suite (loaded from its JSON file) on the whole frame and summarise every expectation;
    ratings are checked against rating_range, the run's scale (default 1-5)."""
    start = time.perf_counter()
    suite_dict = load_suite(suite)
    gx_result, ordered_ids = _run_gx(df, suite_dict, suite_parameters(rating_range=rating_range))
    rows = len(df)
    by_id = {r.expectation_config.id: r for r in gx_result.results}
    integers = {c for c in df.columns if pd.api.types.is_integer_dtype(df[c].dtype)}
    results = [_summarise(by_id[i], rows, integers) for i in ordered_ids if i in by_id]
    return ValidationReport(
        suite=suite,
        success=bool(gx_result.success),
        rows=rows,
        results=results,
        seconds=round(time.perf_counter() - start, 3),
    )


def check(
    df: pd.DataFrame, suite: str, rating_range: tuple[float, float] = (RATING_MIN, RATING_MAX)
) -> ValidationReport:
    """validate_table, raising ValidationFailed (listing each broken expectation) unless everything passed."""
    report = validate_table(df, suite, rating_range)
    report.raise_if_failed()
    return report


def import_gx_in_background() -> threading.Thread:
    """Start importing great_expectations (about 3 s of Python) on a daemon thread, for a caller that has
    other work first (ingest reads the files meanwhile); the later import waits for it, or raises its
    error."""
    thread = threading.Thread(
        target=importlib.import_module, args=("great_expectations",), daemon=True, name="musicrec-import-gx"
    )
    thread.start()
    return thread


def _run_gx(
    df: pd.DataFrame, suite_dict: dict[str, Any], parameters: dict[str, Any]
) -> tuple[Any, list[str]]:
    """Validate df with a fresh ephemeral GX context; return
    the GX result and the expectation ids in suite order."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = ctx.suites.add(_build_suite(gx, suite_dict))
    asset = ctx.data_sources.add_pandas(name="musicrec").add_dataframe_asset(name=suite.name)
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_table")
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite.name}_validation", data=batch_definition, suite=suite)
    )
    with _no_fingerprint():
        result = definition.run(
            batch_parameters={"dataframe": _numpy_numbers(df)},
            expectation_parameters=parameters,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
        )
    return result, [e.id for e in suite.expectations]


def _build_suite(gx: Any, suite_dict: dict[str, Any]) -> Any:
    """gx.ExpectationSuite from the JSON dict; refuses a
    suite in which GX dropped or rejected an expectation."""
    path = expectations_dir() / f"{suite_dict['name']}.json"
    try:
        suite = gx.ExpectationSuite(**suite_dict)
    except Exception as exc:  # GX raises several types for a malformed suite; all mean "fix the file"
        raise MusicrecError(f"invalid expectation suite {path}: {exc}", hint="fix the JSON file") from exc
    if len(suite.expectations) != len(suite_dict.get("expectations") or []):
        # GX only logs an unknown expectation type and leaves
        # it out: a typo must not silently weaken the suite.
        raise MusicrecError(
            f"invalid expectation suite {path}: some expectations were not recognised",
            hint="check the expectation type names in the JSON file",
        )
    return suite


@contextmanager
def _no_fingerprint() -> Iterator[None]:
    """Skip GX's batch fingerprint: it hashes every cell (0.7 s at 1.6M ratings) and, for unhashable
    cells such as the items' also_bought lists, pickles the whole frame (+0.8 GB at 457k items).
    Nothing here reads the fingerprint; if GX drops the constant, this does nothing."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    saved = getattr(engine, "HASH_THRESHOLD", None)
    if saved is None:
        yield
        return
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = saved


def _numpy_numbers(df: pd.DataFrame) -> pd.DataFrame:
    """A view of df with nullable Int64/Float64 columns as float64 (NaN for NA); other columns are shared.

    GX compares numpy int/float columns vectorised but maps Python over every value of an extension
    dtype column (about 1.5 s per 1.6M-row column); nulls stay nulls, so the results are the same.
    """
    converted = {
        c: df[c].to_numpy(dtype="float64", na_value=np.nan)
        for c in df.columns
        if isinstance(df[c].dtype, pd.api.extensions.ExtensionDtype)
        and (pd.api.types.is_integer_dtype(df[c].dtype) or pd.api.types.is_float_dtype(df[c].dtype))
    }
    return df.assign(**converted) if converted else df


def _summarise(r: Any, rows: int, integer_columns: set[str]) -> dict[str, Any]:
    """One GX ExpectationValidationResult as a plain dict with a human detail line."""
    config = r.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    res = r.result or {}
    exc = _exception(r.exception_info)
    count = res.get("unexpected_count")
    total = res.get("element_count", rows)
    described = _describe(config.type, kwargs)
    if exc:
        detail = f"{described}: could not be checked ({exc})"
    elif (res.get("details") or {}).get("mismatched"):
        detail = f"{described}: {_mismatch(res['details']['mismatched'])}"
    elif count is not None:
        percent = 100.0 * count / total if total else 0.0
        detail = f"{described}: {count:,} of {total:,} rows ({_percent(percent)}) unexpected"
    else:
        detail = f"{described}: observed {_plain(res.get('observed_value'))}"
    columns = _columns(kwargs)
    examples = _examples(res, success=bool(r.success))
    if len(columns) == 1 and columns[0] in integer_columns:  # undo _numpy_numbers' float view: 5.0 -> 5
        examples = [int(x) if isinstance(x, float) and x.is_integer() else x for x in examples]
    return {
        "expectation": config.type,
        "columns": columns,
        "success": bool(r.success),
        "unexpected_count": None if count is None else int(count),
        "unexpected_percent": _plain(res.get("unexpected_percent")),
        "examples": examples,
        "example_rows": _plain(res.get("partial_unexpected_index_list", [])[:MAX_EXAMPLES]),
        "observed": _plain(res.get("observed_value")),
        "detail": detail,
        "notes": (config.meta or {}).get("notes", ""),
        "hint": (config.meta or {}).get("hint", ""),
    }


def _exception(info: Any) -> str:
    """The first line of the exception GX caught, if any (info is flat, or keyed by metric id)."""
    if not isinstance(info, dict):
        return ""
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for c in candidates:
        if c.get("raised_exception") or c.get("exception_message"):
            lines = str(c.get("exception_message") or "error").strip().splitlines()
            return lines[0] if lines else "error"
    return ""


def _mismatch(mismatched: dict[str, Any]) -> str:
    parts = [f"{k} {sorted(v)}" for k, v in mismatched.items() if v]
    return ", ".join(parts) or "mismatched"


def _examples(res: dict[str, Any], *, success: bool) -> list[Any]:
    """A few offending values (or rows, for compound keys); for a missing column, the names missing."""
    if success:
        return []
    if res.get("partial_unexpected_list"):
        return _plain(res["partial_unexpected_list"][:MAX_EXAMPLES])
    missing = (res.get("details") or {}).get("mismatched", {}).get("missing")
    return _plain(sorted(missing)[:MAX_EXAMPLES]) if missing else []


def _describe(kind: str, kwargs: dict[str, Any]) -> str:
    phrase = _PHRASES.get(kind)
    if phrase is None:
        return f"{kind} {kwargs}"
    column_list = kwargs.get("column_list") or []
    return phrase.format(
        column=kwargs.get("column", ""),
        columns=", ".join(column_list),
        column_set=sorted(kwargs.get("column_set") or []),
        type_=kwargs.get("type_", ""),
        bounds=_bounds(kwargs),
    )


def _bounds(kwargs: dict[str, Any]) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None and not kwargs.get("strict_min") and not kwargs.get("strict_max"):
        return f"between {_number(lo)} and {_number(hi)}"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if kwargs.get('strict_min') else '>='} {_number(lo)}")
    if hi is not None:
        parts.append(f"{'<' if kwargs.get('strict_max') else '<='} {_number(hi)}")
    return " and ".join(parts) or "unbounded"


def _columns(kwargs: dict[str, Any]) -> list[str]:
    if "column" in kwargs:
        return [str(kwargs["column"])]
    return [str(c) for c in kwargs.get("column_list") or []]


def _number(v: Any) -> str:
    return f"{int(v):,}" if isinstance(v, (int, float)) and float(v).is_integer() else str(v)


def _percent(p: float) -> str:
    return "<0.01%" if 0 < p < 0.01 else f"{p:.2f}%"


def _plain(v: Any) -> Any:
    """Convert GX/numpy/pandas values into JSON-safe Python values (NaN and NA become None)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) else (v if math.isfinite(v) else str(v))
    return None if v is pd.NA or v is pd.NaT else str(v)


def _md_cell(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
