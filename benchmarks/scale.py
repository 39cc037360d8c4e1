"""How the pipeline's cost grows with the data: every stage at small, medium and seed size, and past it.

    .venv/bin/python benchmarks/scale.py [--scales small,medium,seed,seed2x,seed4x] [--out benchmarks/out/scale]

seed2x and seed4x are the seed's user, item and rating counts times 2 and 4 (musicrec.data.world.SCALES): the
same ratings per user and per item, so the curves show growth in size, not a change of shape.

Per scale, each stage runs in a FRESH SUBPROCESS, so its peak RSS (VmHWM of that process image) is its own:
generate (timed only when the sample is not reused), ingest (read + validate), prepare (split + Word2Vec),
each of the six rating models with threads=1 (train_models.py's child) + the baselines, each of the three
implicit models (fit with validation NDCG@10 each epoch, then test) + the ranking baselines (--retrieval-models
picks which), bundle (ONNX export + verify of
the best model by validation RMSE), publish (publish_bundle + promote into a file store), score pairs (1M random
pairs of known and unknown ids through the bundle with onnxruntime) and rank (top-10 for 100K users, or all).
Samples live in benchmarks/out/<scale> (shared with the other scripts; a seed sample at /tmp/seed/data with the
same generator version is linked instead of regenerated). Writes <out>/scale_<scale>.json, <out>/scale.md and
benchmarks/scale.png (time against ratings per stage, log-log), and prints one table per scale.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_models import code_state, ensure_sample, machine, peak_rss_mb, run_child, run_ingest, run_prepare

SAMPLES = ROOT / "benchmarks" / "out"
SEED_SAMPLE = Path("/tmp/seed/data")
MARK = "@@STAGE@@"
FLOW = [
    "ingest",
    "prepare",
    "train",
    "retrieval",
    "bundle",
    "publish",
    "score_pairs",
    "rank",
]  # generate goes first if timed


# ---------------------------------------------------------------- children (one stage per fresh process)


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def stage_generate(ctx: dict[str, Any]) -> dict[str, Any]:
    _, card, seconds = ensure_sample(Path(ctx["samples"]), ctx["scale"], 0)
    return {"seconds": seconds, "ratings": card["ratings"]}


def stage_ingest(ctx: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    from musicrec.pipeline.ingest import fingerprint
    from musicrec.pipeline.workspace import Workspace

    ws = Workspace(Path(ctx["workspace"]))
    out = run_ingest(ws, Path(ctx["sample"]))
    # build_bundle needs the fingerprint, which run_ingest drops: recompute it (outside the timed part)
    out["fingerprint"] = fingerprint(pd.read_parquet(ws.ratings))
    ws.write_json("scale/ingest.json", out)
    return {"seconds": out["total_seconds"], **out}


def stage_prepare(ctx: dict[str, Any]) -> dict[str, Any]:
    from musicrec.pipeline.workspace import Workspace

    ws = Workspace(Path(ctx["workspace"]))
    out = run_prepare(ws, 0)
    ws.write_json("scale/prepare.json", out)
    return {"seconds": out["total_seconds"], **out}


def stage_bundle(ctx: dict[str, Any]) -> dict[str, Any]:
    from musicrec.pipeline.prepare import load_train_data
    from musicrec.pipeline.publish import build_bundle
    from musicrec.pipeline.workspace import Workspace

    ws = Workspace(Path(ctx["workspace"]))
    row = ws.read_json(f"models/{ctx['champion']}/metrics.json")
    ing, prep = ws.read_json("scale/ingest.json"), ws.read_json("scale/prepare.json")
    retrieval = best_retrieval(ws)
    t0 = time.perf_counter()
    data = load_train_data(ws)
    t1 = time.perf_counter()
    meta = build_bundle(
        ws,
        row,
        data,
        {"fingerprint": ing["fingerprint"], "ratings": ing["ratings"], "split": prep["split"]},
        retrieval_row=retrieval,
    )
    ws.write_json("scale/bundle.json", {"version": meta["version"], "test_rmse": row["test_rmse"]})
    return {
        "seconds": time.perf_counter() - t1,
        "load_seconds": round(t1 - t0, 2),
        "version": meta["version"],
        "onnx_check": meta["onnx_check"],
        "onnx_mb": round((ws.bundle / "model.onnx").stat().st_size / 2**20, 1),
        "retrieval": retrieval["name"] if retrieval else None,
    }


def best_retrieval(ws: Any) -> dict[str, Any] | None:
    """The trained implicit model with the best validation NDCG@10, whether or not it beats most-popular: the
    bundle and rank stages measure the cost of retrieve-then-rank, which the flow pays whenever it has a
    retrieval champion (its choice also requires beating most-popular, which is about quality, not cost)."""
    from musicrec.registry import names as _names

    IMPLICIT_MODELS = _names("retrieval")

    rows = [
        ws.read_json(f"models/{m}/metrics.json")
        for m in IMPLICIT_MODELS
        if (ws.root / "models" / m / "metrics.json").exists()
    ]
    return max(rows, key=lambda r: r["val_ndcg_at_10"]) if rows else None


def stage_publish(ctx: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    from musicrec.pipeline.publish import CHALLENGER_TEST, promote, publish_bundle
    from musicrec.pipeline.workspace import Workspace
    from musicrec.store import open_store

    ws = Workspace(Path(ctx["workspace"]))
    b = ws.read_json("scale/bundle.json")
    store = open_store(ctx["store"])
    t0 = time.perf_counter()
    published = publish_bundle(store, ws, b["version"])
    t1 = time.perf_counter()
    challenger = pd.read_parquet(
        ws.root / CHALLENGER_TEST
    )  # build_bundle wrote the champion's test predictions
    decision = promote(store, published, challenger, beats_own_baseline=True)
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "publish_seconds": round(t1 - t0, 2),
        "promote_seconds": round(t2 - t1, 2),
        "promoted": decision["promoted"],
    }


def _open_bundle(ctx: dict[str, Any], tmp: Path, threads: int) -> tuple[Any, float]:
    from musicrec.scoring.bundle import download_bundle, load_bundle, resolve_version
    from musicrec.store import open_store

    t0 = time.perf_counter()
    store = open_store(ctx["store"])
    version, sha = resolve_version(store)
    download_bundle(store, version, tmp, sha)
    return load_bundle(tmp, threads=threads), time.perf_counter() - t0


def stage_score_pairs(ctx: dict[str, Any]) -> dict[str, Any]:
    """1M pairs, 90% known ids (uniform over the bundle's users / items) and 10% unknown, per thread count."""
    import numpy as np
    import pandas as pd

    from musicrec.scoring.bundle import load_bundle
    from musicrec.scoring.rank import score_pairs

    n = ctx["pairs"]
    with tempfile.TemporaryDirectory() as tmp:
        bundle, open_s = _open_bundle(ctx, Path(tmp), 1)
        rng = np.random.default_rng(0)

        def draw(known: pd.Index, prefix: str) -> np.ndarray:
            ids = rng.choice(np.asarray(known, dtype=object), n)
            unknown = rng.random(n) < 0.1
            ids[unknown] = [f"{prefix}-{k}" for k in range(int(unknown.sum()))]
            return ids

        pairs = pd.DataFrame(
            {"user_id": draw(bundle.users, "UNKNOWN-USER"), "item_id": draw(bundle.items, "UNKNOWN-ITEM")}
        )
        runs = {}
        for threads in ctx["score_threads"]:
            bundle = load_bundle(Path(tmp), threads=threads)
            score_pairs(bundle, pairs.head(65536))  # warm-up
            t0 = time.perf_counter()
            out = score_pairs(bundle, pairs)
            s = time.perf_counter() - t0
            runs[threads] = {
                "seconds": round(s, 3),
                "pairs_per_second": round(n / s),
                "unknown_user_share": round(float(out["unknown_user"].mean()), 3),
            }
    first = runs[ctx["score_threads"][0]]
    return {
        "seconds": first["seconds"],
        "pairs": n,
        "open_bundle_seconds": round(open_s, 2),
        "pairs_per_second": first["pairs_per_second"],
        "by_threads": runs,
    }


def stage_rank(ctx: dict[str, Any]) -> dict[str, Any]:
    from musicrec.scoring.candidates import build_candidate_index
    from musicrec.scoring.rank import rank_users

    with tempfile.TemporaryDirectory() as tmp:
        bundle, open_s = _open_bundle(ctx, Path(tmp), 1)
        t0 = time.perf_counter()
        index = build_candidate_index(bundle)
        t1 = time.perf_counter()
        users = list(index.history)[: ctx["rank_users"]]
        out = rank_users(bundle, index, users, 10)
        t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "open_bundle_seconds": round(open_s, 2),
        "build_index_seconds": round(t1 - t0, 2),
        "rank_seconds": round(t2 - t1, 2),
        "users": len(users),
        "rows": len(out),
        "users_per_second": round(len(users) / max(t2 - t1, 1e-9)),
        "retrieval": index.retriever is not None,
    }


