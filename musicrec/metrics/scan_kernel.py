"""One compiled pass over a batch of score rows (numba, no GIL held): the held-out items' ranks and each row's
top-k list, under the tie rule of musicrec.metrics.topn (an item's 0-based rank is the number of
candidates with a higher score plus the number with an equal score and a smaller index; NaN ranks below
every number).

numpy did this in several passes over the (users x items) block (greater-than counts, then a cumulative sum
for ties; torch.topk, then a repair of ties at the k-th score), which took most of a model's test evaluation.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def scan_rows(scores, tptr, titems, targets, eptr, eidx, k, ranks, top):  # pragma: no cover - compiled
    """scores (b, n) float32, C order, overwritten: each row's excluded cells (eidx[eptr[r]:eptr[r + 1]])
    become -inf. Row r's held-out cells are tptr[r]:tptr[r + 1], with items titems and scores targets (read
    before the masking, so a held-out item that is also excluded is still ranked); ranks[h] is set to the
    number of non-excluded items ahead of cell h. With k > 0, top[r] is set to the k best non-excluded items
    with a score above -inf (NaN never), best first, equal scores by index, -1 where there are fewer."""
    b, n = scores.shape
    vals = np.empty(max(k, 1), np.float32)
    for r in range(b):
        row = scores[r]
        for p in range(eptr[r], eptr[r + 1]):
            row[eidx[p]] = -np.inf
        for h in range(tptr[r], tptr[r + 1]):
            t, item = targets[h], titems[h]
            c = 0
            for j in range(item):  # before the item, an equal score is ahead too
                c += row[j] >= t
            for j in range(item + 1, n):
                c += row[j] > t
            ranks[h] = c
        if k <= 0:
            continue
        m = 0
        for j in range(n):
            s = row[j]
            if m == k:
                if not s > vals[k - 1]:  # the common case once the list is full: one compare
                    continue
                p = k - 1
            elif s > -np.inf:
                p = m
                m += 1
            else:
                continue
            while p > 0 and vals[p - 1] < s:  # strict: an equal, earlier item stays ahead
                vals[p] = vals[p - 1]
                top[r, p] = top[r, p - 1]
                p -= 1
            vals[p] = s
            top[r, p] = j
        for p in range(m, k):
            top[r, p] = -1
