"""Which way each metric improves: the table callers read to compare or choose, instead of knowing it."""

from __future__ import annotations

import re

BIGGER_IS_BETTER: dict[str, bool] = {
    "rmse": False,
    "mae": False,
    "hr": True,
    "ndcg": True,
    "recall": True,
    "coverage": True,
    "catalogue_coverage": True,
}

_CUTOFF = re.compile(r"(@|_at_)\d+$")


def bigger_is_better(name: str) -> bool:
    """The direction of a metric by its name as reports write it: "rmse", "val_rmse", "test_cold_user_rmse",
    "ndcg@10", "val_ndcg_at_10". Unknown metrics raise KeyError rather than guess."""
    base = _CUTOFF.sub("", name)
    for metric in sorted(BIGGER_IS_BETTER, key=len, reverse=True):
        if base == metric or base.endswith("_" + metric):
            return BIGGER_IS_BETTER[metric]
    raise KeyError(f"no direction known for metric {name!r}; known: {sorted(BIGGER_IS_BETTER)}")
