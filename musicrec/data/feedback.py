"""Explicit or implicit feedback: whether a run's values are ratings (stars: the rating models) or counts
(plays, clicks, bare (user, item) pairs: the retrieval models only).

auto decides from the reader first (a value column named like a count, or no value column at all:
ReadStats.implicit), then from the values: values that fit no rating scale (musicrec.data.scales) are counts.
An implicit run weighs each interaction's share of the retrieval loss by its confidence,
w = 1 + alpha * log(1 + count) (Hu, Koren and Volinsky 2008, in its log form): a play count of 1 weighs
1 + 0.69 alpha, of 1,000 about 1 + 6.9 alpha. When every count is the same (bare pairs), no weights are
used: a constant weight carries no information.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from musicrec.data.scales import KNOWN_SCALES, RatingScale, UnknownRatingScale, infer_scale

FeedbackMode = Literal["auto", "implicit", "explicit"]
MODES: tuple[str, ...] = ("auto", "implicit", "explicit")
DEFAULT_ALPHA = 1.0


@dataclass(frozen=True)
class Feedback:
    """A run's kind of feedback, why (one line for the log and the report), and the confidence alpha."""

    kind: Literal["implicit", "explicit"]
    reason: str
    alpha: float = DEFAULT_ALPHA

    @property
    def implicit(self) -> bool:
        return self.kind == "implicit"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The log line: what the run trains on, and why."""
        if not self.implicit:
            return f"feedback: explicit ratings ({self.reason}): rating and retrieval models"
        return (
            f"feedback: implicit ({self.reason}): retrieval models only, each interaction weighted "
            f"1 + {self.alpha:g} * log(1 + count)"
        )


def decide_feedback(
    values: pd.Series,
    marked: Sequence[str],
    mode: str = "auto",
    fixed: tuple[float, float] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[Feedback, RatingScale | None]:
    """The run's feedback and, for explicit feedback, its rating scale (infer_scale's error when the values
    fit none and the run was asked to be explicit). marked: the readers' reasons a file looks implicit
    ("path: reason")."""
    if mode == "implicit":
        return Feedback("implicit", "--feedback implicit", alpha), None
    if mode == "explicit" or fixed is not None:
        why = "--feedback explicit" if mode == "explicit" else "--rating-range given"
        return Feedback("explicit", why, alpha), infer_scale(values, fixed)
    if marked:
        return Feedback("implicit", "; ".join(marked), alpha), None
    try:
        scale = infer_scale(values)
    except UnknownRatingScale:
        v = pd.to_numeric(values, errors="coerce")
        if v.isna().any() or (v < 0).any() or _mostly_on_a_scale(v.to_numpy(np.float64)):
            raise  # ratings with a few stray values, not counts: the scale's error names those rows
        why = f"its values ({v.min():g} to {v.max():g}) fit no rating scale"
        return Feedback("implicit", why, alpha), None
    return Feedback("explicit", f"the values fit {scale.name}", alpha), scale


STRAY_SHARE = 0.05  # values off the closest rating scale: below this share a file is ratings with strays


def _mostly_on_a_scale(values: np.ndarray) -> bool:
    """True when all but a few values lie on one known rating scale (e.g. two 6s among 1-5 stars)."""
    return min(float((~s.contains(values)).mean()) for s in KNOWN_SCALES) < STRAY_SHARE


def confidence_weights(counts: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray | None:
    """1 + alpha * log(1 + count) per interaction (float32); None when every count is the same (or alpha is
    0): then every interaction weighs the same, and the models train exactly as on ratings."""
    c = np.asarray(counts, np.float64)
    if alpha == 0 or not len(c) or np.all(c == c[0]):
        return None
    return (1.0 + alpha * np.log1p(np.maximum(c, 0.0))).astype(np.float32)