STAGES = {
    "generate": stage_generate,
    "ingest": stage_ingest,
    "prepare": stage_prepare,
    "bundle": stage_bundle,
    "publish": stage_publish,
    "score_pairs": stage_score_pairs,
    "rank": stage_rank,
}


def child(stage: str, ctx_json: str) -> None:
    out = STAGES[stage](json.loads(ctx_json))
    out.update(peak_rss_mb=round(peak_rss_mb(), 1), load_after=round(os.getloadavg()[0], 2))
    print(MARK + json.dumps(out, default=float), flush=True)


def run_stage(stage: str, ctx: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one stage in a fresh interpreter; wall seconds include the interpreter's start and imports."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", stage, "--ctx", json.dumps(ctx)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {
            "stage": stage,
            "error": f"timeout after {timeout:.0f} s",
            "process_seconds": timeout,
            "load_before": load,
        }
    wall = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        return {
            "stage": stage,
            "error": f"rc {proc.returncode}: {proc.stderr[-2000:]}",
            "process_seconds": round(wall, 2),
            "load_before": load,
        }
    return {
        "stage": stage,
        **json.loads(line[len(MARK) :]),
        "process_seconds": round(wall, 2),
        "load_before": load,
    }


# ---------------------------------------------------------------- parent


def link_seed_sample(samples: Path) -> bool:
    """Link /tmp/seed/data into samples/seed when its generator version is the library's; True if linked."""
    from musicrec.data.generate import GENERATOR_VERSION

    dest = samples / "seed"
    card = SEED_SAMPLE / "card.json"
    if (dest / "card.json").exists() or not card.exists():
        return False
    if _load_json(card).get("generator_version") != GENERATOR_VERSION:
        return False
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("reviews.json.gz", "meta.json.gz", "card.json"):  # card last: ensure_sample keys on it
        (dest / name).symlink_to(SEED_SAMPLE / name)
    return True


