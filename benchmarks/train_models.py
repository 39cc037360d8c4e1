"""Benchmark the library pipeline without Prefect: ingest -> prepare -> each model in a fresh subprocess.

    python benchmarks/train_models.py [--scale medium] [--models all] [--out benchmarks/out] [--seed 0]

Per model: epochs run, best epoch, fit seconds, ratings/s, peak RSS of its own process (ru_maxrss), RMSEs.
Writes <out>/train_models_<scale>.json and .md, and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    """Peak resident set size of this process image, MiB: VmHWM. ru_maxrss survives fork + exec on Linux, so a
    child started from a 1 GB parent would report the parent's peak; VmHWM belongs to the new image only."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def code_state() -> dict[str, Any]:
    """sha256 over the library, tasks and flows sources, plus the files that differ from git HEAD: others edit
    the working tree while benchmarks run, so results compare only at the same code state."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for d in ("musicrec", "tasks", "flows") for p in (ROOT / d).rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        diff = subprocess.run(
            ["git", "status", "--porcelain", "--", "musicrec", "tasks", "flows"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        changed = sorted(ln[3:] for ln in diff.stdout.splitlines())
        commit = head.stdout.strip()
    except OSError:
        commit, changed = "", []
    return {"sha256": h.hexdigest()[:12], "head": commit, "changed_vs_head": changed}


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model, load average: numbers mean little without them."""
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")),
        "0",
    )
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(int(mem) / 1024**2, 1),
        "cpu": cpu,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def ensure_sample(out: Path, scale: str, seed: int) -> tuple[Path, dict[str, Any], float | None]:
    """Generate the sample once; reuse it when card.json is already there."""
    from musicrec.data.generate import generate_sample

    d = out / scale
    if (d / "card.json").exists() and (d / "meta.json.gz").exists():
        return d, json.loads((d / "card.json").read_text()), None
    t0 = time.perf_counter()
    card = generate_sample(d, scale, seed)
    return d, card, time.perf_counter() - t0


