"""A seeded generator of data shaped like Amazon Digital Music 2018, for demos, tests and scale benchmarks.

The world (musicrec.data.world): users and items with latent factors and biases, genres that drive both
choices and words, long-tail popularity, most users with a single rating. This module draws it, writes it as
Amazon 2018 review and metadata files, and writes card.json with the noise floor (noise_rmse).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
from scipy.sparse import csr_matrix

from musicrec.data import textgen
from musicrec.data.world import (
    DUPLICATE_SHARE,
    FIRST_DAY,
    LAST_DAY,
    SCALES,
    Reviews,
    World,
    draw_duplicates,
    draw_ratings,
    expected_rating,
    make_world,
)
from musicrec.errors import MusicrecError
from musicrec.hashing import sha256_file

GENERATOR_VERSION = "2"  # 2: also_buy from interactions before a cut-off, never a user's latest two
NO_META_SHARE, EMPTY_TITLE_SHARE = 0.15, 0.03  # rated items without a meta line; meta lines with title ""
ALSO_BUY_CUTOFF = 0.8  # also_buy learns only from reviews before this quantile of review days
ALSO_BUY, ALSO_VIEW = 10, 5  # list lengths: top co-purchased items; other items of the same artist
CHUNK = 50_000  # JSON lines built and compressed at a time
VERIFIED_FROM = 13_500  # Dec 2006: most reviews after it are verified purchases


def generate_sample(
    out_dir: str | Path, scale: str = "small", seed: int = 0, progress: Callable[[str], None] | None = None
) -> dict:
    """Write reviews.json.gz, meta.json.gz (Amazon 2018 format) and card.json into out_dir; return the card.

    Same seed and scale give byte-identical files. Nothing is printed; progress gets stage messages.
    In the card, "ratings" counts review lines including the "duplicates" (older reviews of a pair,
    as in the real release), "items_with_meta" counts rated items with a meta line, and "noise_rmse"
    is the RMSE of the ideal predictor E[r | s] over the ratings without the duplicates.
    """
    if scale not in SCALES:
        raise MusicrecError(f"unknown sample scale '{scale}'", hint=f"use one of: {', '.join(SCALES)}")
    if not isinstance(seed, int) or seed < 0:
        raise MusicrecError(f"bad sample seed {seed!r}", hint="use a whole number >= 0")
    say = progress or (lambda _msg: None)
    spec, out = SCALES[scale], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    say(f"sample {scale}: drawing {spec.users:,} users, {spec.items:,} items and who rated what")
    world = make_world(rng, spec)
    say("drawing ratings and review times")
    truth = draw_ratings(rng, world)
    dups = draw_duplicates(rng, truth, round(DUPLICATE_SHARE * spec.ratings))
    asins = textgen.make_ids(len(world.item_genre), 0, seed, "B0", 8, 40)
    say("writing reviews.json.gz")
    write_reviews(out / "reviews.json.gz", world, truth, dups, asins, seed)
    say("writing meta.json.gz (also_buy from co-purchases)")
    meta_counts = write_meta(out / "meta.json.gz", world, truth, asins, seed)
    card = make_card(scale, seed, truth, dups, meta_counts, out)
    (out / "card.json").write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2) + b"\n")
    say(f"done: {out}")
    return card


def make_card(scale: str, seed: int, truth: Reviews, dups: Reviews, meta: dict[str, int], out: Path) -> dict:
    """What was generated, with the noise floor; counts are
    recounted from the rows, not copied from SCALES."""
    stars = np.concatenate([truth.rating, dups.rating]).astype(np.int64)
    dist = np.bincount(stars, minlength=6)[1:]
    noise = float(np.sqrt(np.mean((truth.rating - expected_rating(truth.score)) ** 2)))
    return {
        "scale": scale,
        "seed": seed,
        "users": len(np.unique(truth.user)),
        "items": len(np.unique(truth.item)),
        "ratings": len(stars),
        "items_with_meta": meta["items_with_meta"],
        "cold_items_with_text": meta["cold_items_with_text"],
        "also_buy_cutoff_day": meta["also_buy_cutoff_day"],
        "also_buy_rows": meta["also_buy_rows"],
        "duplicates": len(dups.rating),
        "rating_distribution": {str(k + 1): int(c) for k, c in enumerate(dist)},
        "mean_rating": round(float(stars.mean()), 4),
        "rating_std": round(float(stars.std()), 4),
        "noise_rmse": round(noise, 4),
        "generator_version": GENERATOR_VERSION,
        "files": {name: sha256_file(out / name) for name in ("reviews.json.gz", "meta.json.gz")},
    }


def write_reviews(
    path: Path, world: World, truth: Reviews, dups: Reviews, asins: np.ndarray, seed: int
) -> None:
    """reviews.json.gz: one 2018-format JSON line per review, grouped by asin, newest first."""
    rows = Reviews(
        *(np.concatenate([a, b]) for a, b in zip(vars(truth).values(), vars(dups).values(), strict=True))
    )
    rank = np.empty(len(asins), dtype=np.int64)
    rank[np.argsort(asins, kind="stable")] = np.arange(len(asins))
    order = np.lexsort((-rows.day, rank[rows.item]))
    rng = np.random.default_rng([seed, 1])
    user_ids = textgen.make_ids(world.n_users, 0, seed, "A", 13, 64).tolist()
    names = [
        n if k >= 0.005 else None  # a few reviews carry no name
        for n, k in zip(
            textgen.reviewer_names(rng, world.n_users), rng.random(world.n_users).tolist(), strict=False
        )
    ]
    item_format = rng.choice(len(textgen.FORMATS), len(asins), p=textgen.FORMAT_SHARES)
    days = textgen.format_days(FIRST_DAY, LAST_DAY)
    moods = textgen.item_moods(world.item_q)

    def chunks() -> Iterator[bytes]:
        for c, start in enumerate(range(0, len(order), CHUNK)):
            idx, rng = order[start : start + CHUNK], np.random.default_rng([seed, 2, c])
            user, item, day = rows.user[idx].tolist(), rows.item[idx], rows.day[idx]
            cols = textgen.review_columns(
                rng, rows.rating[idx].astype(np.int64), world.item_genre[item], moods[item], item_format[item]
            )
            cols["reviewerID"] = [user_ids[u] for u in user]
            cols["reviewerName"] = [names[u] for u in user]
            cols["asin"] = asins[item].tolist()
            cols["reviewTime"] = [days[d - FIRST_DAY] for d in day.tolist()]
            cols["unixReviewTime"] = (day.astype(np.int64) * textgen.DAY_SECONDS).tolist()
            cols["verified"] = (rng.random(len(idx)) < np.where(day > VERIFIED_FROM, 0.92, 0.4)).tolist()
            yield textgen.json_lines(cols, textgen.REVIEW_KEYS)

    textgen.write_gz(path, chunks())


def write_meta(path: Path, world: World, truth: Reviews, asins: np.ndarray, seed: int) -> dict[str, int]:
    """meta.json.gz: 2018-format item lines sorted by asin;
    some rated items have none, cold items have one."""
    rng = np.random.default_rng([seed, 3])
    n_items, n_rated = len(world.item_genre), int(truth.item.max()) + 1
    has_meta = np.concatenate([rng.random(n_rated) >= NO_META_SHARE, np.ones(n_items - n_rated, dtype=bool)])
    titles, brands, texts = textgen.item_strings(rng, world.item_genre, world.item_q, EMPTY_TITLE_SHARE)
    pop = np.bincount(truth.item, minlength=n_items)
    rank = np.empty(n_items, dtype=np.int64)
    rank[np.lexsort((rng.random(n_items), -pop))] = np.arange(1, n_items + 1)  # sales rank: popular first
    rows = np.flatnonzero(has_meta)
    rows = rows[np.argsort(asins[rows], kind="stable")]
    before = history_before_cutoff(truth.user, truth.day)
    buy, view = _co_purchases(truth.user[before], truth.item[before], n_items), _same_brand(brands)
    ids = asins.tolist()
    genre, ranks = world.item_genre.tolist(), rank.tolist()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(rows), CHUNK):
            idx = rows[start : start + CHUNK].tolist()
            cols = {
                "category": [["CDs & Vinyl", textgen.GENRE_NAMES[genre[i]]] for i in idx],
                "description": [[texts[i]] if ranks[i] % 10 else [] for i in idx],
                "title": [titles[i] for i in idx],
                "also_buy": [[ids[j] for j in buy[i]] for i in idx],
                "brand": [brands[i] if ranks[i] % 50 else "" for i in idx],
                "rank": [f"{ranks[i]:,} in CDs & Vinyl (" for i in idx],
                "also_view": [[ids[j] for j in view[i]] for i in idx],
                "price": [textgen.PRICES[ranks[i] % len(textgen.PRICES)] for i in idx],
                "asin": [ids[i] for i in idx],
            }
            yield textgen.json_lines(cols, list(cols))

    textgen.write_gz(path, chunks())
    return {
        "items_with_meta": int(has_meta[:n_rated].sum()),
        "cold_items_with_text": n_items - n_rated,
        "also_buy_cutoff_day": int(np.quantile(truth.day, ALSO_BUY_CUTOFF)),
        "also_buy_rows": int(before.sum()),
    }


def history_before_cutoff(user: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Rows also_buy may learn from: before the cut-off day (the ALSO_BUY_CUTOFF quantile of review days) and
    never one of a user's latest two (the validation and test items of a temporal leave-last-out), so a
    temporal evaluation never finds its held-out items in also_buy (the leak that made lists look good)."""
    order = np.lexsort((-day, user))  # per user, newest first
    u, d = user[order], day[order]
    first = np.searchsorted(u, np.arange(int(user.max()) + 1))
    count = np.bincount(user, minlength=len(first))
    second = d[np.minimum(first + 1, first + np.maximum(count, 1) - 1).clip(max=len(d) - 1)]
    # a row on the day of the user's second-newest row could be either held-out item once ties are broken
    return (day < np.quantile(day, ALSO_BUY_CUTOFF)) & (day < second[user])


