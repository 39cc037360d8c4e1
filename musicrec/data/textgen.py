"""Strings and files for the sample generator: Amazon-looking
ids, dates, names, titles, review text, JSON lines.

Genres own their vocabulary and the rating owns the sentiment words, so text carries real signal.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson

from musicrec.store import atomic_write

# (name, share of demand, words): Amazon CDs & Vinyl sub-genres; a few words are shared on purpose.
GENRES: list[tuple[str, float, str]] = [
    ("Rock", 0.14, "guitar riff anthem amp stadium drummer solo highway rebel thunder garage chorus"),
    ("Pop", 0.13, "hook dance radio sweetheart summer glitter chart heartbeat melody sparkle chorus single"),
    (
        "Alternative Rock",
        0.07,
        "indie distortion feedback grunge shoegaze lofi reverb basement static echo fuzz",
    ),
    (
        "Rap & Hip-Hop",
        0.07,
        "beat rhymes flow verse mixtape hustle street cypher sample bars boombap freestyle",
    ),
    ("R&B", 0.06, "groove soul falsetto slowjam velvet harmony smooth midnight neosoul ballad silk romance"),
    ("Country", 0.07, "twang fiddle honkytonk pickup dirt whiskey porch steelguitar rodeo heartland banjo"),
    ("Jazz", 0.05, "saxophone trumpet bebop swing improvisation quartet standards bassline brushes scat"),
    (
        "Classical",
        0.05,
        "symphony concerto sonata orchestra violin piano cello opus baroque conductor chamber",
    ),
    ("Dance & Electronic", 0.06, "synth bassdrop remix techno house trance rave club sequencer loop dj"),
    ("Christian", 0.05, "worship praise hymn gospel grace choir faith spirit hallelujah prayer glory"),
    ("Blues", 0.03, "harmonica delta slide shuffle juke bluesman crossroads twelvebar boogie mississippi"),
    ("Folk", 0.03, "acoustic banjo ballad storyteller campfire mandolin troubadour fingerpicking hills"),
    ("Metal", 0.03, "shred doublebass growl breakdown headbang thrash doom blastbeat mosh brutal inferno"),
    ("Soundtracks", 0.03, "score film cinematic theme composer orchestral scene trailer soundtrack epic"),
    ("New Age", 0.02, "meditation ambient relaxing healing ocean zen chimes tranquil spa yoga dreamscape"),
    (
        "Latin Music",
        0.03,
        "salsa bachata reggaeton cumbia tango mariachi ritmo corazon fiesta bolero merengue",
    ),
    ("Reggae", 0.02, "dub riddim roots skank rasta island offbeat dancehall jah babylon ska irie"),
    (
        "World Music",
        0.02,
        "afrobeat kora sitar celtic flamenco tabla desert bossa qawwali balkan highlife oud",
    ),
    (
        "Broadway & Vocalists",
        0.02,
        "showtune cast musical crooner cabaret standards stage overture encore diva",
    ),
    (
        "Children's Music",
        0.02,
        "lullaby singalong nursery kids playtime alphabet silly bedtime puppet sunshine",
    ),
]
GENRE_NAMES = [g[0] for g in GENRES]
GENRE_SHARES = np.array([g[1] for g in GENRES])
GENRE_WORDS = [g[2].split() for g in GENRES]
# One pair per latent dimension: an item's strongest factors name its mood, so text hints at q_i too.
MOODS = [
    ("bright", "dark"),
    ("upbeat", "mellow"),
    ("raw", "polished"),
    ("acoustic", "electric"),
    ("epic", "intimate"),
    ("catchy", "experimental"),
    ("classic", "modern"),
    ("live", "studio"),
]
MOOD_WORDS = [w for pair in MOODS for w in pair]  # word of dim k, sign +: 2k, sign -: 2k + 1
SENTIMENT = {  # rating -> (phrases, adjectives)
    1: (
        "terrible waste of money|awful|hated it|did not download|wrong item sent|returned it",
        "awful bad unlistenable",
    ),
    2: ("disappointing|not great|pretty weak|forgettable|expected more", "weak dull boring"),
    3: ("it is okay|decent enough|not bad|mixed feelings|average at best", "okay average fine"),
    4: ("really good|very nice|solid work|enjoyable|pretty good", "good nice solid"),
    5: (
        "love it|absolutely love this|a masterpiece|one of the best|highly recommend|amazing",
        "great amazing perfect",
    ),
}
PHRASES = {r: p.split("|") for r, (p, _) in SENTIMENT.items()}
ADJECTIVES = {r: a.split() for r, (_, a) in SENTIMENT.items()}
NOUNS = ["album", "song", "track", "record", "cd", "collection", "release", "download"]
STARS = {1: "One Star", 2: "Two Stars", 3: "Three Stars", 4: "Four Stars", 5: "Five Stars"}
# Positional slots: 0 Phrase, 1 Adjective, 2 phrase, 3 adjective, 4 genre word, 5 genre word, 6 mood, 7 noun,
# 8 Mood.
SENTENCES = [
    "{0}.",
    "{1} {7}.",
    "The {4} on this {7} is {3}.",
    "{8} {4} and {5}, {3} overall.",
    "If you like {4} and {5} this {7} is {3}.",
    "Really {6} {4}, {2}.",
    "The {5} sounds {6} and the {4} is {3}.",
    "{0}, especially the {4}.",
    "This {7} is {6} and full of {4}.",
    "Bought this {7} for the {4}, {2}.",
]
FIRST = [
    "John",
    "Mary",
    "James",
    "Linda",
    "Robert",
    "Susan",
    "Michael",
    "Karen",
    "David",
    "Lisa",
    "William",
    "Nancy",
    "Richard",
    "Betty",
    "Joseph",
    "Sandra",
    "Thomas",
    "Donna",
    "Chris",
    "Carol",
    "Daniel",
    "Ruth",
    "Paul",
    "Sharon",
    "Mark",
    "Laura",
    "Steve",
    "Kim",
    "Kevin",
    "Amy",
    "Brian",
    "Angela",
]
LAST = [
    "Smith",
    "Johnson",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Garcia",
    "Wilson",
    "Moore",
    "Taylor",
    "Anderson",
    "Thomas",
    "Jackson",
    "White",
    "Harris",
    "Martin",
    "Lee",
    "Walker",
    "Hall",
    "Allen",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Hill",
    "Campbell",
]
ALNUM = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
DAY_SECONDS = 86_400
FORMATS = [
    {"Format:": " Audio CD"},
    {"Format:": " MP3 Music"},
    {"Format:": " Vinyl"},
    {"Format:": " Audio Cassette"},
]
FORMAT_SHARES = [0.45, 0.45, 0.07, 0.03]
REVIEW_KEYS = [
    "overall",
    "vote",
    "verified",
    "reviewTime",
    "reviewerID",
    "asin",
    "style",
    "reviewerName",
    "reviewText",
    "summary",
    "unixReviewTime",
    "image",
]  # the order of real 2018 lines
PRICES = ["$9.99", "$11.88", "$13.98", "$7.99", "$1.29", "$0.99", "", "$15.49", "$24.99", "$5.99"]


def make_ids(n: int, start: int, seed: int, prefix: str, width: int, bits: int) -> np.ndarray:
    """Unique ids like real ones (prefix + `width` base-36 chars) for indices start..start+n-1.

    A seeded bijective hash of the index on `bits` bits (36**width must exceed 2**bits), written in
    base 36, so ids look random but never collide.
    """
    mask = np.uint64((1 << bits) - 1)
    key = np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % (1 << 64))
    with np.errstate(over="ignore"):
        x = (np.arange(start, start + n, dtype=np.uint64) + key) & mask
        for mult, shift in ((0xBF58476D1CE4E5B9, bits // 2 - 2), (0x94D049BB133111EB, bits // 2 - 5)):
            x ^= x >> np.uint64(shift)
            x = (x * np.uint64(mult)) & mask  # odd multiplier: a bijection mod 2**bits
        x ^= x >> np.uint64(bits // 2)
    digits = np.empty((n, width), dtype=np.uint8)
    for k in range(width - 1, -1, -1):
        digits[:, k] = (x % np.uint64(36)).astype(np.uint8)
        x //= np.uint64(36)
    # The leading digit only spans a few values; shifting it by the others keeps it injective.
    digits[:, 0] = (digits[:, 0].astype(np.int64) + 7 * digits[:, 1:].sum(1)) % 36
    head = np.tile(np.frombuffer(prefix.encode(), np.uint8), (n, 1))
    chars = np.ascontiguousarray(np.concatenate([head, ALNUM[digits]], axis=1))
    size = width + len(prefix)
    return chars.view(f"S{size}").ravel().astype(f"U{size}")


def format_days(first_day: int, last_day: int) -> list[str]:
    """Amazon's reviewTime strings ("09 8, 2013": month padded, day not) for days since 1970, inclusive."""
    days = np.arange(first_day, last_day + 1).astype("datetime64[D]")
    month_start = days.astype("datetime64[M]")
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    months = month_start.astype(np.int64) % 12 + 1
    dom = (days - month_start).astype(np.int64) + 1
    return [
        f"{m:02d} {d}, {y}" for y, m, d in zip(years.tolist(), months.tolist(), dom.tolist(), strict=True)
    ]


