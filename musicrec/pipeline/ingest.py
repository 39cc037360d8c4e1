"""Stage 1: read the input files, de-duplicate, validate, and keep the canonical tables for the run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from musicrec.data.feedback import DEFAULT_ALPHA, Feedback, decide_feedback
from musicrec.data.readers import Dataset, load_dataset
from musicrec.data.scales import DEFAULT_SCALE, RatingScale, UnknownRatingScale
from musicrec.data.tags import tag_assignments, tag_docs, with_tag_text
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
    feedback: str = "auto",
    confidence_alpha: float = DEFAULT_ALPHA,
    tags: str = "",
    tag_names: str = "",
) -> dict[str, Any]:
    """Load, decide explicit or implicit feedback (musicrec.data.feedback), find the rating scale of explicit
    ratings (rating_range, else from the data) and validate (ratings suite, or interactions suite for implicit
    feedback); on success write ratings/items parquet, rating_scale.json and feedback.json. Raises
    ValidationFailed (with the report saved as validation.json) or DataError before anything is written for
    training.

    columns maps user, item, rating[, timestamp] to the review tables' own column names (or positions);
    delimiter forces the review files' delimiter; tags and tag_names (musicrec.data.tags): each tagged item's
    tags are its text, validated with the items; the tag assignments are written apart (tags.parquet), and
    the items table gets a row for each tagged item the metadata does not list, its description unchanged
    (the text stage adds the tags of the training interactions: musicrec.pipeline.prepare.items_with_tags)."""
    import_gx_in_background()  # overlaps the files' reading
    ds = load_dataset(list(reviews), list(meta), columns, delimiter or None)
    assigned = None
    if tags:
        assigned, tag_stats = tag_assignments(tags, tag_names)
        ds.stats = [*ds.stats, *tag_stats]
    kind, scale = _feedback(ds, feedback, rating_range, reviews, confidence_alpha)
    if kind.implicit:
        table = ds.ratings.rename(columns={"rating": "weight"})
        first = validate_table(table[["user_id", "item_id", "weight", "timestamp"]], "interactions")
    else:
        first = validate_table(ds.ratings, "ratings", scale.range)
    docs = tag_docs(assigned) if assigned is not None else None
    checked = with_tag_text(ds.items, docs) if docs is not None else ds.items
    reports = {first.suite: first, "items": validate_table(checked, "items")}
    ws.write_json("validation.json", {k: r.to_dict() for k, r in reports.items()})
    for name, report in reports.items():
        report.raise_if_failed(
            source=", ".join(map(str, [*meta, *([tags] if tags else [])] if name == "items" else reviews))
        )
    ds.ratings.to_parquet(ws.ratings, index=False)
    if docs is not None:
        ds.items = with_tag_text(ds.items, docs.assign(text=""))  # the tagged items' rows, no text yet
        assigned.to_parquet(ws.tags, index=False)
    ds.items.to_parquet(ws.items, index=False)
    ws.write_json("rating_scale.json", scale.to_dict())
    ws.write_json("feedback.json", kind.to_dict())
    summary = ds.summary()
    notes = ds.notes()
    if not ds.ratings["timestamp"].notna().any():
        notes.append(
            "no times in the input: the retrieval models' leave-last-out holds out one seeded "
            "random interaction per user (and one more for validation) instead of the latest"
        )
    return {
        "ratings": len(ds.ratings),
        "users": summary["users"],
        "items": summary["items"],
        "catalogue_items": len(ds.items),
        "fingerprint": fingerprint(ds.ratings),
        "inputs": [str(p) for p in [*reviews, *meta, *([tags, tag_names] if tags else [])]],
        "read": {**summary, "notes": notes, "delimiters": ds.delimiters()},
        "sample_card": sample_card(reviews),
        "rating_range": [scale.min, scale.max],
        "rating_scale": scale.to_dict(),
        "feedback": kind.to_dict(),
        "has_times": bool(ds.ratings["timestamp"].notna().any()),
    }


def _feedback(
    ds: Dataset, mode: str, rating_range: Sequence[float] | None, reviews: Sequence[str | Path], alpha: float
) -> tuple[Feedback, RatingScale]:
    """decide_feedback, with infer_scale's error naming the review files the ratings came from. An implicit
    run keeps the default scale in rating_scale.json (no rating model reads it)."""
    marked = [f"{s.path}: {s.implicit}" for s in ds.stats if s.implicit]
    fixed = (float(rating_range[0]), float(rating_range[1])) if rating_range is not None else None
    try:
        kind, scale = decide_feedback(ds.ratings["rating"], marked, mode, fixed, alpha)
    except UnknownRatingScale as e:
        hint = f"{e.hint}; or, if the values are counts (plays, clicks): --feedback implicit"
        raise DataError(", ".join(map(str, reviews)), e.message, hint=hint) from None
    return kind, scale or DEFAULT_SCALE


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
