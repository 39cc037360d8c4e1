"""The hidden truth behind a generated sample: users, items, who rated what, and every rating's latent score.

Users and items have latent factors (dim 8) and biases, genres drive both choices and words, popularity has a
long tail and most users rate once. Ratings are clip(round(s + eps), 1, 5) with s = mu + b_u + b_i + p_u.q_i
and eps ~ N(0, sigma). musicrec.data.generate turns this into files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from musicrec.data import textgen


@dataclass(frozen=True)
class Scale:
    """Exact counts of a scale: distinct users and items in reviews, review lines (duplicates included)."""

    users: int
    items: int
    ratings: int


SCALES = {  # the same ratings per user and per item as the real 2018 release ("seed")
    "small": Scale(10_610, 5_770, 20_000),
    "medium": Scale(106_102, 57_698, 200_000),
    "seed": Scale(840_372, 456_992, 1_584_082),
    # Past the seed, for cost curves (benchmarks/scale.py): the seed's counts times 2 and 4, so ratings per
    # user and per item (and every share below) stay those of the real release.
    "seed2x": Scale(2 * 840_372, 2 * 456_992, 2 * 1_584_082),
    "seed4x": Scale(4 * 840_372, 4 * 456_992, 4 * 1_584_082),
}
DIM = 8
SINGLE_SHARE = 0.70  # users with exactly one rating
DUPLICATE_SHARE = 0.003  # extra older review lines of an existing (user, item)
COLD_SHARE = 0.01  # items with metadata and text but no rating
GENRE_CONCENTRATION = 2.0  # Dirichlet concentration of a user's genre taste (small: few favourite genres)
# Calibrated so the rating distribution is J-shaped like the real one (about 72/15/6/3/5 % for 5..1 stars).
MU, SIGMA, INTERACTION = 5.25, 0.9, 1.0
USER_SD, USER_SOUR, USER_SOUR_SHIFT = 0.5, 0.09, 4.0  # a few users rate everything low
ITEM_SD, ITEM_BAD, ITEM_BAD_SHIFT = 0.5, 0.02, 3.5  # a few items disappoint everyone
FIRST_DAY, LAST_DAY = 10_227, 17_805  # 1998-01-01 .. 2018-10-01, days since 1970


@dataclass
class World:
    """The hidden truth: who rated what, and the latent variables behind every rating."""

    user_p: np.ndarray
    user_b: np.ndarray
    item_genre: np.ndarray  # rated items first, then cold items
    item_q: np.ndarray
    item_b: np.ndarray
    pair_user: np.ndarray
    pair_item: np.ndarray

    @property
    def n_users(self) -> int:
        """Users in the world (every one has at least one rating)."""
        return len(self.user_b)


@dataclass
class Reviews:
    """Review rows as arrays: user and item indices, true score s, observed stars, day since 1970."""

    user: np.ndarray
    item: np.ndarray
    score: np.ndarray
    rating: np.ndarray
    day: np.ndarray


def make_world(rng: np.random.Generator, spec: Scale) -> World:
    """Users' genre tastes, who rated what (unique pairs), cold items, then latent factors and biases."""
    taste = _genre_tastes(rng, spec.users)
    pair_user, pair_item, item_genre = _draw_pairs(rng, spec, taste)
    n_cold = max(1, round(COLD_SHARE * spec.items))
    cold_genre = rng.choice(len(textgen.GENRES), size=n_cold, p=textgen.GENRE_SHARES).astype(np.int32)
    item_genre = np.concatenate([item_genre, cold_genre])
    centroids = rng.normal(size=(len(textgen.GENRES), DIM))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    taste_dir = taste @ centroids  # users lean towards the centroids of the genres they choose
    taste_dir /= np.linalg.norm(taste_dir, axis=1, keepdims=True)
    noise_q = rng.normal(scale=DIM**-0.5, size=(len(item_genre), DIM))
    noise_p = rng.normal(scale=DIM**-0.5, size=(spec.users, DIM))
    return World(
        user_p=0.7 * taste_dir + 0.7 * noise_p,
        user_b=_mixture(rng, spec.users, USER_SD, USER_SOUR, USER_SOUR_SHIFT),
        item_genre=item_genre,
        item_q=0.7 * centroids[item_genre] + 0.7 * noise_q,
        item_b=_mixture(rng, len(item_genre), ITEM_SD, ITEM_BAD, ITEM_BAD_SHIFT),
        pair_user=pair_user,
        pair_item=pair_item,
    )


