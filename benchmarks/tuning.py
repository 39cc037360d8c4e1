"""Default vs tuned musicrec models beside scikit-surprise on the same split, in one process.

    python benchmarks/tuning.py --data medium|mi-ratings|mi-reviews|small|seed [--trials 30] [--models all]
                                [--budget SECONDS per model] [--parallel 2]

The data goes through musicrec's stages (ingest with validation, split, Word2Vec). Each model's search is the
tuning flow's (musicrec.tuning.search.run_search: TPE seeded, median pruning, trial 0 = the default), its
trials run `--parallel` at a time in threads, one torch thread each, as the flow's threads runner runs them.
Then the default and the best configuration are fitted once more to get test RMSE (the search never sees test).
Surprise: BaselineOnly, SVD, SVD++ and KNNBaseline (item-based, pearson_baseline) on the same training split.
Writes benchmarks/out/tuning_<data>.{md,json}. Needs the benchmark extra (pip install -e ".[bench]").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from rating_models import prepared, surprise_rows

KNN_MAX_ITEMS = 20_000  # item-based KNN holds an n_items^2 float64 similarity matrix (57.7K items: 27 GB)


def surprise_algorithms(n_items: int) -> list[tuple[str, object]]:
    from surprise import SVD, BaselineOnly, KNNBaseline, SVDpp

    algos = [
        ("surprise BaselineOnly", BaselineOnly(verbose=False)),
        ("surprise SVD", SVD(random_state=0)),
        ("surprise SVD++", SVDpp(random_state=0, cache_ratings=True)),
    ]
    if n_items <= KNN_MAX_ITEMS:
        algos.append(
            (
                "surprise KNNBaseline",
                KNNBaseline(sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False),
            )
        )
    else:
        print(
            f"surprise KNNBaseline skipped: {n_items:,} items need a {n_items**2 * 8 / 1e9:.0f} GB "
            "similarity matrix",
            flush=True,
        )
    return algos


def search(ws, data, model: str, trials: int, budget: float, parallel: int, seed: int) -> tuple[list, float]:
    from musicrec.tuning.search import run_search
    from musicrec.tuning.trial import run_trial

    pool = ThreadPoolExecutor(parallel)
    t0 = time.perf_counter()
    outcomes = run_search(
        ws.root / "tuning" / f"{model}.journal",
        model,
        trials=trials,
        parallel=parallel,
        budget_seconds=budget,
        seed=seed,
        run_batch=lambda specs: list(pool.map(lambda s: run_trial(ws, s, 1, seed, data), specs)),
        on_trial=lambda o: print(
            f"  {model} trial {o['number']}: {o['state']} "
            f"{o['value']:.4f} ({o['epochs']} ep, {o['seconds']:.1f}s)",
            flush=True,
        ),
    )
    pool.shutdown()
    return outcomes, time.perf_counter() - t0


def fitted_row(ws, data, model: str, params: dict, label: str, seed: int, threads: int) -> dict:
    from musicrec.pipeline import train

    row = train.train_one(ws, model, {**params, "seed": seed}, threads=threads, data=data)
    return {**row, "name": f"{model} ({label})"}


def moved(default: dict, best: dict) -> str:
    """Which searched parameters moved most from the default (ratio for numbers)."""
    out = []
    for k, v in best.items():
        d = json.loads(default[k]) if isinstance(default.get(k), str) else default.get(k)
        if isinstance(v, int | float) and isinstance(d, int | float) and d and v:
            ratio = max(v / d, d / v)
            if ratio > 1.5:
                out.append((ratio, f"{k} {d:g}->{v:.3g}"))
        elif v != d:
            out.append((10.0, f"{k} {d}->{v}"))
    return ", ".join(t for _, t in sorted(out, reverse=True)[:3]) or "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="medium")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--models", default="all")
    ap.add_argument("--budget", type=float, default=1800.0, help="seconds per model's search")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-surprise", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    args = ap.parse_args()
    from musicrec.data.split import read_splits
    from musicrec.registry import names

    MODELS = names("rating")
    from musicrec.pipeline import train
    from musicrec.tuning.search import default_params

    models = list(MODELS) if args.models == "all" else args.models.split(",")
    threads = os.cpu_count() or 1
    rows, tuned = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        ws, run, data = prepared(args.data, Path(tmp), args.seed)
        for model in models:
            outcomes, secs = search(ws, data, model, args.trials, args.budget, args.parallel, args.seed)
            done = [o for o in outcomes if o["state"] == "complete"]
            best = min(done, key=lambda o: o["value"])
            tuned[model] = {
                "seconds": round(secs, 1),
                "trials": len(outcomes),
                "pruned": sum(o["state"] == "pruned" for o in outcomes),
                "best_trial": best["number"],
                "best_params": best["params"],
                "moved": moved(default_params(model), best["params"]),
            }
            rows.append(fitted_row(ws, data, model, {}, "default", args.seed, threads))
            rows.append(fitted_row(ws, data, model, best["params"], "tuned", args.seed, threads))
            print(
                f"{model}: {len(outcomes)} trials in {secs:.0f}s; best trial {best['number']} "
                f"val {best['value']:.4f}; moved {tuned[model]['moved']}",
                flush=True,
            )
        base = {b["name"]: b for b in train.evaluate_baselines(ws, data)}
        rows.append(base["bias"])
        if not args.no_surprise:
            Path(args.out).mkdir(parents=True, exist_ok=True)  # the searches' results, before Surprise runs
            (Path(args.out) / f"tuning_{args.data}_searches.json").write_text(
                json.dumps(tuned, indent=2, default=str)
            )
            rows += surprise_rows(read_splits(ws.splits), surprise_algorithms(run["items"]))
    write(args, run, rows, tuned, models)


def write(args, run: dict, rows: list[dict], tuned: dict, models: list[str]) -> None:
    load = os.getloadavg()[0]
    lines = [
        f"data {args.data}: {run['ratings']:,} ratings, {run['users']:,} users, {run['items']:,} items, "
        f"fingerprint {run['fingerprint'][:19]}, seed {args.seed}, {args.trials} trials per model, "
        f"{args.parallel} at a time, load average {load:.1f}",
        "",
        "| model | val RMSE | test RMSE | best epoch | fit s |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["val_rmse"]):
        lines.append(
            f"| {r['name']} | {r['val_rmse']:.4f} | {r['test_rmse']:.4f} | {r.get('best_epoch', '–')} | "
            f"{r.get('fit_seconds', 0):.1f} |"
        )
    lines += [
        "",
        "| model | search s | trials (pruned) | default val | tuned val | moved most |",
        "|---|---|---|---|---|---|",
    ]
    by = {r["name"]: r for r in rows}
    for m in models:
        t, d, b = tuned[m], by[f"{m} (default)"], by[f"{m} (tuned)"]
        lines.append(
            f"| {m} | {t['seconds']:.0f} | {t['trials']} ({t['pruned']}) | {d['val_rmse']:.4f} | "
            f"{b['val_rmse']:.4f} | {t['moved']} |"
        )
    surprise = [r for r in rows if r["name"].startswith("surprise")]
    champ = min((r for r in rows if r["name"].endswith("(tuned)")), key=lambda r: r["val_rmse"])
    total = sum(t["seconds"] for t in tuned.values())
    lines += [
        "",
        f"total search time {total:.0f} s; tuned champion (by validation): {champ['name']}, "
        f"test {champ['test_rmse']:.4f}",
    ]
    if surprise:
        ref = min(surprise, key=lambda r: r["test_rmse"])
        lines.append(
            f"best Surprise on test: {ref['name']} {ref['test_rmse']:.4f}; "
            f"ratio {champ['test_rmse'] / ref['test_rmse']:.4f}"
        )
    worse = [m for m in models if by[f"{m} (tuned)"]["val_rmse"] > by[f"{m} (default)"]["val_rmse"] + 1e-6]
    lines.append(
        "every tuned model <= its default on validation"
        if not worse
        else f"tuned worse than default: {worse}"
    )
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tuning_{args.data}.md").write_text(text + "\n")
    (out / f"tuning_{args.data}.json").write_text(
        json.dumps({"rows": rows, "tuned": tuned}, indent=2, default=str)
    )


if __name__ == "__main__":
    main()