def _co_purchases(user: np.ndarray, item: np.ndarray, n_items: int) -> list[list[int]]:
    """For every item, the ALSO_BUY items most often rated by the same users (ties: lower index first).

    Each user counts with at most 50 of their items, which bounds the work of heavy raters.
    """
    order = np.lexsort((item, user))
    u, it = user[order], item[order]
    keep = np.arange(len(u)) - np.searchsorted(u, u) < 50
    x = csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (u[keep], it[keep])), shape=(int(user.max()) + 1, n_items)
    )
    co = (x.T @ x).tocsr()
    rows = np.repeat(np.arange(n_items), np.diff(co.indptr))
    off = rows != co.indices
    rows, cols, counts = rows[off], co.indices[off], co.data[off]
    pick = np.lexsort((cols, -counts, rows))
    rows, cols = rows[pick], cols[pick]
    keep = np.arange(len(rows)) - np.searchsorted(rows, rows) < ALSO_BUY
    bounds = np.searchsorted(rows[keep], np.arange(n_items + 1)).tolist()
    flat = cols[keep].tolist()
    return [flat[bounds[k] : bounds[k + 1]] for k in range(n_items)]


def _same_brand(brands: list[str]) -> list[list[int]]:
    """For every item, up to ALSO_VIEW other items of the same artist (what shoppers also look at)."""
    groups: dict[str, list[int]] = {}
    for i, b in enumerate(brands):
        groups.setdefault(b, []).append(i)
    return [[j for j in groups[b][: ALSO_VIEW + 1] if j != i][:ALSO_VIEW] for i, b in enumerate(brands)]
