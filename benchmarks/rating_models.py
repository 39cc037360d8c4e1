"""The six rating models beside the bias baseline and scikit-surprise on the same split, in one process.

    python benchmarks/rating_models.py --data small|medium|mi-ratings|mi-reviews [--seed 0] \
        [--out benchmarks/out]

Each data set goes through musicrec's own stages (ingest with validation, split, Word2Vec), then every model
trains at its defaults; Surprise's BaselineOnly and SVD (defaults, and n_factors 100 / reg 0.05) fit the same
training split. Prints a markdown table: val/test RMSE, best epoch, gain over the bias baseline on validation.
Needs the benchmark extra: pip install scikit-surprise==1.1.5.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MI = Path("/work/shared/data/amazon_musical_instruments_5core")
if not MI.exists():
    MI = ROOT.parent / "shared" / "data" / "amazon_musical_instruments_5core"


SHARED = MI.parent
LASTFM, CM100K = SHARED / "hetrec2011_lastfm_2k", SHARED / "cm100k"
# the flags beyond --reviews / --meta a data set needs (Last.fm's tags become its artists' text)
EXTRA_FLAGS = {
    "lastfm": ["--tags", str(LASTFM / "user_taggedartists.dat"), "--tag-names", str(LASTFM / "tags.dat")],
}


def inputs(name: str, tmp: Path) -> tuple[list[str], list[str]]:
    if name in ("small", "medium", "seed"):
        from musicrec.data.generate import generate_sample

        generate_sample(tmp / name, scale=name, seed=0)
        return [str(tmp / name / "reviews.json.gz")], [str(tmp / name / "meta.json.gz")]
    if name == "lastfm":
        return [str(LASTFM / "user_artists.dat")], [str(LASTFM / "artists.dat")]
    if name == "cm100k":
        return [str(CM100K / "ratings.txt")], [str(CM100K / "items.txt")]
    meta = [str(MI / "meta_Musical_Instruments_5core.json.gz")]
    if name == "mi-ratings":
        return [str(MI / "ratings_Musical_Instruments_5.csv.gz")], meta
    return [str(MI / "reviews_Musical_Instruments_5.partial.json.gz")], meta


def prepared(name: str, tmp: Path, seed: int):
    """(workspace, ingest summary, indexed data) of a data set through musicrec's own stages."""
    from musicrec.pipeline import ingest, prepare
    from musicrec.pipeline.workspace import Workspace

    reviews, meta = inputs(name, tmp)
    ws = Workspace.create(tmp / "work", "bench")
    run = ingest.ingest(ws, reviews, meta)
    prepare.prepare(ws, seed)
    return ws, run, prepare.load_train_data(ws)


def default_algorithms() -> list[tuple[str, object]]:
    from surprise import SVD, BaselineOnly

    return [
        ("surprise BaselineOnly", BaselineOnly(verbose=False)),
        ("surprise SVD (defaults)", SVD(random_state=0)),
        ("surprise SVD (100 f, reg 0.05)", SVD(n_factors=100, reg_all=0.05, random_state=0)),
    ]


def surprise_rows(data_split, algorithms: list[tuple[str, object]] | None = None) -> list[dict]:
    """Fit each Surprise algorithm on the split's training part; RMSE on validation and test."""
    from surprise import Dataset, Reader

    train = data_split.train
    scale = (float(train["rating"].min()), float(train["rating"].max()))
    trainset = Dataset.load_from_df(
        train[["user_id", "item_id", "rating"]], Reader(rating_scale=scale)
    ).build_full_trainset()
    rows = []
    for label, algo in algorithms or default_algorithms():
        t0 = time.perf_counter()
        algo.fit(trainset)
        row = {"name": label, "fit_seconds": round(time.perf_counter() - t0, 2)}
        for part, key in ((data_split.validation, "val_rmse"), (data_split.test, "test_rmse")):
            pred = np.array(
                [algo.predict(u, i).est for u, i in zip(part["user_id"], part["item_id"], strict=False)]
            )
            row[key] = float(np.sqrt(np.mean((pred - part["rating"].to_numpy()) ** 2)))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    args = ap.parse_args()
    from musicrec.data.split import read_splits
    from musicrec.registry import names

    MODELS = names("rating")
    from musicrec.pipeline import train

    with tempfile.TemporaryDirectory() as tmp:
        ws, run, data = prepared(args.data, Path(tmp), args.seed)
        rows = [train.train_one(ws, m, {"seed": args.seed}, data=data) for m in MODELS]
        base = {b["name"]: b for b in train.evaluate_baselines(ws, data)}
        rows += [base["bias"], base["global_mean"], *surprise_rows(read_splits(ws.splits))]
    bias = base["bias"]["val_rmse"]
    lines = [
        f"data {args.data}: {run['ratings']:,} ratings, {run['users']:,} users, {run['items']:,} items, "
        f"fingerprint {run['fingerprint'][:19]}, seed {args.seed}",
        "",
        "| model | val RMSE | test RMSE | best epoch | val gain vs bias | fit s |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["val_rmse"]):
        gain = (bias - r["val_rmse"]) / bias * 100
        lines.append(
            f"| {r['name']} | {r['val_rmse']:.4f} | {r['test_rmse']:.4f} | {r.get('best_epoch', '–')} | "
            f"{gain:+.2f}% | {r.get('fit_seconds', 0):.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rating_models_{args.data}.md").write_text(text + "\n")
    (out / f"rating_models_{args.data}.json").write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
