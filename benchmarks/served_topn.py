"""The product's top-N quality: each user's latest interaction is cut from the input file before `musicrec
train`, and the published bundle's lists are measured on it, beside EASE, implicit's ALS, a transition
baseline and most-popular fitted on the same rest rows.

    python benchmarks/served_topn.py --data mi-ratings|cm100k|lastfm|medium [--threads 2] \
        [--users 5000] [--out benchmarks/out/served]

1. The cut: the input file's lines are read in their own format; each user's latest line (by time, ties by
   file order; a file without times: a seeded random order, as musicrec.metrics.protocol orders it) is cut
   out for users with >= 2 lines. The rest is written back in the same format (same header, compression).
2. `musicrec train` runs on the rest exactly as a user runs it: a fresh store (no earlier `tune`), default
   models, the normal refit, default flags but the data set's own (rating_models.EXTRA_FLAGS; a --tags file
   less the cut pairs' lines, so a held-out pair's tags never reach its item's text).
3. `musicrec score --users` writes each cut user's top-10 from the published champion (known items already
   excluded by the bundle's history, which holds every rest row).
4. In this process, on the same rest rows: EASE and implicit ALS (hyperparameters chosen over
   benchmarks/topn.py's grids on an inner hold-out: each user's latest remaining line, never the cut), the
   transition baseline (transitions(): steps, last items and decay also chosen on the inner hold-out) and
   most-popular; each refit on every rest row with its chosen settings, each user's rest items excluded.
   On play counts (lastfm) ALS reads the confidence 1 + log(1 + plays), as musicrec trains with.
NDCG@10 and recall@10 (one cut item per user: HR@10) over the cut users whose cut item is not among their
rest items; above --users (5,000) of them, over a seeded sample of that many: the same users for the
product (`score --users` lists only them) and every reference; the inner hold-out samples its targets too.
Every fit still reads every rest row. That is what makes the medium sample (106K users, 58K items)
measurable: the references' full score rows over 58K items, per grid point, for a sample, not every user;
EASE there is fitted on the 5,000 most popular items (benchmarks/topn.py's EASE_MAX_ITEMS, as musicrec's
ease). MI, Last.fm and CM100k have fewer cut users and are measured whole.
Prints one markdown table (each row's ratio to the best of EASE, ALS and transitions) and writes
<out>/served-topn-<data>.json with the input's sha256 and the commands. Needs implicit==0.7.3.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import topn
from rating_models import EXTRA_FLAGS, inputs

from musicrec.metrics.protocol import recency_rank
from musicrec.metrics.topn import interaction_matrix, list_metrics

K = 10
SAMPLE_SEED = 0  # the seed of the cut users' sample and of the inner hold-out's (--users)
TRANSITION_GRID = {"steps": [1, 3], "last": [1, 5], "decay": [0.5, 1.0]}  # defaults: 3, 5, 0.5
ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Layout:
    """Where an input file's fields are: a delimiter (None: JSON lines) and the user, item, value and time
    fields (positions, or JSON keys); time None: the file holds no times."""

    sep: str | None
    header: bool
    user: int | str
    item: int | str
    value: int | str
    time: int | str | None


LAYOUTS = {
    "mi-ratings": Layout(",", False, 1, 0, 2, 3),  # item,user,rating,timestamp
    "cm100k": Layout("\t", False, 0, 1, 2, None),  # its 4th field is no time (musicrec leaves it out)
    "lastfm": Layout("\t", True, 0, 1, 2, None),  # userID artistID weight (play counts)
    "medium": Layout(None, False, "reviewerID", "asin", "overall", "unixReviewTime"),
}


def input_files(data: str, tmp: Path) -> tuple[Path, list[str]]:
    """(the interactions file, the metadata files) of a data set."""
    if data == "medium":
        if not (topn.MEDIUM / "reviews.json.gz").exists():
            from musicrec.data.generate import generate_sample

            generate_sample(topn.MEDIUM, scale="medium", seed=0)
        return topn.MEDIUM / "reviews.json.gz", [str(topn.MEDIUM / "meta.json.gz")]
    reviews, meta = inputs(data, tmp)
    return Path(reviews[0]), meta


def read_lines(path: Path, layout: Layout) -> tuple[list[bytes], list[bytes], pd.DataFrame]:
    """(header lines, data lines, one row per data line: user_id, item_id, value, timestamp)."""
    raw = (gzip.open(path) if path.suffix == ".gz" else path.open("rb")).read().splitlines(keepends=True)
    head, body = (raw[:1], raw[1:]) if layout.header else ([], raw)
    body = [line for line in body if line.strip()]
    if layout.sep is None:
        records = [json.loads(line) for line in body]
        fields = [[r.get(k) for k in (layout.user, layout.item, layout.value, layout.time)] for r in records]
    else:
        split = [line.decode("latin-1").rstrip("\r\n").split(layout.sep) for line in body]
        cols = (layout.user, layout.item, layout.value, layout.time)
        fields = [[f[c] if c is not None else None for c in cols] for f in split]
    frame = pd.DataFrame(fields, columns=["user_id", "item_id", "value", "timestamp"])
    frame[["user_id", "item_id"]] = frame[["user_id", "item_id"]].astype(str)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce")
    return head, body, frame


def flags_without_cut(flags: list[str], cut: pd.DataFrame, folder: Path) -> list[str]:
    """The data set's extra flags with each --tags file rewritten without the cut pairs' lines (its first two
    fields: user, item), so no tag a user gave a held-out item reaches that item's text."""
    out = list(flags)
    pairs = set(zip(cut["user_id"], cut["item_id"], strict=True))
    for k, flag in enumerate(flags[:-1]):
        if flag != "--tags":
            continue
        source = Path(flags[k + 1])
        head, *lines = source.read_bytes().splitlines(keepends=True)
        kept = [line for line in lines if tuple(line.decode("latin-1").split("\t")[:2]) not in pairs]
        (folder / source.name).write_bytes(b"".join([head, *kept]))
        out[k + 1] = str(folder / source.name)
    return out