def _draw_pairs(rng: np.random.Generator, spec: Scale, taste: np.ndarray) -> tuple[np.ndarray, ...]:
    """(pair_user, pair_item, item_genre): exact user and item counts, choices ~ popularity x genre taste."""
    n_pairs = spec.ratings - round(DUPLICATE_SHARE * spec.ratings)
    user_deg = _user_degrees(rng, spec.users, n_pairs, cap=max(30, spec.items // 400))
    stub_user = np.repeat(np.arange(spec.users, dtype=np.int32), user_deg)
    stub_genre = _draw_genres(rng, taste[stub_user])  # each rating picks a genre from its user's taste
    demand = np.bincount(stub_genre, minlength=len(textgen.GENRES))
    per_genre = np.minimum(_apportion(spec.items, demand), demand)
    item_genre = rng.permutation(np.repeat(np.arange(len(demand)), per_genre)).astype(np.int32)
    item_deg = _item_degrees(rng, item_genre, demand, cap=max(80, n_pairs // 250))
    return stub_user, _match(rng, stub_user, stub_genre, item_genre, item_deg), item_genre


def _user_degrees(rng: np.random.Generator, n_users: int, total: int, cap: int) -> np.ndarray:
    """Ratings per user: SINGLE_SHARE of users rate once, the rest 2+ with a heavy (Pareto) tail."""
    deg = np.ones(n_users, dtype=np.int64)
    multi = rng.permutation(n_users)[round(SINGLE_SHARE * n_users) :]
    deg[multi] = 2
    weights = rng.pareto(1.3, size=len(multi)) + 0.1
    deg[multi] += _capped_counts(rng, total - int(deg.sum()), weights, cap - 2)
    return deg


def _item_degrees(
    rng: np.random.Generator, item_genre: np.ndarray, demand: np.ndarray, cap: int
) -> np.ndarray:
    """Ratings per item: 1 + a Zipf-like share of its genre's demand, so each genre's totals match."""
    deg = np.ones(len(item_genre), dtype=np.int64)
    weights = rng.pareto(1.2, size=len(item_genre)) + 0.05
    for g in range(len(demand)):
        members = np.flatnonzero(item_genre == g)
        if len(members):
            deg[members] += _capped_counts(rng, int(demand[g]) - len(members), weights[members], cap - 1)
    return deg


def _capped_counts(rng: np.random.Generator, total: int, weights: np.ndarray, cap: int) -> np.ndarray:
    """Split total into counts proportional to weights (multinomial), none above cap.

    Weights whose expected count passes cap / 2.5 are compressed first (a power 0.5 above that), so the
    head keeps its order and spread instead of piling up at the cap.
    """
    counts = np.zeros(len(weights), dtype=np.int64)
    cap = max(cap, -(-total // max(len(weights), 1)))  # the total must fit
    weights = weights.astype(np.float64)
    for _ in range(3):
        knee = 0.4 * cap * weights.sum() / max(total, 1)
        weights = np.where(weights > knee, knee * (weights / knee) ** 0.5, weights)
    while total > 0:
        counts += rng.multinomial(total, weights / weights.sum())
        over = counts > cap
        total = int((counts[over] - cap).sum())
        counts[over] = cap
        weights[counts >= cap] = 0.0
    return counts


def _genre_tastes(rng: np.random.Generator, n_users: int) -> np.ndarray:
    """Each user's genre preference: a Dirichlet draw around the genre shares (a few favourites)."""
    gam = rng.standard_gamma(GENRE_CONCENTRATION * textgen.GENRE_SHARES, size=(n_users, len(textgen.GENRES)))
    total = gam.sum(1, keepdims=True)
    taste = np.where(total > 0, gam / np.where(total > 0, total, 1.0), textgen.GENRE_SHARES)
    return taste.astype(np.float32)


def _draw_genres(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One genre per row of probs (rows sum to 1), by inverse CDF."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs), dtype=np.float32) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(1), probs.shape[1] - 1).astype(np.int32)


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to weights that sum to total (largest remainder), at least 1 where weight > 0."""
    exact = total * weights / weights.sum()
    out = np.maximum(np.floor(exact).astype(np.int64), (weights > 0).astype(np.int64))
    short = total - int(out.sum())
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    if short >= 0:
        out[order[:short]] += 1
    else:  # the minimum of 1 overshot: take back from the largest
        out[np.argsort(-out, kind="stable")[:-short]] -= 1
    return out


def _match(
    rng: np.random.Generator,
    stub_user: np.ndarray,
    stub_genre: np.ndarray,
    item_genre: np.ndarray,
    item_deg: np.ndarray,
) -> np.ndarray:
    """Pair each user stub with a random item stub of its genre (a genre-blocked configuration model)."""
    item_stub = np.repeat(np.arange(len(item_genre), dtype=np.int32), item_deg)
    item_stub = item_stub[np.lexsort((rng.random(len(item_stub)), item_genre[item_stub]))]
    order = np.argsort(stub_genre, kind="stable")  # both sides sorted by genre, equal counts per genre
    sizes = np.bincount(stub_genre, minlength=len(textgen.GENRES))
    item_stub = _fix_repeats(rng, stub_user[order], item_stub, stub_genre[order], sizes)
    pair_item = np.empty(len(stub_genre), dtype=np.int32)
    pair_item[order] = item_stub
    return pair_item


def _fix_repeats(
    rng: np.random.Generator, user: np.ndarray, item: np.ndarray, genre: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """Swap item stubs until every (user, item) pair is unique; swaps keep every user's and item's count."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_items = int(item.max()) + 1
    for attempt in range(200):
        key = user.astype(np.int64) * n_items + item
        order = np.argsort(key, kind="stable")
        dup = order[1:][key[order][1:] == key[order][:-1]]
        if not len(dup):
            return item
        g = genre[dup]
        if attempt < 50:  # a partner from the same genre block keeps tastes intact
            partner = starts[g] + (rng.random(len(dup)) * sizes[g]).astype(np.int64)
        else:
            partner = rng.integers(0, len(item), len(dup))
        ok = ~np.isin(partner, dup)
        partner, first = np.unique(partner[ok], return_index=True)
        mine = dup[ok][first]
        item[mine], item[partner] = item[partner], item[mine]
    raise RuntimeError("could not make (user, item) pairs unique")


def _mixture(rng: np.random.Generator, n: int, sd: float, share: float, shift: float) -> np.ndarray:
    """Biases: N(0, sd) for most, shifted down by about `shift` for a `share` (the J-shape's 1-star bump)."""
    low = rng.random(n) < share
    return rng.normal(0.0, sd, n) - low * shift * (1.0 + 0.3 * rng.normal(size=n))


def draw_ratings(rng: np.random.Generator, world: World) -> Reviews:
    """The observed truth: one rating per pair, from the latent score plus Gaussian noise, and its day."""
    u, i = world.pair_user, world.pair_item
    inter = np.einsum("nk,nk->n", world.user_p[u], world.item_q[i])
    score = MU + world.user_b[u] + world.item_b[i] + INTERACTION * inter
    release = FIRST_DAY + (LAST_DAY - FIRST_DAY) * rng.beta(3.0, 1.7, size=len(world.item_b))
    delay = rng.exponential(400.0, size=len(i))
    span = LAST_DAY + 1 - release[i]
    day = (release[i] + np.mod(delay, span)).astype(np.int32)  # wrap, so no review is in the future
    return Reviews(u, i, score, _observe(rng, score), day)


def draw_duplicates(rng: np.random.Generator, truth: Reviews, n: int) -> Reviews:
    """Older second reviews of existing pairs (own noise
    draw), so loaders that keep the latest get the truth."""
    eligible = np.flatnonzero(truth.day > FIRST_DAY)
    pick = np.sort(rng.choice(eligible, size=n, replace=False))
    back = 1 + rng.exponential(200.0, size=n).astype(np.int32)
    day = np.maximum(truth.day[pick] - back, FIRST_DAY).astype(np.int32)
    score = truth.score[pick]
    return Reviews(truth.user[pick], truth.item[pick], score, _observe(rng, score), day)


def _observe(rng: np.random.Generator, score: np.ndarray) -> np.ndarray:
    """Stars as the user gives them: clip(round(s + eps), 1, 5)."""
    return np.clip(np.rint(score + rng.normal(0.0, SIGMA, len(score))), 1, 5).astype(np.int8)


def expected_rating(score: np.ndarray) -> np.ndarray:
    """E[r | s] for r = clip(round(s + eps), 1, 5): 1 + sum over k=1..4 of P(s + eps > k + 0.5)."""
    return 1.0 + sum(ndtr((score - k - 0.5) / SIGMA) for k in range(1, 5))