def run_scale(scale: str, out: Path, a: argparse.Namespace) -> dict[str, Any]:
    from musicrec.registry import choose_champion
    from musicrec.registry import names as _names

    IMPLICIT_MODELS = _names("retrieval")
    from musicrec.registry import names

    MODELS = names("rating")

    res: dict[str, Any] = {"scale": scale, "machine": machine(), "code_start": code_state(), "stages": []}
    root = out / scale
    shutil.rmtree(root, ignore_errors=True)  # fresh workspace and store: publish never meets an older bundle
    ws_root = root / "work" / "bench"
    (ws_root).mkdir(parents=True)
    ctx = {
        "scale": scale,
        "samples": str(SAMPLES),
        "sample": str(SAMPLES / scale),
        "workspace": str(ws_root),
        "store": (root / "store").resolve().as_uri(),
        "pairs": a.pairs,
        "rank_users": a.rank_users,
        "score_threads": [int(t) for t in a.score_threads.split(",")],
    }
    linked = scale == "seed" and link_seed_sample(SAMPLES)
    reused = linked or (SAMPLES / scale / "card.json").exists()
    res["sample"] = {
        "path": str(SAMPLES / scale),
        "reused": reused,
        "linked_from": str(SEED_SAMPLE) if linked else None,
    }

    def record(row: dict[str, Any]) -> dict[str, Any]:
        res["stages"].append(row)
        err = f" ERROR {row['error'][:300]}" if "error" in row else ""
        secs = "-" if row.get("seconds") is None else round(row["seconds"], 2)
        print(
            f"[{scale}] {row['stage']}: {secs} s, peak {row.get('peak_rss_mb', '-')} MB, "
            f"process {row['process_seconds']} s (load {row['load_before']}){err}",
            flush=True,
        )
        if err and row["stage"] in ("ingest", "prepare"):
            raise RuntimeError(f"{scale}: {row['stage']} failed")
        return row

    if not reused:
        record(run_stage("generate", ctx, a.timeout))
    res["card"] = _load_json(SAMPLES / scale / "card.json")
    res["ratings"] = record(run_stage("ingest", ctx, a.timeout))["ratings"]
    record(run_stage("prepare", ctx, a.timeout))
    models = []
    picked = {"all": list(IMPLICIT_MODELS), "none": []}.get(a.retrieval_models, a.retrieval_models.split(","))
    unknown = set(picked) - set(IMPLICIT_MODELS)
    if unknown:
        raise SystemExit(
            f"--retrieval-models: unknown {sorted(unknown)}; use some of {', '.join(IMPLICIT_MODELS)}"
        )
    retrieval = [*picked, "ranking_baselines"] if picked else []
    for name in [*MODELS, "baselines", *retrieval]:
        kind = "retrieval" if name in retrieval else "train"
        load = round(os.getloadavg()[0], 2)
        t0 = time.perf_counter()
        try:
            r = run_child(ws_root, name)
        except RuntimeError as e:
            record(
                {
                    "stage": f"{kind}:{name}",
                    "error": str(e)[-1000:],
                    "process_seconds": 0,
                    "load_before": load,
                }
            )
            continue
        row = {
            "stage": f"{kind}:{name}",
            "seconds": round(r["load_seconds"] + r["wall_seconds"], 2),
            "load_seconds": r["load_seconds"],
            "peak_rss_mb": r["peak_rss_mb"],
            "load_after": r["loadavg_after"],
            "process_seconds": round(time.perf_counter() - t0, 2),
            "load_before": load,
        }
        if name in ("baselines", "ranking_baselines"):
            row["result"] = r["result"]
        elif kind == "retrieval":
            row.update(
                {
                    k: r["result"][k]
                    for k in ("fit_seconds", "epochs", "best_epoch", "val_ndcg_at_10", "test_ndcg_at_10")
                },
                n_train=r["result"]["n_train"],
            )
        else:
            res["n_train"] = r["result"]["n_train"]
            row.update(
                {
                    k: r["result"][k]
                    for k in ("fit_seconds", "epochs", "ratings_per_second", "val_rmse", "test_rmse")
                }
            )
            models.append(r["result"])
        record(row)
    base = next((r for r in res["stages"] if r["stage"] == "train:baselines" and "result" in r), None)
    bias = next(b for b in base["result"] if b["name"] == "bias") if models and base else None
    res["champion"] = choose_champion(models, "rating", bias["val_rmse"]) if bias else None
    ctx["champion"] = res["champion"] or min(models, key=lambda m: m["val_rmse"])["name"]
    for stage in ("bundle", "publish", "score_pairs", "rank"):
        record(run_stage(stage, ctx, a.timeout))
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["code_end"] = code_state()
    return res


