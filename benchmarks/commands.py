"""The user-facing commands end to end, as a user runs them: `musicrec train`, then `musicrec score` on 1M
pairs and on 100K users, each a fresh process that starts its own temporary Prefect server.

    .venv/bin/python benchmarks/commands.py [--scale seed] [--store file:///…] [--repeat 3] [--trains 2]

--scale picks the sample (benchmarks/out/<scale>, or /tmp/seed/data for seed when it is there; generated when
missing). --store reuses a store that already has a champion and skips `musicrec train`. --trains 2 trains
twice on the same store: the first run searches the models with no tuning record (learnt settings by
default), the second is the nightly rerun that reuses those records. Per command: wall
seconds and peak RSS of the command's process tree (a wrapper process reports RUSAGE_CHILDREN), and the
command's own numbers: the training report's stage_seconds, the scoring manifest's stage seconds and pairs or
users per second. Pairs: 90% known ids drawn uniformly from the bundle's users and items, 10% unknown ids;
users: known users. Writes benchmarks/out/commands/commands_<scale>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_models import code_state, ensure_sample, machine

SEED_SAMPLE = Path("/tmp/seed/data")
# A fresh interpreter runs the command; its last stderr line is its children's peak RSS (KB on Linux).
WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print('@@RSS@@', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def run_command(args: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run `musicrec <args>` in a wrapper, in the log's folder (its .musicrec/work lands there, not in the
    checkout); return wall seconds, peak RSS and stdout."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(ROOT / ".venv" / "bin" / "musicrec"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=log.parent,
        check=False,
    )
    seconds = time.perf_counter() - t0
    log.write_text(f"$ musicrec {' '.join(args)}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        raise SystemExit(f"musicrec {args[0]} failed (exit {proc.returncode}); see {log}")
    rss = next((ln.split()[1] for ln in reversed(proc.stderr.splitlines()) if ln.startswith("@@RSS@@")), "0")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(int(rss) / 1024), "stdout": proc.stdout}


def score_manifest(stdout: str) -> dict[str, Any]:
    """The job's _manifest.json, from the `manifest: <uri>` line `musicrec score` prints (file:// stores)."""
    uri = next(ln.split(" ", 1)[1] for ln in stdout.splitlines() if ln.startswith("manifest: "))
    return json.loads(Path(uri.removeprefix("file://")).read_text())