def reviewer_names(rng: np.random.Generator, n: int) -> list[str]:
    """Display names: many "Amazon Customer", the rest first names with a surname or an initial."""
    kind = rng.choice(4, size=n, p=[0.2, 0.4, 0.3, 0.1]).tolist()
    first = rng.integers(0, len(FIRST), n).tolist()
    last = rng.integers(0, len(LAST), n).tolist()
    num = rng.integers(1, 999, n).tolist()
    out = []
    for k, f, s, d in zip(kind, first, last, num, strict=True):
        if k == 0:
            out.append("Amazon Customer")
        elif k == 1:
            out.append(f"{FIRST[f]} {LAST[s]}")
        elif k == 2:
            out.append(f"{FIRST[f]} {LAST[s][0]}.")
        else:
            out.append(f"{FIRST[f].lower()}{d}")
    return out


def item_moods(q: np.ndarray) -> np.ndarray:
    """The two strongest latent dimensions of each item as
    mood word indices (dim k: 2k if q > 0, else 2k+1)."""
    top = np.argsort(-np.abs(q), axis=1, kind="stable")[:, :2]
    negative = np.take_along_axis(q, top, axis=1) < 0
    return (2 * top + negative).astype(np.int64)


def item_strings(
    rng: np.random.Generator, genre: np.ndarray, q: np.ndarray, empty_title_share: float
) -> tuple[list[str], list[str], list[str]]:
    """Titles (a few empty), artist names (about three items per artist of the genre) and descriptions."""
    counts = np.bincount(genre, minlength=len(GENRES))
    n_artists = np.maximum(1, counts // 3)
    first = np.concatenate([[0], np.cumsum(n_artists)[:-1]])
    artist = first[genre] + (rng.random(len(genre)) * n_artists[genre]).astype(np.int64)
    names = artist_names(rng, np.repeat(np.arange(len(counts)), n_artists))
    brands = [names[a] for a in artist.tolist()]
    moods = item_moods(q)
    titles = item_titles(rng, genre, moods)
    texts = descriptions(genre, moods, titles, brands)
    titles = [
        t if k >= empty_title_share else ""
        for t, k in zip(titles, rng.random(len(genre)).tolist(), strict=True)
    ]
    return titles, brands, texts


def artist_names(rng: np.random.Generator, genre: np.ndarray) -> list[str]:
    """Artist (brand) names; bands are named after their genre's words."""
    kind = rng.integers(0, 3, len(genre)).tolist()
    pick = rng.random((len(genre), 2)).tolist()
    out = []
    for g, k, (a, b) in zip(genre.tolist(), kind, pick, strict=True):
        words = GENRE_WORDS[g]
        if k == 0:
            out.append(f"The {words[int(a * len(words))].title()}s")
        else:
            out.append(f"{FIRST[int(a * len(FIRST))]} {LAST[int(b * len(LAST))]}")
    return out


def item_titles(rng: np.random.Generator, genre: np.ndarray, mood: np.ndarray) -> list[str]:
    """Album titles built from the genre's words and the item's mood; a few generic words are shared."""
    shared = ["Love", "Night", "Heart", "Road", "Home", "Dream", "Live", "Greatest", "Hits"]
    r = rng.random((len(genre), 4)).tolist()
    out = []
    for g, m, (a, b, c, d) in zip(genre.tolist(), mood[:, 0].tolist(), r, strict=True):
        words = GENRE_WORDS[g]
        w1, w2 = words[int(a * len(words))].title(), words[int(b * len(words))].title()
        if c < 0.3:
            title = f"{MOOD_WORDS[m].title()} {w1}"
        elif c < 0.6:
            title = f"{w1} of the {w2}"
        elif c < 0.8:
            title = f"{shared[int(d * len(shared))]} {w1}"
        else:
            title = f"The {w1} {w2}"
        out.append(title + (" (Remastered)" if d > 0.95 else ""))
    return out


def descriptions(genre: np.ndarray, mood: np.ndarray, titles: list[str], artists: list[str]) -> list[str]:
    """One-paragraph descriptions naming the genre, two genre words and the item's two moods."""
    out = []
    for g, (m1, m2), t, a in zip(genre.tolist(), mood.tolist(), titles, artists, strict=True):
        words = GENRE_WORDS[g]
        w1, w2 = words[(m1 + 3 * m2) % len(words)], words[(m2 + 5) % len(words)]
        out.append(
            f"{t or 'This album'} by {a}: {GENRE_NAMES[g].lower()} that is {MOOD_WORDS[m1]} and "
            f"{MOOD_WORDS[m2]}, with {w1} and {w2}."
        )
    return out


def review_texts(
    rng: np.random.Generator, genre: np.ndarray, mood: np.ndarray, tone: np.ndarray
) -> list[str]:
    """Reviews of 1-6 sentences: genre words of the item, its moods (mostly) and words of the tone (1-5)."""
    n = len(genre)
    most = 6
    n_sent = rng.choice(np.arange(1, most + 1), size=n, p=[0.3, 0.25, 0.15, 0.1, 0.1, 0.1]).tolist()
    tmpl = rng.integers(0, len(SENTENCES), (n, most)).tolist()
    u = rng.random((n, most, 5)).tolist()
    own = np.take_along_axis(mood, rng.integers(0, 2, (n, most)), axis=1)
    mood_words = np.where(
        rng.random((n, most)) < 0.8, own, rng.integers(0, len(MOOD_WORDS), (n, most))
    ).tolist()
    out = []
    for j, (g, t) in enumerate(zip(genre.tolist(), tone.tolist(), strict=True)):
        words, ph, adj = GENRE_WORDS[g], PHRASES[t], ADJECTIVES[t]
        parts = []
        for k in range(n_sent[j]):
            a, b, c, d, e = u[j][k]
            p, q = ph[int(a * len(ph))], adj[int(b * len(adj))]
            m = MOOD_WORDS[mood_words[j][k]]
            parts.append(
                SENTENCES[tmpl[j][k]].format(
                    p.capitalize(),
                    q.capitalize(),
                    p,
                    q,
                    words[int(c * len(words))],
                    words[int(d * len(words))],
                    m,
                    NOUNS[int(e * len(NOUNS))],
                    m.capitalize(),
                )
            )
        out.append(" ".join(parts))
    return out


def summaries(rng: np.random.Generator, genre: np.ndarray, rating: np.ndarray, tone: np.ndarray) -> list[str]:
    """Review headlines: often Amazon's "Five Stars" style, otherwise a short phrase of the tone."""
    u = rng.random((len(genre), 3)).tolist()
    out = []
    for g, r, t, (a, b, c) in zip(genre.tolist(), rating.tolist(), tone.tolist(), u, strict=True):
        if a < 0.35:
            out.append(STARS[r])
        elif a < 0.7:
            ph = PHRASES[t]
            out.append(ph[int(b * len(ph))].capitalize() + ("!" if t >= 4 else ""))
        else:
            adj, words = ADJECTIVES[t], GENRE_WORDS[g]
            out.append(f"{adj[int(b * len(adj))].capitalize()} {words[int(c * len(words))]}")
    return out


def image_url(rng: np.random.Generator) -> str:
    """A customer image URL shaped like Amazon's."""
    name = ALNUM[rng.integers(0, 36, 11)].tobytes().decode()
    return f"https://images-na.ssl-images-amazon.com/images/I/{name}._SY88.jpg"


def review_columns(
    rng: np.random.Generator, stars: np.ndarray, genre: np.ndarray, mood: np.ndarray, item_format: np.ndarray
) -> dict[str, list]:
    """Fields of a chunk of reviews that follow the stars, the item and chance (None: field left out).

    The words' tone is the star rating 80% of the time, a neighbouring one otherwise.
    """
    n = len(stars)
    tone = np.where(rng.random(n) < 0.8, stars, np.clip(stars + rng.choice([-1, 1], n), 1, 5))
    texts = review_texts(rng, genre, mood, tone)
    votes = np.where(rng.random(n) < 0.12, 2 + rng.geometric(0.2, n), 0).tolist()
    u = rng.random((n, 3)).tolist()
    return {
        "overall": stars.astype(np.float64).tolist(),
        "vote": [f"{v:,}" if v else None for v in votes],
        "style": [FORMATS[f] if k[0] >= 0.08 else None for f, k in zip(item_format.tolist(), u, strict=True)],
        "reviewText": [t if k[1] >= 0.002 else None for t, k in zip(texts, u, strict=True)],
        "summary": summaries(rng, genre, stars, tone),
        "image": [[image_url(rng)] if k[2] < 0.005 else None for k in u],
    }


def json_lines(cols: dict[str, list], keys: list[str]) -> bytes:
    """One JSON object per row, keys in the given order, leaving out fields whose value is None."""
    rows = zip(*(cols[k] for k in keys), strict=True)
    return b"".join(
        orjson.dumps(
            {k: v for k, v in zip(keys, row, strict=True) if v is not None}, option=orjson.OPT_APPEND_NEWLINE
        )
        for row in rows
    )


def write_gz(path: Path, chunks: Iterator[bytes]) -> None:
    """Gzip chunks to path while the next one is built;
    mtime 0 and no name inside, so reruns are identical."""
    atomic_write(path, lambda raw: _gzip_chunks(raw, chunks))  # readers never see a half-written file


def _gzip_chunks(raw: BinaryIO, chunks: Iterator[bytes]) -> None:
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=4) as gz,
    ):
        pending: Future | None = None
        for data in chunks:
            if pending is not None:
                pending.result()
            pending = pool.submit(gz.write, data)
        if pending is not None:
            pending.result()