def order_lines(frame: pd.DataFrame) -> np.ndarray:
    """Each line's recency within its user (0: latest), musicrec.metrics.protocol's order: by time, ties by
    file order; with no time at all, a seeded random order."""
    has_times = bool(frame["timestamp"].notna().any())
    tiebreak = None if has_times else np.random.default_rng(0).permutation(len(frame))
    return recency_rank(frame["user_id"].to_numpy(), frame["timestamp"], tiebreak)[0]


def write_rest(path: Path, head: list[bytes], body: list[bytes], keep: np.ndarray, dest: Path) -> Path:
    """The input file without the cut lines, same name, header and compression."""
    out = dest / path.name
    data = b"".join(head) + b"".join(line for line, k in zip(body, keep, strict=True) if k)
    out.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return out


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """Run one command in cwd (its output goes to this process's stderr); its wall seconds."""
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=sys.stderr)
    return time.perf_counter() - t0


def served_lists(
    rest: Path, meta: list[str], extra: list[str], users: list[str], tmp: Path
) -> tuple[pd.DataFrame, dict[str, Any], list[list[str]], float]:
    """(the top-10 lists `musicrec score --users` writes from the published bundle, the training report, the
    two commands, train seconds) after `musicrec train` on the rest file in a fresh store."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp / "home"),
        "PREFECT_HOME": str(tmp / "prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    musicrec = [sys.executable, "-m", "musicrec"]
    store, report, users_file, out = tmp / "store", tmp / "report.json", tmp / "users.csv", tmp / "lists"
    pd.DataFrame({"user_id": users}).to_csv(users_file, index=False)
    train = ["train", "--reviews", str(rest), *[a for m in meta for a in ("--meta", m)], *extra]
    train += ["--store", str(store), "--report", str(report)]
    score = ["score", "--users", str(users_file), "--top-n", str(K), "--format", "csv"]
    score += ["--out", out.as_uri(), "--store", str(store)]
    seconds = run([*musicrec, *train], env, tmp)
    run([*musicrec, *score], env, tmp)
    lists = pd.concat(
        [pd.read_csv(p, dtype={"user_id": str, "item_id": str}) for p in sorted(out.glob("*.csv"))]
    )
    return lists, json.loads(report.read_text()), [["musicrec", *train], ["musicrec", *score]], seconds


def top_items(scores: np.ndarray, exclude: sp.csr_matrix, k: int = K) -> np.ndarray:
    """The k best non-excluded items per row, best first, ties to the smaller index (-1 pads)."""
    s = np.array(scores, dtype=np.float64)
    r, c = exclude.nonzero()
    s[r, c] = -np.inf
    at = max(0, s.shape[1] - k)
    kth = np.partition(s, at, axis=1)[:, at]
    rows, cols = np.nonzero((s >= kth[:, None]) & (s > -np.inf))
    order = np.lexsort((cols, -s[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    within = np.arange(len(rows)) - np.searchsorted(rows, rows)
    out = np.full((len(s), k), -1, np.int64)
    keep = within < k
    out[rows[keep], within[keep]] = cols[keep]
    return out


def lists_of(score: ScoreFn, users: np.ndarray, exclude: sp.csr_matrix, batch: int = 256) -> np.ndarray:
    """(len(users), K) item indices: each user's top-K over the items exclude does not hold for them."""
    parts = [
        top_items(score(users[a : a + batch]), exclude[users[a : a + batch]])
        for a in range(0, len(users), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, K), np.int64)