def write_inputs(store_uri: str, work: Path, pairs: int, users: int) -> tuple[Path, Path]:
    """pairs.parquet (90% known, 10% unknown ids) and users.parquet (known users) from the champion bundle."""
    import numpy as np
    import pandas as pd

    from musicrec.scoring.bundle import download_bundle, resolve_version
    from musicrec.store import open_store

    store = open_store(store_uri)
    served = resolve_version(store)
    bundle = work / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    download_bundle(store, served.version, bundle, served.sha256, served.history)
    known_users = pd.read_parquet(bundle / "user_history.parquet", columns=["user_id"])["user_id"].unique()
    known_items = pd.read_parquet(bundle / "item_stats.parquet", columns=["item_id"])["item_id"].to_numpy()
    rng = np.random.default_rng(0)

    def draw(known: np.ndarray, prefix: str) -> np.ndarray:
        ids = rng.choice(np.asarray(known, dtype=object), pairs)
        unknown = np.flatnonzero(rng.random(pairs) < 0.1)
        ids[unknown] = [f"{prefix}-{k}" for k in range(len(unknown))]
        return ids

    pairs_path, users_path = work / "pairs.parquet", work / "users.parquet"
    pd.DataFrame(
        {"user_id": draw(known_users, "NEW-USER"), "item_id": draw(known_items, "NEW-ITEM")}
    ).to_parquet(pairs_path, index=False)
    chosen = rng.choice(np.asarray(known_users, dtype=object), min(users, len(known_users)), replace=False)
    pd.DataFrame({"user_id": chosen}).to_parquet(users_path, index=False)
    return pairs_path, users_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="seed", choices=["small", "medium", "seed"])
    p.add_argument("--store", default="", help="a store with a champion: skip `musicrec train`")
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3, help="runs of each scoring command")
    p.add_argument(
        "--trains", type=int, default=1, help="`musicrec train` runs on the same store (2: first + nightly)"
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "commands"))
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"commands-{a.scale}-", dir=out))
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "MUSICREC_PROGRESS": "lines",
    }
    env.pop("PREFECT_API_URL", None)
    result: dict[str, Any] = {"scale": a.scale, "machine": machine(), "code": code_state(), "runs": []}

    store = a.store
    if not store:
        sample = (
            SEED_SAMPLE
            if a.scale == "seed" and (SEED_SAMPLE / "card.json").exists()
            else ensure_sample(ROOT / "benchmarks" / "out", a.scale, 0)[0]
        )
        store = (work / "store").as_uri()
        for k in range(a.trains):
            report_path = work / f"report_{k}.json"
            got = run_command(
                [
                    "train",
                    "--reviews",
                    str(sample / "reviews.json.gz"),
                    "--meta",
                    str(sample / "meta.json.gz"),
                    "--store",
                    store,
                    "--report",
                    str(report_path),
                ],
                env,
                work / f"train_{k}.log",
            )
            report = json.loads(report_path.read_text())
            champion = next(m for m in report["models"] if m["name"] == report["champion"]["name"])
            searched = (report.get("search") or {}).get("models") or {}
            result["runs"].append(
                {
                    "command": "musicrec train" + (" (nightly rerun)" if k else ""),
                    "seconds": got["seconds"],
                    "peak_rss_mb": got["peak_rss_mb"],
                    "stage_seconds": report.get("stage_seconds"),
                    "ratings": report["data"]["ratings"],
                    "champion": champion["name"],
                    "test_rmse": round(champion["test_rmse"], 4),
                    "searched": sorted(searched),
                }
            )
    pairs, users = write_inputs(store, work, a.pairs, a.users)
    for job, arg, path in (("pairs", "--pairs", pairs), ("users", "--users", users)):
        for k in range(a.repeat):
            got = run_command(["score", "--store", store, arg, str(path)], env, work / f"score_{job}_{k}.log")
            m = score_manifest(got["stdout"])
            rate = "pairs_per_second" if job == "pairs" else "users_per_second"
            result["runs"].append(
                {
                    "command": f"musicrec score {arg}",
                    "seconds": got["seconds"],
                    "peak_rss_mb": got["peak_rss_mb"],
                    "stage_seconds": m["seconds"],
                    "rows": m["rows"],
                    "chunks": m["chunks"],
                    rate: m[rate],
                    "unknown_users": m.get("unknown_users"),
                    "unknown_items": m.get("unknown_items"),
                }
            )
    result["machine_after"] = machine()
    path = out / f"commands_{a.scale}.json"
    path.write_text(json.dumps(result, indent=2))
    print(markdown(result) + f"\n\nraw: {path}; logs: {work}")


def markdown(res: dict[str, Any]) -> str:
    m, m2 = res["machine"], res.get("machine_after", {})
    lines = [
        f"{res['scale']}: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}, "
        f"{m['date']}, "
        f"load {m['loadavg'][0]} -> {m2.get('loadavg', ['?'])[0]}; code {res['code']['head']} "
        f"(sources {res['code']['sha256']}, changed vs HEAD: {res['code']['changed_vs_head'] or 'none'})",
        "",
        "| command | wall s | peak RSS MB | stage s | throughput | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in res["runs"]:
        if r["command"].startswith("musicrec train"):
            stages = ", ".join(f"{k} {v:.0f} s" for k, v in (r["stage_seconds"] or {}).items())
            lines.append(
                f"| {r['command']} | {r['seconds']:.1f} | {r['peak_rss_mb']:,} | - | "
                f"{r['ratings']:,} ratings | "
                f"{stages}; champion {r['champion']} test RMSE {r['test_rmse']}; "
                f"searched: {', '.join(r.get('searched') or []) or 'none'} |"
            )
        else:
            rate = (
                f"{r['pairs_per_second']:,} pairs/s"
                if "pairs_per_second" in r
                else f"{r['users_per_second']:,} users/s"
            )
            lines.append(
                f"| {r['command']} | {r['seconds']:.1f} | {r['peak_rss_mb']:,} | {r['stage_seconds']:.2f} | "
                f"{rate} | {r['rows']:,} rows in {r['chunks']} chunks; unknown users {r['unknown_users']:,}"
                + (f", items {r['unknown_items']:,} |" if r.get("unknown_items") is not None else " |")
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
