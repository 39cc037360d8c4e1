"""Checks of everything the CLI can check before Prefect starts (about 3 s of import plus ~13 s of server).

Each check returns the parsed value or raises one MusicrecError naming what is wrong and what to do; the
Prefect environment defaults (start-up timeout, no telemetry) are set here too. Nothing imports Prefect or
torch.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from musicrec import registry
from musicrec.errors import ConfigError, DataError, UsageError
from musicrec.settings import get_settings
from musicrec.store import Store, layout, open_store
from musicrec.store.pointer import read_pointer

STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
# Prefect's 20 s is too short for a first start on 2 cores (creating the database took 22.8 s): set before
# Prefect is imported, unless the user chose a value (environment or Prefect profile). Offline by default.
PREFECT_DEFAULTS = {STARTUP_TIMEOUT: "120", "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
STARTUP_TIMED_OUT = "Timed out while attempting to connect to ephemeral Prefect API server"
COLUMN_KEYS = ("user", "item", "rating", "weight", "timestamp")
REQUIRED_COLUMNS = ("user", "item")
COLUMNS_EXAMPLE = (
    "--columns user=listener,item=track,rating=stars[,timestamp=ts] (or by position: user=1,item=2,rating=3)"
)


def prefect_defaults() -> None:
    """Put PREFECT_DEFAULTS into the environment where
    neither it nor the active Prefect profile has a value."""
    profile = _profile_settings()
    for name, value in PREFECT_DEFAULTS.items():
        if name not in profile:
            os.environ.setdefault(name, value)


def _profile_settings() -> set[str]:
    """Setting names of the active profile in $PREFECT_HOME/profiles.toml (read without importing Prefect)."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    return set(data.get("profiles", {}).get(active, {}))


def startup_timeout_message() -> str:
    """What to do when Prefect's temporary server did not answer in time."""
    seconds = os.environ.get(STARTUP_TIMEOUT)
    within = f"{seconds} s" if seconds else "the time set in the Prefect profile"
    return (
        f"error: Prefect's temporary server did not start within {within} ({STARTUP_TIMEOUT})\n"
        f"  what to do: run the command again (the first start creates Prefect's database and is the "
        f"slowest); raise {STARTUP_TIMEOUT} (e.g. 300); or start a server once (make server) and "
        f"export PREFECT_API_URL=http://127.0.0.1:4200/api"
    )


def check_store(uri: str) -> Store:
    """The store the command will use (argument, else MUSICREC_STORE_URI, else ./.musicrec/store)."""
    return open_store(uri or get_settings().store_uri)


def check_output_outside(out: str, store: Store) -> Store:
    """The --out store of a scoring job, refused when it lies inside the store it reads from: its models/
    (published bundles and the champion pointer), runs/ or tuning/ must only hold what training wrote."""
    target = open_store(out)
    where = target.uri.rstrip("/") + "/"
    for folder in (layout.MODELS, layout.RUNS, layout.TUNING):
        reserved = store.url_for(folder).rstrip("/") + "/"
        if where.startswith(reserved):
            raise UsageError(
                f"--out {out} is inside {reserved}, which holds what training publishes",
                hint=f"write elsewhere: another folder, or --out {store.url_for(layout.SCORES)}/<name>",
            )
    return target


def check_work_uri(uri: str) -> str:
    """MUSICREC_WORK_URI: empty (local workspaces under work_dir) or an s3:// prefix whose bucket exists."""
    if not uri:
        return ""
    from musicrec.pipeline.workspace import is_remote

    if not is_remote(uri):
        raise UsageError(
            f"MUSICREC_WORK_URI={uri!r} is not an s3:// URI",
            hint="use s3://bucket/prefix, or unset it and set MUSICREC_WORK_DIR for a local folder",
        )
    open_store(uri).list(layout.WORKSPACE_MANIFESTS)  # a missing bucket or bad credentials fail here, early
    return uri


def parse_models(text: str) -> list[str]:
    """The comma-separated model names, at least one, each a registered model."""
    models = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    rating = registry.names("rating")
    if not models:
        raise UsageError(
            f"--models {text!r} names no model", hint=f"choose one or more of {', '.join(rating)}"
        )
    unknown = [m for m in models if m not in rating]
    if unknown:
        raise UsageError(f"--models: unknown model(s) {unknown}", hint=f"choose from {', '.join(rating)}")
    return models


def parse_retrieval_models(text: str) -> list[str]:
    """--retrieval-models: comma-separated implicit models, or "none"."""
    retrieval = registry.names("retrieval")
    if text.strip().lower() == "none":
        return []
    models = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in models if m not in retrieval]
    if unknown or not models:
        raise UsageError(
            f"--retrieval-models: unknown model(s) {unknown or [text]}",
            hint=f"choose from {', '.join(retrieval)}, or none",
        )
    return models


