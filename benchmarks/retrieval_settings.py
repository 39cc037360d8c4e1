"""Retrieval models at chosen settings on one prepared split: validation and test NDCG@10, fit seconds.

    python benchmarks/retrieval_settings.py --data lastfm 'als:{}' 'als:{"regularization": 10}'
    python benchmarks/retrieval_settings.py --workspace <a run's workspace folder> 'sasrec:{}'

--data prepares one seeded split of a development set through musicrec's own stages (rating_models.prepared:
small, medium, mi-ratings, cm100k, lastfm); --workspace reads a finished run's folder instead (for example a
`musicrec train` run at the seed's size, under its work folder), copied to a temporary folder first so its
models are left alone. Each argument is <kind>:<settings as JSON>; each fit runs on --threads threads.
Chooses nothing: what the defaults should be is read from the table, set by hand, and recorded in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def workspace(args: argparse.Namespace, tmp: Path):
    from musicrec.pipeline.workspace import Workspace

    if args.data:
        from rating_models import prepared

        return prepared(args.data, tmp, args.seed)[0]
    ws = Workspace.create(tmp, "copy")
    for p in Path(args.workspace).iterdir():
        if p.name != "models":
            (shutil.copytree if p.is_dir() else shutil.copy)(p, ws.root / p.name)
    return ws


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", choices=["small", "medium", "mi-ratings", "cm100k", "lastfm"])
    source.add_argument("--workspace", help="a finished run's workspace folder")
    p.add_argument("--seed", type=int, default=0, help="the split's seed (--data)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("fits", nargs="+", help="<kind>:<settings as JSON>, e.g. 'als:{\"factors\": 128}'")
    args = p.parse_args()
    fits = []
    for spec in args.fits:
        kind, _, settings = spec.partition(":")
        fits.append((kind, json.loads(settings or "{}")))

    from musicrec.pipeline.retrieval import train_implicit

    with tempfile.TemporaryDirectory() as tmp:
        ws = workspace(args, Path(tmp))
        print("| kind | settings | val NDCG@10 | test NDCG@10 | best epoch | seconds |")
        print("|---|---|---|---|---|---|")
        for kind, settings in fits:
            t0 = time.perf_counter()
            row = train_implicit(ws, kind, settings, threads=args.threads)
            seconds = time.perf_counter() - t0
            if "val_ndcg_at_10" not in row:
                print(f"| {kind} | {json.dumps(settings)} | {row.get('skipped', 'no result')} | | | |")
                continue
            val, test = row["val_ndcg_at_10"], row["test_ndcg_at_10"]
            print(
                f"| {kind} | {json.dumps(settings)} | {val:.4f} | {test:.4f} | {row.get('best_epoch')} "
                f"| {seconds:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
