"""One training step of the default implicit model (a user is their history, FISM; no free user rows) as
compiled kernels (numba, no GIL held): the same update as Trainer.step's torch path, without its chain of
gathers, sorts and scatters (2.8 s an epoch at the seed's shape, most of it per-op overhead).

Per batch, from the parameters as they were before it:
1. each distinct user's history sum, sum_k w_k y_k (histories longer than `limit` are drawn uniformly with
   replacement from `draws` and weighted count / limit, an unbiased estimate); the query of a row (u, i) is
   (that sum - y_i) * (count_u - 1)^-alpha: the item being predicted is left out of its own user's history;
2. scores <query, q_j> + b_j of the positive and the negatives (q_j = item row + projected text vector), the
   hardest negative picked first when `pick_max`; the loss (0 pointwise, 1 BPR, 2 hinge) averaged over the
   negatives, times the row's confidence weight when there are weights (implicit feedback), summed over rows;
3. gradients, weight decay `wd` per occurrence of a row, duplicates summed, and one row-wise AdaGrad step per
   distinct row of the context, item and bias tables (acc += mean(g^2); w -= lr g / sqrt(acc)); the text
   projection takes an element-wise AdaGrad step on its loss gradient.
The slot arrays are scratch maps of row id -> batch position, -1 between calls (the kernels reset them).

A step is a sequence of nogil kernels that Trainer.fused_step calls in order, the ones taking (t, threads)
once per thread (on a small thread pool as musicrec.rating.fused does; no numba prange, which the flow's
side-by-side fits could not share): batch_histories (no parameter read), sum_histories (a share of the
distinct users; on one thread while the pool draws the next batch's negatives), per thread
queries_and_negatives (a share of the rows: queries, z, the hardest negatives) and row_gradients (a share of
the rows: each row's loss and its query's gradient, item rows read in place), gradient_slots (the distinct
rows), per thread row_sums (every row read in row order, each thread adding only to its share of the distinct
items, users and context rows) and apply_updates (the history occurrences' sums and the AdaGrad steps of its
share). Every value is computed as on one thread, in the same order, so any thread count gives the same model
(hinge at the seed's shape: about 1.6 s an epoch on 2 threads, 2.4 s on one).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from musicrec.fit.kernels import AHEAD, FASTMATH, prefetch, prefetch_row

LOSS_CODES = {"pointwise": 0, "bpr": 1, "hinge": 2}


@njit(nogil=True, cache=True)
def _softplus(x: float) -> float:
    return max(x, 0.0) + np.log1p(np.exp(-abs(x)))


@njit(nogil=True, cache=True)
def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x)
    return e / (1.0 + e)


@njit(nogil=True, cache=True)
def _slots(ids, slot):
    """Batch position of each id (first occurrence order) and the distinct ids; sets slot[id]."""
    where = np.empty(len(ids), np.int64)
    distinct = np.empty(len(ids), np.int64)
    n = 0
    for r in range(len(ids)):
        s = slot[ids[r]]
        if s < 0:
            s = n
            slot[ids[r]] = n
            distinct[n] = ids[r]
            n += 1
        where[r] = s
    return where, distinct[:n]


@njit(nogil=True, cache=True)
def in_rows(users, items, indptr, indices):
    """(b, m) bools: items[r, j] is among indices[indptr[u]:indptr[u + 1]] (sorted) for u = users[r]; a user
    past the end of indptr has none."""
    out = np.zeros(items.shape, np.bool_)
    n = items.shape[0]
    for r in range(n):
        if r + 2 * AHEAD < n and users[r + 2 * AHEAD] + 1 < len(indptr):
            prefetch(indptr, users[r + 2 * AHEAD], 0)
        if (
            r + AHEAD < n
            and 0 <= users[r + AHEAD] < len(indptr) - 1
            and indptr[users[r + AHEAD]] < len(indices)
        ):
            prefetch(indices, indptr[users[r + AHEAD]], 0)
        u = users[r]
        if u < 0 or u + 1 >= len(indptr):
            continue
        first, end = indptr[u], indptr[u + 1]
        for j in range(items.shape[1]):
            x, lo, hi = items[r, j], first, end
            while lo < hi:
                mid = (lo + hi) >> 1
                if indices[mid] < x:
                    lo = mid + 1
                else:
                    hi = mid
            out[r, j] = lo < end and indices[lo] == x
    return out


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _score(row, query, bias, text_row, z):
    """<query, item row + proj text_row> + bias, the text part as <text_row, z> with z = proj^T query."""
    s = bias
    for c in range(len(row)):
        s += row[c] * query[c]
    for e in range(len(text_row)):
        s += text_row[e] * z[e]
    return s


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _adagrad_rows(table, acc, rows, grad, count, wd, lr):
    """Row-wise AdaGrad on the distinct rows: g = loss gradient + count * wd * row (decay per occurrence)."""
    f = table.shape[1]
    for k in range(len(rows)):
        if k + AHEAD < len(rows):
            prefetch_row(table, rows[k + AHEAD])
            prefetch(acc, rows[k + AHEAD], 0)
        if count[k] == 0:
            continue
        r = rows[k]
        sq = 0.0
        for c in range(f):
            g = grad[k, c] + count[k] * wd * table[r, c]
            grad[k, c] = g
            sq += g * g
        acc[r] += sq / f
        scale = lr / np.sqrt(acc[r])
        for c in range(f):
            table[r, c] -= scale * grad[k, c]


@njit(nogil=True, cache=True)
def batch_histories(users, draws, hptr, hitems, limit, user_slot):
    """The batch's distinct users and, for each, the history entries summed this step (no parameter read):
    (inv: row -> distinct user, distinct, h_start: distinct user d's entries are h_start[d]:h_start[d + 1],
    h_seg, h_row, h_w: each entry's distinct user, context row and weight). Histories longer than limit are
    drawn from draws in distinct-user order."""
    inv, distinct = _slots(users, user_slot)
    for d in range(len(distinct)):
        user_slot[distinct[d]] = -1
    nd = len(distinct)
    h_start = np.zeros(nd + 1, np.int64)
    for d in range(nd):
        c = hptr[distinct[d] + 1] - hptr[distinct[d]]
        h_start[d + 1] = h_start[d] + (c if (limit <= 0 or c <= limit) else limit)
    total = h_start[nd]
    h_seg = np.empty(total, np.int64)
    h_row = np.empty(total, np.int64)
    h_w = np.empty(total, np.float32)
    k, di = 0, 0
    for d in range(nd):
        start = hptr[distinct[d]]
        c = hptr[distinct[d] + 1] - start
        if limit > 0 and c > limit:
            for _ in range(limit):
                off = min(int(draws[di] * c), c - 1)
                di += 1
                h_seg[k], h_row[k], h_w[k] = d, hitems[start + off], c / limit
                k += 1
        else:
            for t in range(c):
                h_seg[k], h_row[k], h_w[k] = d, hitems[start + t], 1.0
                k += 1
    return inv, distinct, h_start, h_seg, h_row, h_w


@njit(nogil=True, cache=True)
def share(n, t, threads):
    """Thread t's contiguous part [lo, hi) of range(n)."""
    return n * t // threads, n * (t + 1) // threads


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def sum_histories(t, threads, context, h_start, h_row, h_w, summed):
    """summed[d] = sum of the weighted context rows of distinct user d, for thread t's share of the users."""
    lo, hi = share(len(h_start) - 1, t, threads)
    first, end = h_start[lo], h_start[hi]
    f = context.shape[1]
    d = lo
    for k in range(first, end):
        if k + AHEAD < end:
            prefetch_row(context, h_row[k + AHEAD])
        while k >= h_start[d + 1]:
            d += 1
        r, w = h_row[k], h_w[k]
        for c in range(f):
            summed[d, c] += w * context[r, c]


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def queries_and_negatives(
    t,
    threads,
    context,
    item,
    bias,
    text,
    proj,
    users,
    pos,
    neg,
    hptr,
    alpha,
    inv,
    summed,
    pick_max,
    query,
    norm,
    z,
    used,
):
    """For thread t's share of the rows: the query (the user's history sum without the positive, scaled by
    (count - 1)^-alpha), z = proj^T query, and the negatives that enter the loss: all of them, or each row's
    hardest, scored straight from the tables (the other m - 1 are neither gathered nor updated). The text part
    of a score, <q_r, proj t_j> = <proj^T q_r, t_j>: projected once per row, not per candidate."""
    b, f, m = len(users), item.shape[1], neg.shape[1]
    lo, hi = share(b, t, threads)
    has_text = text.shape[0] > 0
    for r in range(lo, hi):
        if r + AHEAD < hi:
            prefetch_row(context, pos[r + AHEAD])
        n = hptr[users[r] + 1] - hptr[users[r]] - 1
        norm[r] = n**-alpha if n > 0 else 0.0
        for c in range(f):
            query[r, c] = (summed[inv[r], c] - context[pos[r], c]) * norm[r]
    if has_text and hi > lo:
        np.dot(query[lo:hi], proj, z[lo:hi])  # BLAS: 3x the loops' speed
    if not (pick_max and m > 1):
        used[lo:hi] = neg[lo:hi]
        return
    ahead = max(1, AHEAD // m)
    for r in range(lo, hi):
        if r + ahead < hi:
            for j in range(m):
                prefetch_row(item, neg[r + ahead, j])
                prefetch(bias, neg[r + ahead, j], 0)
                if has_text:
                    prefetch_row(text, neg[r + ahead, j])
        best, best_s = neg[r, 0], -np.inf
        for j in range(m):
            it = neg[r, j]
            trow = text[it] if has_text else z[r]  # z[r] is empty without text
            s = _score(item[it], query[r], bias[it], trow, z[r])
            if s > best_s:
                best, best_s = it, s
        used[r, 0] = best


@njit(nogil=True, cache=True)
def step_buffers(b, f, dt, m, pick_max):
    """query (b, f), norm (b), z (b, dt) and used (b, 1 if the hardest negative is picked else m)."""
    return (
        np.empty((b, f), np.float32),
        np.zeros(b, np.float32),
        np.empty((b, dt), np.float32),
        np.empty((b, 1 if (pick_max and m > 1) else m), np.int64),
    )


@njit(nogil=True, cache=True)
def row_buffers(b, f, dt, mm):
    """Per row: d loss / d score of the positive and of each used negative, the loss, the query's gradient and
    t_grad (sum of d_score * text row over the row's scored items)."""
    return (
        np.empty(b, np.float32),
        np.empty((b, mm), np.float32),
        np.empty(b, np.float64),
        np.zeros((b, f), np.float32),
        np.zeros((b, dt), np.float32),
    )


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def row_gradients(
    t, threads, item, bias, text, proj, pos, used, query, norm, z, loss_kind, margin, weight, per_row
):
    """Step 3 for thread t's share of the rows: each row's loss, its d loss / d score, and its query's
    gradient (through the item rows, then through the projected text: t_grad proj^T, BLAS), scaled by the
    history's norm (the gradient of the user's history sum). weight: each row's share of the loss (its
    confidence), or empty for 1 everywhere (then no product is taken). Item rows are read from the tables,
    which no kernel changes before apply_updates."""
    d_pos_all, d_neg_all, row_loss, g_query, t_grad = per_row
    b, f, mm = len(query), item.shape[1], used.shape[1]
    has_text = text.shape[0] > 0
    dt = text.shape[1] if has_text else 0
    lo, hi = share(b, t, threads)
    ahead = max(1, AHEAD // (1 + mm))
    for r in range(lo, hi):
        if r + ahead < hi:
            for j in range(-1, mm):
                it = pos[r + ahead] if j < 0 else used[r + ahead, j]
                prefetch_row(item, it)
                prefetch(bias, it, 0)
                if has_text:
                    prefetch_row(text, it)
        p = pos[r]
        tp = text[p] if has_text else z[r]  # z[r] is empty without text
        s_pos = _score(item[p], query[r], bias[p], tp, z[r])
        d_pos, loss = 0.0, 0.0
        if loss_kind == 0:
            loss += _softplus(-s_pos)
            d_pos = _sigmoid(s_pos) - 1.0
        for j in range(mm):
            n = used[r, j]
            s = _score(item[n], query[r], bias[n], text[n] if has_text else z[r], z[r])
            if loss_kind == 0:
                loss += _softplus(s) / mm
                d_neg_all[r, j] = _sigmoid(s) / mm
            elif loss_kind == 1:
                loss += _softplus(s - s_pos) / mm
                d_neg_all[r, j] = _sigmoid(s - s_pos) / mm
                d_pos -= d_neg_all[r, j]
            else:
                x = margin - s_pos + s
                loss += max(x, 0.0) / mm
                d_neg_all[r, j] = (1.0 if x > 0 else 0.0) / mm
                d_pos -= d_neg_all[r, j]
        if len(weight) > 0:
            w = weight[r]
            d_pos, loss = d_pos * w, loss * w
            for j in range(mm):
                d_neg_all[r, j] *= w
        d_pos_all[r], row_loss[r] = d_pos, loss
        for c in range(f):
            g_query[r, c] = d_pos * item[p, c]
        for e in range(dt):
            t_grad[r, e] = d_pos * text[p, e]
        for j in range(mm):
            n, d = used[r, j], d_neg_all[r, j]
            for c in range(f):
                g_query[r, c] += d * item[n, c]
            for e in range(dt):
                t_grad[r, e] += d * text[n, e]
    if dt > 0 and hi > lo:  # d query += t_grad proj^T
        g_query[lo:hi] += np.dot(t_grad[lo:hi], np.ascontiguousarray(proj.T))
    for r in range(lo, hi):
        for c in range(f):
            g_query[r, c] *= norm[r]


@njit(nogil=True, cache=True)
def gradient_slots(row_loss, pos, used, h_row, item_slot, context_slot):
    """The loss (summed in row order) and the step's distinct rows: (loss, where: batch position of each
    positive then of each used negative (row by row), items, c_where: of each history occurrence then of each
    row's left-out positive, c_rows); the slot maps are set."""
    loss = 0.0
    for r in range(len(row_loss)):
        loss += row_loss[r]
    b = len(pos)
    candidates = np.empty(b * (1 + used.shape[1]), np.int64)
    candidates[:b] = pos
    candidates[b:] = used.ravel()
    where, items = _slots(candidates, item_slot)
    total = len(h_row)
    context_ids = np.empty(total + b, np.int64)
    context_ids[:total] = h_row
    context_ids[total:] = pos
    c_where, c_rows = _slots(context_ids, context_slot)
    return loss, where, items, c_where, c_rows


@njit(nogil=True, cache=True)
def gradient_buffers(n_items, n_users, n_context, f):
    """Zeroed sums: item rows, biases and occurrence counts;
    users' query gradients; context rows and counts."""
    return (
        np.zeros((n_items, f), np.float32),
        np.zeros(n_items, np.float32),
        np.zeros(n_items, np.int64),
        np.zeros((n_users, f), np.float32),
        np.zeros((n_context, f), np.float32),
        np.zeros(n_context, np.int64),
    )


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def row_sums(t, threads, query, where, c_where, per_row, inv, sums):
    """Step 5's sums over the rows, in row order, for thread t's share of the distinct items (their row and
    bias gradients), of the distinct users (their summed query gradients) and of the distinct context rows
    (minus each left-out positive's query gradient). Every thread reads every row and adds only to its own."""
    d_pos, d_neg, g_query = per_row[0], per_row[1], per_row[3]
    g_item, g_bias, n_occ, g_sum, g_context, c_occ = sums
    b, f, mm = len(query), query.shape[1], d_neg.shape[1]
    total = len(c_where) - b
    ilo, ihi = share(len(g_bias), t, threads)
    ulo, uhi = share(len(g_sum), t, threads)
    clo, chi = share(len(c_occ), t, threads)
    for r in range(b):
        kp = where[r]
        if ilo <= kp < ihi:
            n_occ[kp] += 1
            g_bias[kp] += d_pos[r]
            for c in range(f):
                g_item[kp, c] += d_pos[r] * query[r, c]
        for j in range(mm):
            kn = where[b + r * mm + j]
            if ilo <= kn < ihi:
                n_occ[kn] += 1
                g_bias[kn] += d_neg[r, j]
                for c in range(f):
                    g_item[kn, c] += d_neg[r, j] * query[r, c]
        d = inv[r]
        if ulo <= d < uhi:
            for c in range(f):
                g_sum[d, c] += g_query[r, c]
        kc = c_where[total + r]
        if clo <= kc < chi:
            c_occ[kc] += 1
            for c in range(f):
                g_context[kc, c] -= g_query[r, c]


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def apply_updates(
    t,
    threads,
    context,
    item,
    bias,
    acc_context,
    acc_item,
    acc_bias,
    proj,
    proj_acc,
    query,
    t_grad,
    c_where,
    c_rows,
    items,
    h_seg,
    h_w,
    sums,
    lr,
    wd,
    text_lr,
):
    """Step 5's history sums and step 6 for thread t's share of the distinct context rows (each history
    occurrence adds its user's summed gradient, in occurrence order) and of the distinct items: one row-wise
    AdaGrad step per row, from the gradients of the parameters as they were before the step; thread 0
    computes the projection's gradient (query^T t_grad) and steps it."""
    g_item, g_bias, n_occ, g_sum, g_context, c_occ = sums
    f = context.shape[1]
    if t == 0 and t_grad.shape[1] > 0:
        g_proj = np.dot(query.T, t_grad)
        for a in range(g_proj.shape[0]):
            for c in range(g_proj.shape[1]):
                proj_acc[a, c] += g_proj[a, c] ** 2
                proj[a, c] -= text_lr * g_proj[a, c] / np.sqrt(proj_acc[a, c])
    lo, hi = share(len(c_rows), t, threads)
    for k in range(len(h_seg)):
        kc = c_where[k]
        if lo <= kc < hi:
            c_occ[kc] += 1
            for c in range(f):
                g_context[kc, c] += h_w[k] * g_sum[h_seg[k], c]
    _adagrad_rows(context, acc_context, c_rows[lo:hi], g_context[lo:hi], c_occ[lo:hi], wd, lr)
    lo, hi = share(len(items), t, threads)
    _adagrad_rows(item, acc_item, items[lo:hi], g_item[lo:hi], n_occ[lo:hi], wd, lr)
    _adagrad_rows(
        bias.reshape(-1, 1), acc_bias, items[lo:hi], g_bias.reshape(-1, 1)[lo:hi], n_occ[lo:hi], wd, lr
    )


@njit(nogil=True, cache=True)
def reset_slots(items, item_slot, c_rows, context_slot):
    """Sets the slot maps back to -1 for the step's items and context rows."""
    for k in range(len(items)):
        item_slot[items[k]] = -1
    for k in range(len(c_rows)):
        context_slot[c_rows[k]] = -1
