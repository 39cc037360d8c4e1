"""Every leaderboard number of two checkouts, side by side: `musicrec train` on the small and medium generated
samples and the real Musical Instruments ratings (with their metadata), each checkout's code run from its own
folder, then every rating and retrieval row compared value by value (timings left out), the champions and the
bundles' ONNX parity.

A restructuring that claims "behaviour unchanged" shows it with this:

    git worktree add --detach /tmp/before <old-commit>
    .venv/bin/python benchmarks/leaderboard_parity.py --before /tmp/before --after . --out /tmp/parity

Exit status 0 when every compared value is equal (within --tolerance), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_musical_instruments_5core"
SKIP = ("seconds", "per_second", "uri", "version", "run_id", "created")


def inputs(data: Path, name: str) -> list[str]:
    if name == "mi":
        return [
            "--reviews",
            str(SHARED / "ratings_Musical_Instruments_5.csv.gz"),
            "--meta",
            str(SHARED / "meta_Musical_Instruments_5core.json.gz"),
        ]
    return ["--reviews", str(data / name / "reviews.json.gz"), "--meta", str(data / name / "meta.json.gz")]


def train(code: Path, out: Path, data: Path, name: str) -> dict[str, Any]:
    """One `musicrec train` with `code`'s package first on the path, in a fresh store; its report."""
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(out / "prefect_home"),
        "MUSICREC_WORK_DIR": str(out / f"work_{name}"),
    }
    report = out / f"report_{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "musicrec",
        "train",
        *inputs(data, name),
        "--store",
        str(out / f"store_{name}"),
        "--report",
        str(report),
    ]
    with open(out / f"log_{name}.txt", "w") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=out)
    return json.loads(report.read_text())


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {f"rating/{m['name']}": m for m in report["models"] + report["baselines"]}
    ranking = report.get("retrieval") or {}
    out |= {f"retrieval/{m['name']}": m for m in ranking.get("models", []) + ranking.get("baselines", [])}
    return out


def differences(a: dict[str, Any], b: dict[str, Any], tolerance: float) -> tuple[int, list[str]]:
    """(values compared, the ones that differ) of two reports' rows, champions and ONNX parity."""
    ra, rb, found, n = rows(a), rows(b), [], 0
    if set(ra) != set(rb):
        found.append(f"rows differ: {sorted(set(ra) ^ set(rb))}")
    for key in sorted(set(ra) & set(rb)):
        for field, x in ra[key].items():
            if any(s in field for s in SKIP) or field not in rb[key]:
                continue
            y, n = rb[key][field], n + 1
            if isinstance(x, float) and isinstance(y, float):
                if not (abs(x - y) <= tolerance or (math.isnan(x) and math.isnan(y))):
                    found.append(f"{key} {field}: {x} != {y}")
            elif isinstance(x, int | str) and x != y:
                found.append(f"{key} {field}: {x} != {y}")
    if a["champion"]["name"] != b["champion"]["name"]:
        found.append(f"rating champion {a['champion']['name']} != {b['champion']['name']}")
    if (a.get("retrieval") or {}).get("champion") != (b.get("retrieval") or {}).get("champion"):
        found.append("retrieval champions differ")
    return n, found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="checkout of the old code")
    p.add_argument("--after", type=Path, required=True, help="checkout of the new code")
    p.add_argument("--out", type=Path, required=True, help="folder for samples, stores, logs and reports")
    p.add_argument("--sets", default="small,medium,mi")
    p.add_argument("--tolerance", type=float, default=1e-9)
    args = p.parse_args()
    data = args.out / "data"
    for scale in ("small", "medium"):
        if not (data / scale / "reviews.json.gz").exists():
            subprocess.run(
                [sys.executable, "-m", "musicrec", "sample-data", str(data / scale), "--scale", scale],
                env={**os.environ, "PYTHONPATH": str(args.after.resolve())},
                check=True,
            )
    bad = 0
    for name in args.sets.split(","):
        reports = []
        for side, code in (("before", args.before), ("after", args.after)):
            folder = args.out / side
            folder.mkdir(parents=True, exist_ok=True)
            reports.append(train(code.resolve(), folder, data, name))
        n, found = differences(*reports, args.tolerance)
        onnx = [r["champion"].get("onnx_check", {}).get("max_abs_diff") for r in reports]
        print(
            f"{name}: {n} values compared, {len(found)} differ; champions "
            f"{reports[1]['champion']['name']} / {(reports[1].get('retrieval') or {}).get('champion')}; "
            f"ONNX parity before {onnx[0]}, after {onnx[1]}"
        )
        for line in found:
            print("  " + line)
        bad += len(found)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
