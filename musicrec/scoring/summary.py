"""The numbers a scoring run reports: rows, unknown ids, rating distribution, coverage, popularity, speed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from musicrec.scoring.candidates import CandidateIndex


def summarize_pairs(out: pd.DataFrame, seconds: float) -> dict[str, Any]:
    if "relevance_score" in out:  # a retrieval-only bundle: scores order items, they are no stars
        s = out["relevance_score"].to_numpy(np.float64)
        quantiles = np.quantile(s, [0.0, 0.1, 0.5, 0.9, 1.0]).round(4).tolist() if len(s) else []
        return {
            "job": "pairs",
            "rows": len(out),
            "unknown_users": int(out["unknown_user"].sum()),
            "unknown_items": int(out["unknown_item"].sum()),
            "score": "relevance_score",
            "score_quantiles": dict(zip(["min", "p10", "p50", "p90", "max"], quantiles, strict=False)),
            "seconds": round(seconds, 3),
            "pairs_per_second": round(len(out) / seconds) if seconds > 0 else None,
        }
    r = out["predicted_rating"].to_numpy(np.float64)
    quantiles = np.quantile(r, [0.0, 0.1, 0.5, 0.9, 1.0]).round(4).tolist() if len(r) else []
    return {
        "job": "pairs",
        "rows": len(out),
        "unknown_users": int(out["unknown_user"].sum()),
        "unknown_items": int(out["unknown_item"].sum()),
        "rating_mean": float(r.mean()) if len(r) else None,
        "rating_quantiles": dict(zip(["min", "p10", "p50", "p90", "max"], quantiles, strict=False)),
        "rating_histogram": _histogram(r),
        "seconds": round(seconds, 3),
        "pairs_per_second": round(len(out) / seconds) if seconds > 0 else None,
    }


def summarize_topn(out: pd.DataFrame, index: CandidateIndex, seconds: float) -> dict[str, Any]:
    users = out["user_id"].nunique()
    pop = pd.Series(index.popularity, index=index.item_ids)
    recommended = out["item_id"].unique()
    return {
        "job": "topn",
        "rows": len(out),
        "users": users,
        "unknown_users": int(out.loc[out["source"] == "fallback", "user_id"].nunique()),
        "sources": {k: int(v) for k, v in out["source"].value_counts().items()},
        "catalogue_coverage": round(len(recommended) / max(1, len(index.item_ids)), 4),
        "mean_popularity": round(float(pop.reindex(out["item_id"]).mean()), 3) if len(out) else None,
        "score_histogram": _histogram(out["score"].to_numpy(np.float64)),
        "seconds": round(seconds, 3),
        "users_per_second": round(users / seconds) if seconds > 0 else None,
    }


def _histogram(values: np.ndarray) -> dict[str, int]:
    """Counts per rating bin: <1.5, 1.5-2.5, ..., >=4.5."""
    edges = [-np.inf, 1.5, 2.5, 3.5, 4.5, np.inf]
    counts, _ = np.histogram(values, bins=edges)
    return dict(zip(["1", "2", "3", "4", "5"], (int(c) for c in counts), strict=False))


def merge_summaries(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Chunk summaries combined (additive fields only); chunk-level detail stays in the chunks."""
    out: dict[str, Any] = {"chunks": len(parts)}
    for key in ("rows", "users", "unknown_users", "unknown_items"):
        if any(key in p for p in parts):
            out[key] = sum(p.get(key, 0) for p in parts)
    if any("score" in p for p in parts):  # relevance scores: no star bins
        return {**out, "score": parts[0]["score"]}
    hist_key = "rating_histogram" if any("rating_histogram" in p for p in parts) else "score_histogram"
    out[hist_key] = {b: sum(p.get(hist_key, {}).get(b, 0) for p in parts) for b in "12345"}
    return out


def markdown(summary: dict[str, Any]) -> str:
    """A small markdown table for the Prefect UI."""
    lines = ["# Batch scoring", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    return "\n".join(lines)


def describe(manifest: dict[str, Any]) -> str:
    """What a scoring run wrote, for people: how many rows and users, unknown ids, time, and where it is."""
    counts = [f"{manifest.get('rows', 0):,} rows"]
    note = ""
    if manifest.get("job") == "pairs":
        counts += [
            f"{manifest.get('unknown_users', 0):,} with an unknown user",
            f"{manifest.get('unknown_items', 0):,} with an unknown item",
        ]
        if manifest.get("kind") == "retrieval":
            note = (
                "\nrelevance_score: how strongly the retrieval model (implicit feedback) recommends the item "
                "to the user; it orders items and is not a rating"
            )
    else:
        counts += [
            f"{manifest.get('users', 0):,} users",
            f"{manifest.get('unknown_users', 0):,} of them unknown (popular fallback list)",
        ]
    return (
        f"scored with {manifest.get('version')} ({manifest.get('model')}): {', '.join(counts)} "
        f"in {manifest.get('seconds', 0):.1f} s\noutput: {manifest.get('output') or manifest.get('uri')}"
        f"\nmanifest: {manifest.get('uri')}{note}"
    )
