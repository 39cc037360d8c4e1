"""Rating scales: which stars a dataset uses, recognised
from its ratings or given by the user (--rating-range).

A known scale is recognised when every rating lies on it (inside its range, on its step) and the data uses
what sets it apart from the scales before it in KNOWN_SCALES: at least OWN_SHARE[name] of the ratings are
values only it allows (5 for 1-5, 6-10 for 1-10, halves for 1-5 in half stars, 0.5 for 0.5-5). So a 1-5 file
with two stray 6s is not taken for a 1-10 file: it fits no scale, and the error names those rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from musicrec.data.schema import RATING_MAX, RATING_MIN
from musicrec.errors import MusicrecError

MAX_EXAMPLES = 5
RANGE_FLAG = "--rating-range MIN,MAX"


@dataclass(frozen=True)
class RatingScale:
    """The ratings' range and step (None: any value in the range); source is "data" or "fixed" (given)."""

    min: float
    max: float
    step: float | None
    name: str
    source: str = "data"

    def contains(self, values: np.ndarray) -> np.ndarray:
        """Per value: inside [min, max] and, with a step, on the grid min + k * step."""
        inside = (values >= self.min) & (values <= self.max)
        if self.step is None:
            return inside
        k = (values - self.min) / self.step
        return inside & np.isclose(k, np.round(k), rtol=0, atol=1e-9)

    @property
    def range(self) -> tuple[float, float]:
        return (self.min, self.max)

    def to_dict(self) -> dict[str, Any]:
        """{"min", "max", "step", "name", "source"}: what ingest returns and writes as rating_scale.json."""
        return asdict(self)


KNOWN_SCALES = (
    RatingScale(1.0, 4.0, 1.0, "1-4 stars"),
    RatingScale(RATING_MIN, RATING_MAX, 1.0, "1-5 stars"),
    RatingScale(1.0, 5.0, 0.5, "1-5 in half stars"),
    RatingScale(0.5, 5.0, 0.5, "0.5-5 in half stars"),
    RatingScale(1.0, 10.0, 1.0, "1-10"),
)
DEFAULT_SCALE = KNOWN_SCALES[1]
# Share of the ratings that must be values only this scale allows: real half-star data has many halves, real
# 0.5-5 data about 1% of 0.5s, real 1-10 data mostly 6-10; a few strays are errors, not a scale. Real 1-5 data
# has many 5s (CM100k's 1-4 scale has none).
OWN_SHARE = {"1-5 stars": 0.001, "1-5 in half stars": 0.01, "0.5-5 in half stars": 0.001, "1-10": 0.05}


class UnknownRatingScale(MusicrecError):
    """The ratings fit none of the known scales, or a given range cannot be one."""


def infer_scale(ratings: pd.Series, fixed: tuple[float, float] | None = None) -> RatingScale:
    """The scale of these ratings: `fixed` (min, max) when given, else the first known scale they fit.

    Nulls are ignored (validation reports them); no rating at all means the default 1-5. With `fixed`, values
    outside it are left for validation to report (count and examples); the step is the finest of 1 and 0.5
    that all ratings lie on, else None."""
    values = pd.to_numeric(ratings, errors="coerce").dropna().to_numpy(dtype="float64")
    if fixed is not None:
        return _fixed_scale(fixed, values)
    if not len(values):
        return DEFAULT_SCALE
    for i, scale in enumerate(KNOWN_SCALES):
        if scale.contains(values).all() and (i == 0 or _own_share(i, values) >= OWN_SHARE[scale.name]):
            return scale
    raise _no_scale(values)


def _fixed_scale(fixed: tuple[float, float], values: np.ndarray) -> RatingScale:
    low, high = (float(v) for v in fixed)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UnknownRatingScale(f"rating range {fixed!r} is not MIN < MAX", hint=f"e.g. {RANGE_FLAG} 1,5")
    inside = values[(values >= low) & (values <= high)]
    step = next((s for s in (1.0, 0.5) if RatingScale(low, high, s, "").contains(inside).all()), None)
    return RatingScale(low, high, step, f"{low:g}-{high:g} (given)", source="fixed")


def _own_share(index: int, values: np.ndarray) -> float:
    """The share of the values that lie on none of the known scales before KNOWN_SCALES[index] (index > 0)."""
    return float(np.mean(~np.logical_or.reduce([s.contains(values) for s in KNOWN_SCALES[:index]])))


def _no_scale(values: np.ndarray) -> UnknownRatingScale:
    """The error naming the closest known scale, how many ratings lie off it and a few of them; and a scale
    they all fit but use too little of (stray 6s in 1-5 data)."""
    off = [~s.contains(values) for s in KNOWN_SCALES]
    ranked = sorted((int(o.sum()), i) for i, o in enumerate(off) if o.any())
    closest = KNOWN_SCALES[ranked[0][1]]
    outside = values[off[ranked[0][1]]]
    examples = ", ".join(f"{v:g}" for v in outside[:MAX_EXAMPLES])
    fitting = [i for i, o in enumerate(off) if not o.any()]
    also = ""
    if fitting:  # it fits a wider or finer scale whose own values are too few of the ratings
        scale = KNOWN_SCALES[fitting[0]]
        also = (
            f"; all fit {scale.name}, but only {_own_share(fitting[0], values):.2%} of them use values that "
            f"scale adds (data on it has at least {OWN_SHARE[scale.name]:.1%})"
        )
    known = ", ".join(s.name for s in KNOWN_SCALES)
    return UnknownRatingScale(
        f"the ratings fit none of the known rating scales: {len(outside):,} of {len(values):,} ratings "
        f"lie off the closest, {closest.name} (e.g. {examples}){also}. Ratings span {values.min():g} to "
        f"{values.max():g}; known scales: {known}",
        hint=f"fix or drop those rows, or name your scale with {RANGE_FLAG} (rating_range= in ingest)",
    )
