"""Benchmark the `training` flow once per task runner (threads, processes, dask) to choose the default.

    python benchmarks/runners.py [--scale medium] [--runners threads,processes,dask] [--out benchmarks/out]

Each runner runs in a fresh Python process with its own temporary PREFECT_HOME (ephemeral API server),
work dir and file:// store. A trivial warm-up flow starts the server first, so "flow s" is the training
flow alone. "train-models s" is the wall clock of the parallel subflow (runner start-up included), measured
by wrapping flows.training.train_models; it is compared with the sum and max of the report's fit_seconds.
Writes <out>/runners_<scale>.json and .md, and prints the markdown.
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

PREFECT_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


class TimedSubflow:
    """Stands in for flows.training.train_models: same with_options(), but records the wall clock of the call."""

    def __init__(self, flow: Any, record: dict[str, float]) -> None:
        self.flow, self.record = flow, record

    def with_options(self, **kw: Any) -> Any:
        inner = self.flow.with_options(**kw)

        def call(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.record["train_models_seconds"] = time.perf_counter() - t0

        return call


def child(runner: str, sample: str, tmp: str) -> None:
    """Run the flow once with one runner; print one JSON line."""
    t0 = time.perf_counter()
    from prefect import flow

    import flows.training as ft

    @flow(name="warm-up")
    def warm_up() -> int:
        return 1

    imports = time.perf_counter() - t0
    t1 = time.perf_counter()
    warm_up()
    server = time.perf_counter() - t1
    record: dict[str, float] = {}
    ft.train_models = TimedSubflow(ft.train_models, record)  # the flow body looks the name up at call time
    params = ft.TrainingParams(
        reviews=[f"{sample}/reviews.json.gz"],
        meta=[f"{sample}/meta.json.gz"],
        store_uri=Path(tmp, "store").as_uri(),
        work_dir=str(Path(tmp, "work")),
        task_runner=runner,
    )
    load0 = os.getloadavg()[0]
    t2 = time.perf_counter()
    report = ft.training(params)
    flow_s = time.perf_counter() - t2
    fits = {m["name"]: m["fit_seconds"] for m in report["models"]}
    print(
        "@@RESULT@@"
        + json.dumps(
            {
                "runner": runner,
                "threads": params.threads,
                "imports_seconds": round(imports, 1),
                "server_start_seconds": round(server, 1),
                "flow_seconds": round(flow_s, 1),
                "train_models_seconds": round(record.get("train_models_seconds", float("nan")), 1),
                "fit_seconds": fits,
                "fit_sum": round(sum(fits.values()), 1),
                "fit_max": round(max(fits.values()), 1),
                "epochs": {m["name"]: m["epochs"] for m in report["models"]},
                "val_rmse": {m["name"]: round(m["val_rmse"], 4) for m in report["models"]},
                "champion": report["champion"].get("name"),
                "loadavg_before": round(load0, 2),
                "loadavg_after": round(os.getloadavg()[0], 2),
            }
        )
    )


def run_child(runner: str, sample: Path, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{runner}-") as tmp:
        env = {
            **os.environ,
            **PREFECT_ENV,
            "PREFECT_HOME": str(Path(tmp, "prefect_home")),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("PREFECT_API_URL", None)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", runner, "--sample", str(sample), "--tmp", tmp],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=timeout,
            check=False,
        )
        wall = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
    if proc.returncode != 0 or line is None:
        return {
            "runner": runner,
            "error": f"rc {proc.returncode}: {proc.stderr[-2000:]}",
            "process_seconds": wall,
        }
    return {**json.loads(line[len("@@RESULT@@") :]), "process_seconds": round(wall, 1)}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"### runners: `training` flow, scale `{res['scale']}`, all six models, default hyperparameters",
        "",
        (
            f"Machine: {m['nproc']} CPUs, {m['memory_gb']} GB, {m['cpu']}; {m['date']}; load average at start "
            f"{m['loadavg']}, at end {res['loadavg_end']}. TrainingParams.threads = {m['nproc']} (default)."
        ),
        "",
        (
            "| runner | parallel tasks | flow s | train-models subflow s | sum fit s | max fit s "
            "| sum fit / subflow | server start s | process s | champion (val RMSE) | load avg before/after | code |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in res["runs"]:
        if "error" in r:
            lines.append(f"| {r['runner']} | failed: {r['error'][:200].replace(chr(10), ' ')} |||||||||")
            continue
        ratio = r["fit_sum"] / r["train_models_seconds"] if r["train_models_seconds"] else float("nan")
        lines.append(
            f"| {r['runner']} | {r['parallel']} | {r['flow_seconds']} | {r['train_models_seconds']} | "
            f"{r['fit_sum']} | {r['fit_max']} | {ratio:.2f} | {r['server_start_seconds']} | "
            f"{r['process_seconds']} | {r['champion']} ({r['val_rmse'].get(r['champion'] or '', '-')}) | "
            f"{r['loadavg_before']} / {r['loadavg_after']} | {r['code']} |"
        )
    lines += [
        "",
        "Per-model fit seconds (epochs): "
        + "; ".join(
            f"{r['runner']}: " + ", ".join(f"{k} {v} ({r['epochs'][k]})" for k, v in r["fit_seconds"].items())
            for r in res["runs"]
            if "error" not in r
        ),
    ]
    lines += [
        "",
        "code: sha256 of musicrec/, tasks/, flows/ sources before -> after each run ('!' = edited during "
        "the run). Files differing from git HEAD: " + ", ".join(res.get("changed_vs_head", [])) + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from train_models import code_state, ensure_sample, machine

    from tasks.runners import make_task_runner

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="medium")
    p.add_argument("--runners", default="threads,processes,dask")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1200)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--sample", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child, a.sample, a.tmp)
    out = Path(a.out)
    sample, _, _ = ensure_sample(out, a.scale, a.seed)
    res: dict[str, Any] = {"scale": a.scale, "machine": machine(), "runs": []}
    for runner in a.runners.split(","):
        before = code_state()
        r = run_child(runner, sample.resolve(), a.timeout)
        after = code_state()
        r["code"] = (
            before["sha256"]
            if before["sha256"] == after["sha256"]
            else f"{before['sha256']}->{after['sha256']}!"
        )
        res["changed_vs_head"] = after["changed_vs_head"]
        if "error" not in r:
            r["parallel"] = make_task_runner(runner, "", r["threads"], 6)[1]
        res["runs"].append(r)
        print(json.dumps(r), flush=True)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    (out / f"runners_{a.scale}.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (out / f"runners_{a.scale}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