def run_ingest(ws: Any, sample: Path) -> dict[str, Any]:
    """Ingest with its two halves timed separately (wrapping the functions ingest looks up at call time)."""
    from musicrec.pipeline import ingest as ingest_mod

    spent: dict[str, float] = {"read": 0.0, "validate": 0.0}

    def timed(key: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - t0

        return wrapper

    orig = ingest_mod.load_dataset, ingest_mod.validate_table
    ingest_mod.load_dataset, ingest_mod.validate_table = timed("read", orig[0]), timed("validate", orig[1])
    try:
        t0 = time.perf_counter()
        out = ingest_mod.ingest(ws, [sample / "reviews.json.gz"], [sample / "meta.json.gz"])
        total = time.perf_counter() - t0
    finally:
        ingest_mod.load_dataset, ingest_mod.validate_table = orig
    return {
        "ratings": out["ratings"],
        "users": out["users"],
        "items": out["items"],
        "read_seconds": round(spent["read"], 2),
        "validate_seconds": round(spent["validate"], 2),
        "total_seconds": round(total, 2),
    }


def run_prepare(ws: Any, seed: int) -> dict[str, Any]:
    from musicrec.pipeline.prepare import prepare

    t0 = time.perf_counter()
    out = prepare(ws, seed)
    return {
        "split_seconds": out["split_seconds"],
        "word2vec_seconds": out["word2vec"]["seconds"],
        "total_seconds": round(time.perf_counter() - t0, 2),
        "split": out["split"],
        "word2vec_vocabulary": out["word2vec"]["vocabulary"],
    }


def child(ws_root: str, name: str) -> None:
    """One measurement in this (fresh) process; prints one JSON line on stdout."""
    from musicrec.registry import names

    IMPLICIT_MODELS = names("retrieval")
    from musicrec.pipeline import retrieval
    from musicrec.pipeline.prepare import load_train_data
    from musicrec.pipeline.train import evaluate_baselines, train_one
    from musicrec.pipeline.workspace import Workspace

    ws = Workspace(Path(ws_root))
    rss_start = peak_rss_mb()
    t0 = time.perf_counter()
    ranking = name in IMPLICIT_MODELS or name == "ranking_baselines"  # these read the ratings, not TrainData
    # ranking_data is cached per process: loading it here times it apart from the fit that reuses it
    data = retrieval.ranking_data(ws) if ranking else load_train_data(ws)
    load_s, rss_data = time.perf_counter() - t0, peak_rss_mb()
    t1 = time.perf_counter()
    if name == "ranking_baselines":
        result: Any = retrieval.ranking_baselines(ws)
    elif name in IMPLICIT_MODELS:
        result = retrieval.train_implicit(ws, name, {}, threads=1)
        result["n_train"] = len(data.train[0])
    elif name == "baselines":
        result = evaluate_baselines(ws, data)
    else:
        result = train_one(ws, name, threads=1, data=data)
        result["n_train"] = len(data.parts["train"])
    out = {
        "name": name,
        "result": result,
        "load_seconds": round(load_s, 2),
        "wall_seconds": round(time.perf_counter() - t1, 2),
        "rss_after_imports_mb": round(rss_start, 1),
        "rss_after_data_mb": round(rss_data, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "loadavg_after": round(os.getloadavg()[0], 2),
    }
    print("@@RESULT@@" + json.dumps(out, default=float))


def run_child(ws_root: Path, name: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--workspace", str(ws_root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{name} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("@@RESULT@@") :])


def fmt(x: Any, nd: int = 4) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def markdown(res: dict[str, Any]) -> str:
    m, ing, prep = res["machine"], res["ingest"], res["prepare"]
    lines = [
        (
            f"### train_models: scale `{res['scale']}` ({ing['ratings']:,} ratings after de-dup, "
            f"{ing['users']:,} users, {ing['items']:,} items; {res['n_train']:,} train rows)"
        ),
        "",
        (
            f"Machine: {m['nproc']} CPUs, {m['memory_gb']} GB, {m['cpu']}, Python {m['python']}; "
            f"{m['date']}; load average at start {m['loadavg']}, at end {res['loadavg_end']}."
        ),
        "",
        (
            f"Ingest {ing['total_seconds']} s (read {ing['read_seconds']} s + "
            f"validate {ing['validate_seconds']} s); "
            f"prepare {prep['total_seconds']} s (split {prep['split_seconds']} s, Word2Vec "
            f"{prep['word2vec_seconds']} s); loading TrainData in each model process {res['load_seconds']} s."
        ),
        "",
        (
            "| model | epochs | best | fit s | ratings/s | peak RSS MB | train RMSE | val RMSE | test RMSE "
            "| test cold-user | test cold-item | load avg |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["models"]:
        lines.append(
            f"| {r['name']} | {r['epochs']} | {r['best_epoch']} | {r['fit_seconds']} | "
            f"{r['ratings_per_second']:,} | {r['peak_rss_mb']} | {fmt(r['train_rmse'])} | "
            f"{fmt(r['val_rmse'])} | {fmt(r['test_rmse'])} | {fmt(r['test_cold_user_rmse'])} | "
            f"{fmt(r['test_cold_item_rmse'])} | {r['loadavg']} |"
        )
    for b in res["baselines"]:
        lines.append(
            f"| *{b['name']}* | - | - | - | - | {res['baselines_peak_rss_mb']} | {fmt(b['train_rmse'])} | "
            f"{fmt(b['val_rmse'])} | {fmt(b['test_rmse'])} | {fmt(b['test_cold_user_rmse'])} | "
            f"{fmt(b['test_cold_item_rmse'])} | |"
        )
    c, cs, ce = res["champion"], res["code_start"], res["code_end"]
    lines += [
        "",
        f"Code: HEAD {cs['head']}, sources sha256 {cs['sha256']} at start, {ce['sha256']} at end"
        + (" (**changed during the run: not comparable**)" if cs["sha256"] != ce["sha256"] else "")
        + f"; files differing from HEAD: {', '.join(cs['changed_vs_head']) or 'none'}.",
    ]
    lines += [
        "",
        (
            f"Cold rows in test: {res['cold_rows']}. noise_rmse (card.json, ideal predictor) = "
            f"{fmt(res['noise_rmse'])}. Champion by val RMSE: **{c['name']}**, "
            f"test RMSE {fmt(c['test_rmse'])}, gap to noise floor {fmt(c['gap_to_noise'])}; "
            f"bias baseline test RMSE {fmt(c['bias_test_rmse'])} "
            f"(gap {fmt(c['bias_gap_to_noise'])})."
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from musicrec.registry import choose_champion, names

    MODELS = names("rating")
    from musicrec.pipeline.workspace import Workspace

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="medium")
    p.add_argument("--models", default="all", help="comma-separated model names, or all")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--workspace", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(a.workspace, a.child)
    names = list(MODELS) if a.models == "all" else [m.strip() for m in a.models.split(",")]
    out = Path(a.out)
    res: dict[str, Any] = {"scale": a.scale, "machine": machine(), "code_start": code_state()}
    sample, card, gen_s = ensure_sample(out, a.scale, a.seed)
    res["generate_seconds"] = None if gen_s is None else round(gen_s, 1)
    ws = Workspace.create(out / a.scale / "work", "bench")
    res["ingest"] = run_ingest(ws, sample)
    print(f"ingest: {res['ingest']}  (load {os.getloadavg()[0]:.2f})", flush=True)
    res["prepare"] = run_prepare(ws, a.seed)
    print(
        f"prepare: split {res['prepare']['split_seconds']} s, "
        f"word2vec {res['prepare']['word2vec_seconds']} s "
        f"(load {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    res["models"] = []
    for name in names:
        r = run_child(ws.root, name)
        row = {
            **r["result"],
            "peak_rss_mb": r["peak_rss_mb"],
            "rss_after_data_mb": r["rss_after_data_mb"],
            "loadavg": r["loadavg_after"],
        }
        res["models"].append(row)
        res["n_train"], res["load_seconds"] = row["n_train"], r["load_seconds"]
        print(
            f"{name}: {row['epochs']} epochs (best {row['best_epoch']}) {row['fit_seconds']} s, "
            f"val {row['val_rmse']:.4f} test {row['test_rmse']:.4f}, peak RSS {r['peak_rss_mb']} MB "
            f"(load {r['loadavg_after']})",
            flush=True,
        )
    b = run_child(ws.root, "baselines")
    res["baselines"], res["baselines_peak_rss_mb"] = b["result"], b["peak_rss_mb"]
    bias = next(x for x in res["baselines"] if x["name"] == "bias")
    res["noise_rmse"] = card.get("noise_rmse")
    champ = choose_champion(res["models"], "rating", bias["val_rmse"])
    crow = next((r for r in res["models"] if r["name"] == champ), None)
    res["champion"] = {
        "name": champ,
        "test_rmse": crow and crow["test_rmse"],
        "gap_to_noise": crow and res["noise_rmse"] and crow["test_rmse"] - res["noise_rmse"],
        "bias_test_rmse": bias["test_rmse"],
        "bias_gap_to_noise": res["noise_rmse"] and bias["test_rmse"] - res["noise_rmse"],
    }
    first = res["models"][0] if res["models"] else bias
    res["cold_rows"] = {k: first.get(f"test_{k}_rows") for k in ("cold_user", "cold_item", "warm")}
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["code_end"] = code_state()
    res.setdefault("n_train", 0)
    res.setdefault("load_seconds", None)
    (out / f"train_models_{a.scale}.json").write_text(json.dumps(res, indent=2, default=float))
    md = markdown(res)
    (out / f"train_models_{a.scale}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
