"""The candidate sources of a top-N list and how their finds are merged: an item found by several sources is
kept once, labelled with the first source in SOURCES order (the retrieval champion's nearest items rank last).
"""

from __future__ import annotations

import numpy as np

SOURCES = ("also_bought", "word2vec", "popular")  # priority when several sources find the same item
FALLBACK = "fallback"


def first_source(key: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Indices of one row per distinct key, sorted by key, keeping the row of the highest-priority (lowest)
    source: how candidates found by several sources are merged."""
    order = np.lexsort((src, key))
    fresh = np.ones(len(order), dtype=bool)
    fresh[1:] = key[order][1:] != key[order][:-1]
    return order[fresh]
