"""Stage 1: read the input files, de-duplicate, validate, and keep the canonical tables for the run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from musicrec.data.readers import load_dataset
from musicrec.data.scales import RatingScale, UnknownRatingScale, infer_scale
from musicrec.errors import DataError
from musicrec.hashing import sha256_bytes
from musicrec.pipeline.workspace import Workspace
from musicrec.validation import import_gx_in_background, validate_table


def fingerprint(ratings: pd.DataFrame) -> str:
    """sha256 over (user, item, rating, timestamp) row hashes: same data in the same order, same print."""
    rows = pd.util.hash_pandas_object(ratings[["user_id", "item_id", "rating", "timestamp"]], index=False)
    return "sha256:" + sha256_bytes(rows.to_numpy().tobytes())


def ingest(
    ws: Workspace,
    reviews: Sequence[str | Path],
    meta: Sequence[str | Path] = (),
    columns: dict[str, str] | None = None,
    rating_range: tuple[float, float] | None = None,
    delimiter: str | None = None,
) -> dict[str, Any]:
    """Load, find the rating scale (rating_range, else from the data) and validate; on success write
    ratings/items parquet and rating_scale.json. Raises ValidationFailed (with the report saved as
    validation.json) or DataError before anything is written for training.

    columns maps user, item, rating[, timestamp] to the review tables' own column names (or positions);
    delimiter forces the review files' delimiter."""
    import_gx_in_background()  # overlaps the files' reading
    ds = load_dataset(list(reviews), list(meta), columns, delimiter or None)
    scale = _rating_scale(ds.ratings, rating_range, reviews)
    reports = {
        "ratings": validate_table(ds.ratings, "ratings", scale.range),
        "items": validate_table(ds.items, "items"),
    }
    ws.write_json("validation.json", {k: r.to_dict() for k, r in reports.items()})
    for name, report in reports.items():
        report.raise_if_failed(source=", ".join(map(str, reviews if name == "ratings" else meta)))
    ds.ratings.to_parquet(ws.ratings, index=False)
    ds.items.to_parquet(ws.items, index=False)
    ws.write_json("rating_scale.json", scale.to_dict())
    summary = ds.summary()
    return {
        "ratings": len(ds.ratings),
        "users": summary["users"],
        "items": summary["items"],
        "catalogue_items": len(ds.items),
        "fingerprint": fingerprint(ds.ratings),
        "inputs": [str(p) for p in [*reviews, *meta]],
        "read": {**summary, "notes": ds.notes(), "delimiters": ds.delimiters()},
        "sample_card": sample_card(reviews),
        "rating_range": [scale.min, scale.max],
        "rating_scale": scale.to_dict(),
    }


def _rating_scale(
    ratings: pd.DataFrame, rating_range: Sequence[float] | None, reviews: Sequence[str | Path]
) -> RatingScale:
    """infer_scale, with its error naming the review files the ratings came from."""
    try:
        return infer_scale(ratings["rating"], tuple(rating_range) if rating_range is not None else None)
    except UnknownRatingScale as e:
        raise DataError(", ".join(map(str, reviews)), e.message, hint=e.hint) from None


def sample_card(reviews: Sequence[str | Path]) -> dict[str, Any] | None:
    """card.json of a generated sample (beside the reviews file), so reports can show the noise floor."""
    card = Path(reviews[0]).with_name("card.json") if reviews else None
    if card is None or not card.is_file():
        return None
    try:
        data = json.loads(card.read_text())
    except (OSError, ValueError):
        return None
    return {k: data.get(k) for k in ("scale", "seed", "noise_rmse", "generator_version")}