def rerun_stages(scale: str, out: Path, stages: list[str], a: argparse.Namespace) -> dict[str, Any]:
    """Run again some stages after training (bundle, publish, score_pairs, rank) of an earlier run of this scale,
    on its workspace and store, replacing their rows (e.g. after a stage failed)."""
    res = _load_json(out / f"scale_{scale}.json")
    root = out / scale
    # published versions are immutable and the bench workspace always publishes "bench-<model>": a rerun of
    # publish goes to a fresh store (the scoring stages then read that one)
    store = root / (f"store-rerun-{time.strftime('%Y%m%dT%H%M%S')}" if "publish" in stages else "store")
    ctx = {
        "scale": scale,
        "workspace": str(root / "work" / "bench"),
        "store": store.resolve().as_uri(),
        "pairs": a.pairs,
        "rank_users": a.rank_users,
        "score_threads": [int(t) for t in a.score_threads.split(",")],
        "champion": res["champion"],
    }
    for stage in stages:
        row = {**run_stage(stage, ctx, a.timeout), "rerun": machine()["date"]}
        res["stages"] = [row if r["stage"] == stage else r for r in res["stages"]]
        print(
            f"[{scale}] {stage} (rerun): {row.get('seconds', '-')} s, peak {row.get('peak_rss_mb', '-')} MB "
            f"(load {row['load_before']}) {row.get('error', '')[:2000]}",
            flush=True,
        )
    res["code_rerun"] = code_state()
    return res