def parse_overrides(text: str, models: list[str]) -> dict[str, dict[str, Any]]:
    """--overrides as JSON, every model named trained and every key and value valid for its family."""
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"--overrides is not valid JSON: {e}", hint='e.g. --overrides \'{"gmf": {"epochs": 5}}\''
        ) from None
    try:
        registry.check_overrides(models, overrides)
    except ConfigError as e:
        message = e.message if e.message.startswith("--overrides") else f"--overrides: {e.message}"
        raise ConfigError(message, hint=e.hint) from None
    return overrides


def parse_columns(text: str) -> dict[str, str]:
    """--columns user=a,item=b,rating=c[,timestamp=d] -> {"user": "a", ...}; empty text = {}. The columns are
    named by header (a play count as weight=...) or all by 1-based position (user=1,item=2,rating=3)."""
    if not text.strip():
        return {}
    columns: dict[str, str] = {}
    for part in text.split(","):
        key, sep, column = (s.strip() for s in part.partition("="))
        key = key.removesuffix("_id")
        if not sep or not column or key not in COLUMN_KEYS:
            raise UsageError(
                f"--columns: {part.strip()!r} is not NAME=COLUMN with NAME one of {', '.join(COLUMN_KEYS)}",
                hint=f"e.g. {COLUMNS_EXAMPLE}",
            )
        if key in columns:
            raise UsageError(f"--columns names {key} twice", hint=f"e.g. {COLUMNS_EXAMPLE}")
        columns[key] = column
    missing = [k for k in REQUIRED_COLUMNS if k not in columns]
    if missing:
        raise UsageError(f"--columns lacks {', '.join(missing)}", hint=f"e.g. {COLUMNS_EXAMPLE}")
    numbers = [v.isdigit() for v in columns.values()]
    if any(numbers) and not all(numbers):
        raise UsageError(
            "--columns mixes header names and positions",
            hint="name every column by position (user=1,item=2,rating=3) or every one by its header name",
        )
    if any(v.isdigit() and int(v) < 1 for v in columns.values()):
        raise UsageError(
            "--columns positions start at 1 (the first field)", hint="e.g. user=1,item=2,rating=3"
        )
    return columns


def parse_delimiter(text: str) -> str:
    """--delimiter: , tab ; | or space (a name or the character); empty text = "" (detected)."""
    if not text:
        return ""
    from musicrec.data.delimited import parse_delimiter as parse

    try:
        return parse(text)
    except ValueError as e:
        raise UsageError(str(e), hint="e.g. --delimiter tab, --delimiter ';' or --delimiter space") from None


def parse_rating_range(text: str) -> list[float] | None:
    """--rating-range MIN,MAX -> [min, max] (min < max, both finite); empty text = None."""
    if not text.strip():
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--rating-range {text!r} is not MIN,MAX", hint="e.g. --rating-range 1,5") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UsageError(f"--rating-range {text!r}: need finite MIN < MAX", hint="e.g. --rating-range 1,5")
    return [low, high]


def check_positive(flag: str, value: int) -> int:
    return check_at_least(flag, value, 1, 10)


def check_at_least(flag: str, value: int, least: int, example: int) -> int:
    if value < least:
        raise UsageError(f"{flag} {value}: must be at least {least}", hint=f"e.g. {flag} {example}")
    return value


def check_seconds(flag: str, value: float) -> float:
    if not value > 0:
        raise UsageError(
            f"{flag} must be a positive number of seconds, got {value:g}", hint=f"e.g. {flag} 600"
        )
    return value


def check_inputs(reviews: list[str], meta: list[str], columns: dict[str, str], delimiter: str = "") -> None:
    """Every input exists and is in a format the readers know (or, with --columns, holds those columns); a
    delimited file's delimiter and header are found here, so an ambiguous or header-only file fails now."""
    from musicrec.data.detect import ITEM_FORMATS, RATING_FORMATS

    for flag, paths, kinds in (("--reviews", reviews, RATING_FORMATS), ("--meta", meta, ITEM_FORMATS)):
        for path in paths:
            _check_exists(flag, path)
            if flag == "--reviews" and columns:
                _check_mapped(path, columns, delimiter)
                continue
            fmt = _detect(path, delimiter if flag == "--reviews" else "")
            if fmt not in kinds:
                raise DataError(
                    path,
                    f"is {fmt}, which {flag} does not take",
                    hint=f"{flag} takes {', '.join(kinds)}; did you swap --reviews and --meta?",
                )


def count_column(reviews: list[str], columns: dict[str, str], delimiter: str = "") -> str | None:
    """The first input whose header alone makes the run implicit feedback (a value column named like a play
    count, and none named like a rating), as "<path>: <column>"; None when the headers do not say. What the
    values say (counts that fit no rating scale) is decided on reading, in the flow."""
    from musicrec.data.detect import detect_format, file_layout
    from musicrec.data.schema import canonical_column

    if columns:
        return (
            None
            if "rating" in columns or "weight" not in columns
            else f"--columns weight={columns['weight']}"
        )
    for path in reviews:
        fmt = detect_format(path, delimiter=delimiter or None)
        if fmt == "generic-csv":
            layout = file_layout(path, delimiter or None)
            names = layout.first if layout.header else []
        elif fmt == "generic-parquet":
            names = header_columns(path)
        else:
            continue
        found = {canonical_column(n): n for n in names}
        if "weight" in found and "rating" not in found:
            return f"{path}: column {found['weight']!r}"
    return None