def measure(lists: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """NDCG@K and recall@K (one target item per row; -1: an item no list can hold)."""
    hit = (lists == targets[:, None]) & (targets[:, None] >= 0)
    rank = np.where(hit.any(1), hit.argmax(1), K)
    gain = np.where(rank < K, 1.0 / np.log2(rank + 2.0), 0.0)
    return {f"ndcg@{K}": float(gain.mean()), f"recall@{K}": float((rank < K).mean()), "users": len(targets)}


@dataclass
class Problem:
    """Training rows indexed over the rest's users and items, with each user's time order."""

    X: sp.csr_matrix  # 1 per (user, item) interaction
    W: sp.csr_matrix  # ALS's confidence: play counts 1 + log(1 + plays), else X
    sequences: pd.DataFrame  # user, item codes, oldest first per user

    def split(self, X: sp.csr_matrix | None = None) -> topn.Split:
        """A benchmarks/topn.py Split whose training matrix is X (default: self.X); only X is read."""
        empty = np.zeros(0, np.int64)
        return topn.Split(
            pd.DataFrame(), empty, empty, empty, self.X if X is None else X, self.X, self.X, 0, 0
        )


def problem(rows: pd.DataFrame, recency: np.ndarray, shape: tuple[int, int], plays: bool) -> Problem:
    X = interaction_matrix(rows["u"].to_numpy(), rows["i"].to_numpy(), *shape)
    W = X
    if plays:
        w = 1.0 + np.log1p(rows["value"].fillna(0).clip(lower=0).to_numpy(np.float64))
        W = sp.csr_matrix((w, (rows["u"], rows["i"])), shape=shape, dtype=np.float32)
        W.sum_duplicates()
    order = np.lexsort((-recency, rows["u"].to_numpy()))
    return Problem(X, W, rows.iloc[order][["u", "i"]].reset_index(drop=True))


def transitions(p: Problem, steps: int, last: int, decay: float) -> ScoreFn:
    """Scores of the items that followed the user's last `last` items in everyone's training sequences within
    `steps` steps (weight 1/step), the latest item weighted 1, the one before decay, then decay^2, ...;
    popularity breaks ties (one integer key per item: exact in float64)."""
    n_users, n_items = p.X.shape
    u, i = p.sequences["u"].to_numpy(), p.sequences["i"].to_numpy()
    pairs = [(i[:-d][u[:-d] == u[d:]], i[d:][u[:-d] == u[d:]], 1.0 / d) for d in range(1, steps + 1)]
    T = coo(pairs, (n_items, n_items))
    ends = np.flatnonzero(np.r_[u[1:] != u[:-1], True]) if len(u) else np.zeros(0, np.int64)
    starts = np.r_[0, ends[:-1] + 1][: len(ends)]
    recent = [(u[ends[ok]], i[ends[ok] - j], decay**j) for j in range(last) for ok in [ends - j >= starts]]
    P = coo(recent, (n_users, n_items))
    popularity = np.asarray(p.X.sum(0)).ravel()
    tiebreak = np.empty(n_items, np.float64)  # n_items - 1 for the most popular item, 0 for the least
    tiebreak[np.lexsort((np.arange(n_items), -popularity))] = np.arange(n_items)[::-1]

    def score(users: np.ndarray) -> np.ndarray:
        return np.round((P[users] @ T).toarray() * 1e6) * n_items + tiebreak

    return score


def coo(parts: list[tuple[np.ndarray, np.ndarray, float]], shape: tuple[int, int]) -> sp.csr_matrix:
    """The CSR sum of (rows, cols, weight) parts, duplicates summed."""
    rows = np.concatenate([r for r, _, _ in parts])
    cols = np.concatenate([c for _, c, _ in parts])
    data = np.concatenate([np.full(len(r), w) for r, _, w in parts])
    m = sp.csr_matrix((data, (rows, cols)), shape=shape)
    m.sum_duplicates()
    return m


def fits(p: Problem, threads: int) -> dict[str, Callable[..., ScoreFn]]:
    """label -> fit(**settings) on the problem's rows."""
    opts = {"threads": threads, "seed": 0}
    split, als_split = p.split(), p.split(p.W)
    return {
        "EASE": lambda **s: topn.ease(split, **s),
        "implicit ALS": lambda **s: topn.implicit_als(als_split, **opts, **s),
        "transitions": lambda **s: transitions(p, **s),
        "most-popular": lambda **s: topn.most_popular(split),
    }


def choose(
    label: str,
    fit: Callable[..., ScoreFn],
    space: dict[str, list[Any]],
    inner: Problem,
    targets: pd.DataFrame,
) -> tuple[dict[str, Any], float]:
    """The grid point with the best inner hold-out NDCG@10 (ties: the first), and that NDCG."""
    users, items = targets["u"].to_numpy(), targets["i"].to_numpy()
    best: tuple[float, dict[str, Any]] | None = None
    for params in topn.grid(space) or [{}]:
        got = measure(lists_of(fit(**params), users, inner.X), items)[f"ndcg@{K}"]
        print(f"  {label} {params}: inner NDCG@10 {got:.4f}", file=sys.stderr, flush=True)
        if best is None or got > best[0]:
            best = (got, params)
    assert best is not None
    return best[1], best[0]


def references(
    rest: pd.DataFrame, recency: np.ndarray, count: np.ndarray, shape: tuple[int, int], args: Any
) -> tuple[Problem, list[dict[str, Any]]]:
    """(the problem of every rest row, each reference's label, settings and inner hold-out NDCG@10): the
    settings chosen on the inner hold-out, each user's latest remaining line (users with >= 2 left)."""
    plays = args.data == "lastfm"
    full = problem(rest, recency, shape, plays)
    held = (recency == 1) & (count >= 3)  # rank 0 was cut: rank 1 is the latest remaining line
    inner = problem(rest[~held], recency[~held], shape, plays)
    targets = sample_rows(rest[held], args.users)
    grids = topn.grids(full.X.nnz, quick=False)
    spaces = {"EASE": grids["EASE"], "implicit ALS": grids["implicit ALS"], "transitions": TRANSITION_GRID}
    chosen = []
    for label, fit in fits(inner, args.threads).items():
        params, ndcg = choose(label, fit, spaces.get(label, {}), inner, targets)
        chosen.append({"method": label, "settings": params, "inner_ndcg@10": ndcg})
    return full, chosen


def sample_rows(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most n of the rows (one per user here), a seeded sample in their own order."""
    if len(rows) <= n:
        return rows
    at = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(rows), n, replace=False))
    return rows.iloc[at]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mi-ratings", choices=sorted(LAYOUTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--users", type=int, default=5000, help="cut users measured at most (a seeded sample)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "served"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        path, meta = input_files(args.data, tmp)
        head, body, frame = read_lines(path, LAYOUTS[args.data])
        recency = order_lines(frame)
        count = frame.groupby("user_id")["user_id"].transform("size").to_numpy()
        cut = (recency == 0) & (count >= 2)
        (tmp / "input").mkdir()
        rest_file = write_rest(path, head, body, ~cut, tmp / "input")
        rest, held = frame[~cut].copy(), frame[cut].copy()
        users, items = (
            pd.Index(np.sort(rest["user_id"].unique())),
            pd.Index(np.sort(rest["item_id"].unique())),
        )
        rest["u"], rest["i"] = users.get_indexer(rest["user_id"]), items.get_indexer(rest["item_id"])
        held["u"], held["i"] = users.get_indexer(held["user_id"]), items.get_indexer(held["item_id"])
        known = pd.MultiIndex.from_frame(rest[["user_id", "item_id"]])
        held = held[~pd.MultiIndex.from_frame(held[["user_id", "item_id"]]).isin(known)]  # else unlistable
        listable = len(held)
        held = sample_rows(held, args.users)
        flags = flags_without_cut(EXTRA_FLAGS.get(args.data, []), frame[cut], tmp / "input")
        lists, report, commands, seconds = served_lists(rest_file, meta, flags, held["user_id"].tolist(), tmp)
        full, chosen = references(rest, recency[~cut], count[~cut], (len(users), len(items)), args)
        for row in chosen:
            fn = fits(full, args.threads)[row["method"]](**row["settings"])
            row.update(measure(lists_of(fn, held["u"].to_numpy(), full.X), held["i"].to_numpy()))
        commands = [[a.replace(str(tmp), "$TMP") for a in c] for c in commands]
    per_user = list_metrics(lists.rename(columns=str), held[["user_id", "item_id"]], K)
    champion = report["retrieval"]["champion"]
    ours = {
        "method": f"musicrec served ({champion})",
        "settings": served_settings(report),
        f"ndcg@{K}": float(per_user["ndcg"].mean()),
        f"recall@{K}": float(per_user["hit"].mean()),
        "users": len(per_user),
    }
    rows = [ours, *chosen]
    best = max(r[f"ndcg@{K}"] for r in chosen if r["method"] != "most-popular")
    for r in rows:
        r["vs_best_reference"] = r[f"ndcg@{K}"] / best if best > 0 else float("nan")
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
    summary = {
        "data": args.data,
        "input": str(path),
        "sha256": fingerprint,
        "lines": len(frame),
        "cut_users": int(cut.sum()),
        "listable_cut_users": listable,
        "evaluated_users": len(held),
        "cold_cut_items": int((held["i"] < 0).sum()),
        "train_seconds": round(seconds, 1),
        "champion": champion,
        "commands": [f"python benchmarks/served_topn.py --data {args.data}", *map(" ".join, commands)],
        "rows": rows,
        "served_known_items": int(lists.merge(rest[["user_id", "item_id"]]).shape[0]),  # must be 0
        "retrieval_leaderboard": [
            {k: m[k] for k in ("name", "val_ndcg_at_10", "test_ndcg_at_10", "blend") if k in m}
            for m in report["retrieval"].get("models", [])
        ],
    }
    print(table(summary))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"served-topn-{args.data}.json").write_text(json.dumps(summary, indent=2, default=str))


def served_settings(report: dict[str, Any]) -> str:
    """The champion's members and blend weights, or 'defaults'."""
    champion = report["retrieval"]["champion"]
    row = next((m for m in report["retrieval"].get("models", []) if m["name"] == champion), {})
    members = row.get("members") or []
    return ", ".join(f"{m['name']} {m.get('weight', 1):.2f}" for m in members) or "defaults"


def table(s: dict[str, Any]) -> str:
    lines = [
        f"data {s['data']} (sha256 {s['sha256'][:16]}…, {s['lines']:,} lines): each user's latest line cut "
        f"({s['cut_users']:,} users; {s['evaluated_users']:,} of the {s['listable_cut_users']:,} listable "
        f"measured, {s['cold_cut_items']} of their items unseen in the rest); `musicrec train` "
        f"{s['train_seconds']} s, retrieval champion {s['champion']}",
        "",
        "| method | settings (references: chosen on the inner hold-out) | NDCG@10 | recall@10 | vs best of "
        "EASE/ALS/transitions |",
        "|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        settings = (
            r["settings"]
            if isinstance(r["settings"], str)
            else (", ".join(f"{k} {v}" for k, v in r["settings"].items()) or "-")
        )
        lines.append(
            f"| {r['method']} | {settings} | {r[f'ndcg@{K}']:.4f} | {r[f'recall@{K}']:.4f} | "
            f"{r['vs_best_reference']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