def totals(res: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Seconds and peak RSS per pipeline stage, the six models and the baselines summed into `train`."""
    agg: dict[str, dict[str, float]] = {}
    for r in res["stages"]:
        key = r["stage"].split(":")[0]  # train:<model> -> train, retrieval:<model> -> retrieval
        if r.get("seconds") is None:
            continue
        a = agg.setdefault(key, {"seconds": 0.0, "peak_rss_mb": 0.0, "process_seconds": 0.0})
        a["seconds"] += r["seconds"]
        a["process_seconds"] += r["process_seconds"]
        a["peak_rss_mb"] = max(a["peak_rss_mb"], r.get("peak_rss_mb", 0.0))
    return agg


def dominant(res: dict[str, Any], flow_only: bool = False) -> tuple[str, float, float]:
    """(stage, its seconds, share of the timed stages' seconds), generate excluded; flow_only: ingest..publish."""
    skip = ("generate", "score_pairs", "rank") if flow_only else ("generate",)
    agg = {k: v for k, v in totals(res).items() if k not in skip}
    stage = max(agg, key=lambda k: agg[k]["seconds"])
    return stage, agg[stage]["seconds"], agg[stage]["seconds"] / sum(v["seconds"] for v in agg.values())


def _rate(r: dict[str, Any], ratings: int) -> str:
    if "error" in r:
        return "-"
    if r["stage"].startswith("retrieval:"):
        return (
            f"{round(r['n_train'] * r['epochs'] / max(r['fit_seconds'], 1e-9)):,} (model)"
            if "n_train" in r
            else "-"
        )
    if r["stage"].startswith("train:"):
        return f"{r['ratings_per_second']:,} (model)" if "ratings_per_second" in r else "-"
    if r["stage"] == "score_pairs":
        return f"{r['pairs_per_second']:,} pairs/s"
    if r["stage"] == "rank":
        return f"{r['users_per_second']:,} users/s"
    return f"{round(ratings / max(r['seconds'], 1e-9)):,}"


def _note(r: dict[str, Any]) -> str:
    s = r["stage"]
    if "error" in r:
        return "**" + r["error"].splitlines()[0][:120] + "**"
    if s == "ingest":
        return f"read {r['read_seconds']} s + validate {r['validate_seconds']} s"
    if s == "prepare":
        return f"split {r['split_seconds']} s + Word2Vec {r['word2vec_seconds']} s"
    if s.startswith("retrieval:") and "fit_seconds" in r:
        return (
            f"fit {r['fit_seconds']} s (validation included), {r['epochs']} epochs (best {r['best_epoch']}), "
            f"split+index load {r['load_seconds']} s, val NDCG@10 {r['val_ndcg_at_10']:.4f}, "
            f"test {r['test_ndcg_at_10']:.4f}"
        )
    if s.startswith("train:") and "fit_seconds" in r:
        return f"fit {r['fit_seconds']} s, {r['epochs']} epochs, TrainData load {r['load_seconds']} s, val {r['val_rmse']:.4f}"
    if s == "bundle":
        return (
            f"TrainData load {r['load_seconds']} s (not in s); ONNX {r['onnx_mb']} MB; retrieval "
            f"{r.get('retrieval') or 'none'}"
        )
    if s == "publish":
        return f"upload+check {r['publish_seconds']} s, promote {r['promote_seconds']} s"
    if s == "score_pairs":
        by = ", ".join(
            f"{t} thr {v['seconds']} s = {v['pairs_per_second']:,}/s" for t, v in r["by_threads"].items()
        )
        return f"{r['pairs']:,} pairs: {by}; bundle download+load {r['open_bundle_seconds']} s (not in s)"
    if s == "rank":
        return (
            f"{r['users']:,} users{' (retrieve-then-rank)' if r.get('retrieval') else ''}: "
            f"build_index {r['build_index_seconds']} s + rank {r['rank_seconds']} s; "
            f"bundle download+load {r['open_bundle_seconds']} s (not in s)"
        )
    return ""


def markdown(res: dict[str, Any]) -> str:
    m, c = res["machine"], res["card"]
    stage, sec, share = dominant(res)
    lines = [
        (
            f"### scale `{res['scale']}`: {res['ratings']:,} ratings after de-dup ({c['ratings']:,} review lines, "
            f"{c['users']:,} users, {c['items']:,} items), {res.get('n_train', 0):,} train rows"
        ),
        "",
        f"Machine: {m['nproc']} CPUs, {m['memory_gb']} GB, {m['cpu']}, Python {m['python']}; {m['date']}; "
        f"load average at start {m['loadavg']}, at end {res['loadavg_end']}. Sample "
        + (
            "reused"
            + (f" (linked from {res['sample']['linked_from']})" if res["sample"]["linked_from"] else "")
            if res["sample"]["reused"]
            else "generated"
        )
        + ".",
        "",
        "| stage | s | process s | peak RSS MB | ratings/s | detail | load before/after |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in res["stages"]:
        lines.append(
            f"| {r['stage']}{' (rerun)' if 'rerun' in r else ''} | {r.get('seconds', '-') if r.get('seconds') is None else round(r['seconds'], 2)} "
            f"| {r['process_seconds']} | {r.get('peak_rss_mb', '-')} | {_rate(r, res['ratings'])} | "
            f"{_note(r)} | {r['load_before']} / {r.get('load_after', '-')} |"
        )
    agg = totals(res)
    flow = sum(v["seconds"] for k, v in agg.items() if k not in ("generate", "score_pairs", "rank"))
    cs, ce = res["code_start"], res["code_end"]
    lines += [
        "",
        "Per stage (train = six rating models + baselines, retrieval = three implicit models + ranking baselines): "
        + ", ".join(f"{k} {v['seconds']:.1f} s / {v['peak_rss_mb']:.0f} MB" for k, v in agg.items())
        + ".",
        (
            f"Training flow stages (ingest..publish) sum to {flow:.1f} s; peak RSS of any stage "
            f"{max(v['peak_rss_mb'] for v in agg.values()):.0f} MB."
        ),
        (
            f"**Dominant stage: {stage}** ({sec:.1f} s, {share:.0%} of the timed stages, generate excluded); "
            "in the training flow alone: {} ({:.1f} s, {:.0%}). ".format(*dominant(res, flow_only=True))
            + f"Champion by val RMSE: {res['champion']}."
        ),
        f"Code: HEAD {cs['head']}, sources sha256 {cs['sha256']} at start, {ce['sha256']} at end"
        + (" (**changed during the run**)" if cs["sha256"] != ce["sha256"] else "")
        + f"; files differing from HEAD: {', '.join(cs['changed_vs_head']) or 'none'}."
        + (
            f" Rows marked rerun were run again at HEAD {res['code_rerun']['head']} (sources {res['code_rerun']['sha256']})."
            if "code_rerun" in res
            else ""
        ),
    ]
    return "\n".join(lines) + "\n"


def growth(results: list[dict[str, Any]]) -> str:
    """One row per stage: seconds and peak RSS at each scale, and the log-log slope of seconds against ratings
    between consecutive scales (1 = linear, 2 = quadratic); implicit models and the rating models apart."""
    import itertools
    import math

    results = sorted(results, key=lambda r: r["ratings"])
    names = [
        *FLOW[:2],
        *sorted({s["stage"] for r in results for s in r["stages"] if ":" in s["stage"]}),
        *FLOW[2:],
    ]
    head = " | ".join(f"{r['scale']} ({r['ratings']:,})" for r in results)
    lines = [f"| stage | {head} | slope |", "|---|" + "---:|" * len(results) + "---|"]
    for name in names:
        rows = [
            next((s for s in r["stages"] if s["stage"] == name), None) if ":" in name else totals(r).get(name)
            for r in results
        ]
        if all(x is None for x in rows):
            continue
        cells = [
            f"{x['seconds']:.1f} s / {x['peak_rss_mb']:,.0f} MB" if x and x.get("seconds") else "-"
            for x in rows
        ]
        pts = [(r["ratings"], x["seconds"]) for r, x in zip(results, rows, strict=False) if x and x.get("seconds")]
        slopes = [math.log(b[1] / a[1]) / math.log(b[0] / a[0]) for a, b in itertools.pairwise(pts)]
        lines.append(f"| {name} | {' | '.join(cells)} | {', '.join(f'{v:.2f}' for v in slopes) or '-'} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted(results, key=lambda r: r["ratings"])
    x = [r["ratings"] for r in results]
    fig, ax = plt.subplots(figsize=(9, 6))
    names = ["generate", *FLOW]
    for name in names:
        ys = [totals(r).get(name, {}).get("seconds") for r in results]
        if name == "retrieval":  # the sum only where all three implicit models ran (--retrieval-models)
            ys = [
                y if sum(s["stage"].startswith("retrieval:implicit") for s in r["stages"]) == 3 else None
                for r, y in zip(results, ys, strict=False)
            ]
        pts = [(xi, y) for xi, y in zip(x, ys, strict=False) if y]
        if pts:
            ax.plot(
                *zip(*pts, strict=False),
                marker="o",
                linewidth=2.5 if name == "train" else 1.5,
                label={
                    "train": "train (6 rating models + baselines)",
                    "retrieval": "retrieval (3 implicit models + baselines)",
                }.get(name, name),
            )
    models = sorted(
        {
            r["stage"]
            for res in results
            for r in res["stages"]
            if r["stage"].startswith(("train:", "retrieval:"))
        }
    )
    for name in models:
        pts = [
            (res["ratings"], r["seconds"])
            for res in results
            for r in res["stages"]
            if r["stage"] == name and r.get("seconds")
        ]
        if pts:
            ax.plot(*zip(*sorted(pts), strict=False), linestyle=":", linewidth=1, marker=".", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ratings in the dataset (after de-dup)")
    ax.set_ylabel("seconds (in-process work, fresh process per stage)")
    m = results[-1]["machine"]
    ax.set_title(f"musicrec stage time vs data size ({m['nproc']} CPUs, {m['memory_gb']} GB, shared machine)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", default="small,medium,seed")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "scale"))
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--rank-users", type=int, default=100_000)
    p.add_argument(
        "--score-threads", default="1,2", help="onnxruntime threads for the pair scoring; first = row"
    )
    p.add_argument(
        "--retrieval-models",
        default="all",
        help="implicit models to time (comma-separated), all, or none (then no ranking baselines)",
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds per stage process")
    p.add_argument(
        "--only", default="", help="rerun these post-training stages of an earlier run of each scale"
    )
    p.add_argument(
        "--report-only", action="store_true", help="only re-render scale.md and the plot from the JSON"
    )
    p.add_argument("--plot", default=str(ROOT / "benchmarks" / "scale.png"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--ctx", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(a.child, a.ctx)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for scale in [] if a.report_only else a.scales.split(","):
        res = rerun_stages(scale, out, a.only.split(","), a) if a.only else run_scale(scale, out, a)
        (out / f"scale_{scale}.json").write_text(json.dumps(res, indent=2, default=float))
        (out / f"scale_{scale}.md").write_text(markdown(res))
        print(markdown(res), flush=True)
    done = [_load_json(f) for f in sorted(out.glob("scale_*.json"))]  # earlier runs of other scales too
    (out / "scale.md").write_text(
        "### Growth per stage\n\n"
        + growth(done)
        + "\n"
        + "\n".join(markdown(r) for r in sorted(done, key=lambda r: r["ratings"]))
    )
    print(growth(done), flush=True)
    plot(done, Path(a.plot))
    for r in sorted(done, key=lambda r: r["ratings"]):
        stage, sec, share = dominant(r)
        print(
            f"{r['scale']}: {r['ratings']:,} ratings, dominant stage {stage} ({sec:.1f} s, {share:.0%}); training "
            "flow: {} ({:.1f} s, {:.0%})".format(*dominant(r, flow_only=True))
        )


if __name__ == "__main__":
    main()