def check_tags(tags: str, names: str) -> None:
    """--tags and --tag-names come together, exist, and split into enough fields (3 and 2)."""
    from musicrec.data.tags import tag_layout

    if not (tags and names):
        given, missing = ("--tags", "--tag-names") if tags else ("--tag-names", "--tags")
        raise UsageError(
            f"{given} needs {missing}: tag assignments name tag ids, the names file gives their text",
            hint="e.g. --tags user_taggedartists.dat --tag-names tags.dat",
        )
    for flag, path, fields, what in (("--tags", tags, 3, "tags"), ("--tag-names", names, 2, "tag-names")):
        _check_exists(flag, path)
        tag_layout(path, fields, what)


def check_job_file(flag: str, path: str, columns: list[str]) -> None:
    """A scoring input (--pairs, --users) exists and has the columns its job needs."""
    _check_exists(flag, path)
    _check_columns(path, columns, flag)


def check_version(store: Store, version: str) -> None:
    """A named version is published in the store; without one, the store has a champion."""
    if not version:
        if read_pointer(store)[0] is None:  # a damaged one raises PointerDamaged (name a --version)
            raise UsageError(
                f"no champion in {store.uri} (no {layout.CHAMPION})",
                hint="train one first (musicrec train), name a --version, or check --store",
            )
        return
    if not store.exists(layout.bundle_metadata(version)):
        known = layout.bundle_versions(store.list(layout.MODELS))
        listed = ", ".join(known[-5:]) if known else "none"
        raise UsageError(
            f"no model version {version!r} in {store.uri}",
            hint=f"published versions: {listed} (musicrec champion shows the current one)",
        )


def check_user_id(user_id: str) -> str:
    """A user id to recommend for: not empty and not only whitespace (ids are otherwise taken as they are)."""
    if not user_id.strip():
        raise UsageError(
            f"user id {user_id!r} is empty", hint="give the id of a user, e.g. musicrec recommend A1B2C3"
        )
    return user_id


def check_run(store: Store, run_id: str) -> None:
    """The training run's report is in the store."""
    if not store.exists(layout.run_report(run_id)):
        raise UsageError(
            f"no run {run_id!r} in {store.uri}", hint="musicrec runs lists the runs in this store"
        )


def pydantic_message(e: ValidationError, what: str) -> UsageError:
    """A pydantic error on flow parameters as one line: field=value: problem."""
    problems = "; ".join(
        f"{'.'.join(map(str, err['loc'])) or what}={err.get('input')!r}: {err['msg']}" for err in e.errors()
    )
    return UsageError(f"{what}: {problems}", hint="fix the argument and run again")


def _check_exists(flag: str, path: str) -> None:
    if not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise UsageError(
            f"{flag} {path}: {what}", hint="check the path (relative paths start from this folder)"
        )


def _detect(path: str, delimiter: str = "") -> str:
    from musicrec.data.detect import detect_format

    return detect_format(path, delimiter=delimiter or None)


def header_columns(path: str) -> list[str]:
    """The column names of a delimited table with a header line (musicrec.data.detect.table_layout; gzip is
    fine) or of a Parquet file."""
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as e:
            raise DataError(path, f"cannot read the Parquet file: {e}", hint="re-export it") from None
    from musicrec.data.detect import table_layout

    return table_layout(path)[0]


def _check_mapped(path: str, columns: dict[str, str], delimiter: str = "") -> None:
    """A --columns input: a ratings table (delimited or Parquet) holding the mapped columns (by name or
    position), as the reader matches them."""
    from musicrec.data.detect import detect_format, file_layout
    from musicrec.data.tables import mapped_columns

    fmt = detect_format(path, columns, delimiter or None)
    if fmt not in ("generic-csv", "generic-parquet"):
        raise DataError(
            path,
            f"is {fmt}: --columns applies to delimited text or Parquet ratings tables only",
            hint="leave out --columns for this file",
        )
    if fmt == "generic-csv":
        layout = file_layout(path, delimiter or None)
        positional = all(v.isdigit() for v in columns.values())
        found = layout.positions() if positional else layout.first
        if positional and (far := [v for v in columns.values() if int(v) > layout.n_fields]):
            raise DataError(
                path,
                f"--columns names position {far[0]}, but the lines have {layout.n_fields} "
                f"{layout.name}-separated fields",
                hint="count the fields from 1",
            )
        mapped_columns(path, found, columns)
        return
    mapped_columns(path, header_columns(path), columns)


def _check_columns(path: str, columns: list[str], flag: str) -> None:
    found = header_columns(path)
    missing = [c for c in columns if c not in found]
    if missing:
        raise DataError(
            path,
            f"has no column(s) {missing} (found {found[:12]})",
            hint=f"{flag} needs the columns {columns}",
        )
