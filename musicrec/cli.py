"""`musicrec` command line: sample-data, train, score. Errors print one clear message (traceback only with --debug)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from musicrec.errors import MusicrecError

MODEL_NAMES = ["gmf", "gmf_regression", "gmf_logistic", "nnmf", "mlp", "w2v_mlp"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musicrec", description="Music recommendations from Amazon reviews.")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample-data", help="generate a dataset in the Amazon 2018 format")
    s.add_argument("out_dir")
    s.add_argument("--scale", choices=["small", "medium", "seed"], default="small")
    s.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="run the training flow (Prefect; ephemeral server if none is configured)")
    t.add_argument("--reviews", action="append", required=True, help="review file; repeat for several")
    t.add_argument("--meta", action="append", default=[], help="metadata file; repeat for several")
    t.add_argument("--store", default="", help="s3://bucket/prefix or file:///path (default ./.musicrec/store)")
    t.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated subset of " + ",".join(MODEL_NAMES))
    t.add_argument("--task-runner", choices=["threads", "processes", "dask"], default="threads")
    t.add_argument("--dask-address", default="")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--overrides", default="{}", help='JSON, e.g. \'{"gmf": {"epochs": 5}}\'')
    t.add_argument("--report", help="copy report.json here")
    c = sub.add_parser("score", help="run the batch scoring flow with the published champion (or --version)")
    c.add_argument("--store", default="", help="s3://bucket/prefix or file:///path (default ./.musicrec/store)")
    c.add_argument("--version", default="", help="published model version (default: the champion pointer)")
    job = c.add_mutually_exclusive_group(required=True)
    job.add_argument("--pairs", help="CSV/Parquet with user_id,item_id")
    job.add_argument("--users", help="CSV/Parquet with user_id: top-N lists")
    job.add_argument("--all-users", action="store_true", help="top-N lists for every known user")
    c.add_argument("--top-n", type=int, default=10)
    c.add_argument("--out", default="", help="output URI (default <store>/scores/<run id>/<job>)")
    e = sub.add_parser("evaluate", help="ranking quality (HR@10, NDCG@10, coverage) of a run's test users")
    e.add_argument("--run", required=True, help="training run id (its splits are read from runs/<run id>/)")
    e.add_argument("--store", default="", help="s3://bucket/prefix or file:///path (default ./.musicrec/store)")
    e.add_argument("--version", default="", help="published model version (default: the run's own bundle)")
    return p


def _sample_data(args: argparse.Namespace) -> int:
    from musicrec.data.generate import generate_sample

    card = generate_sample(args.out_dir, scale=args.scale, seed=args.seed, progress=lambda m: print(m, flush=True))
    print(f"wrote {args.out_dir}: {card['ratings']:,} ratings, {card['users']:,} users, {card['items']:,} items; "
          f"noise_rmse {card['noise_rmse']:.4f}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from musicrec.pipeline.report import format_leaderboard, format_stages, leaderboard

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODEL_NAMES))
    if unknown:
        raise MusicrecError(f"--models: unknown model(s) {unknown}", hint=f"choose from {', '.join(MODEL_NAMES)}")
    try:
        overrides = json.loads(args.overrides)
    except json.JSONDecodeError as e:
        raise MusicrecError(f"--overrides is not valid JSON: {e}", hint='e.g. --overrides \'{"gmf": {"epochs": 5}}\'') from e
    # The CLI is the one place in musicrec that starts a flow; the library itself never imports Prefect.
    from flows.console import quiet_console_tracebacks, show_epoch_bars
    from flows.training import TrainingParams, training

    if not _debug(args):
        quiet_console_tracebacks()
    bars = show_epoch_bars() if os.environ.get("MUSICREC_PROGRESS", _default_progress()) == "bars" else None
    params = TrainingParams(reviews=args.reviews, meta=args.meta, store_uri=args.store, models=models,
                            seed=args.seed, overrides=overrides, task_runner=args.task_runner,
                            dask_address=args.dask_address)
    try:
        report = training(params)
    finally:
        if bars:
            logging.getLogger("").removeHandler(bars)
            bars.close()
    for note in report.get("read", {}).get("notes", []):  # what the readers repaired or warn about
        print(f"input: {note}")
    champion = report["champion"]
    print("\n" + format_leaderboard(leaderboard(report["models"], report["baselines"]), champion.get("name")))
    print(f"\nchampion: {champion.get('name')} ({champion.get('version')}), promoted: {report['promoted']}"
          f" (previous test RMSE: {report.get('previous_test_rmse')})")
    if report.get("replaced_damaged"):
        print(f"warning: the previous champion {report['previous_version']} was damaged and has been replaced: "
              f"{report['replaced_damaged']}")
    print(f"bundle: {champion.get('uri')}\nreport: {report['report_uri']}")
    if report.get("stage_seconds"):
        print(format_stages(report["stage_seconds"]))
    card = report.get("sample_card") or {}
    if card.get("noise_rmse") is not None and champion.get("name"):
        best = next(m["test_rmse"] for m in report["models"] if m["name"] == champion["name"])
        print(f"noise floor (card.json noise_rmse): {card['noise_rmse']:.4f}; champion gap {best - card['noise_rmse']:.4f}")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    return 0


def _score(args: argparse.Namespace) -> int:
    from flows.console import quiet_console_tracebacks
    from flows.scoring import ScoringParams, batch_scoring

    if not _debug(args):
        quiet_console_tracebacks()
    params = ScoringParams(store_uri=args.store, version=args.version, pairs=args.pairs or "",
                           users=args.users or "", all_users=args.all_users, top_n=args.top_n, out=args.out)
    manifest = batch_scoring(params)
    print(json.dumps({k: v for k, v in manifest.items() if k not in ("parts", "sha256")}, indent=2, default=str))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from flows.console import quiet_console_tracebacks
    from flows.evaluation import RankingParams, ranking_evaluation
    from musicrec.scoring.ranking_eval import format_table

    if not _debug(args):
        quiet_console_tracebacks()
    result = ranking_evaluation(RankingParams(run_id=args.run, store_uri=args.store, version=args.version))
    print(f"{result['version']} on {result['test_users']:,} test users of run {args.run}\n")
    print(format_table(result) + f"\n\nranking: {result['uri']}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"sample-data": _sample_data, "train": _train,
                                                            "score": _score, "evaluate": _evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline by default; set to opt in
    try:
        return COMMANDS[args.command](args)
    except MusicrecError as e:
        return _fail(args, f"error: {e}")
    except KeyboardInterrupt:
        return _fail(args, "interrupted", code=130)
    except Exception as e:  # noqa: BLE001  (an unexpected bug: still one line unless --debug)
        return _fail(args, f"error: unexpected {type(e).__name__}: {e}\n  (run with --debug for the traceback)")


def _default_progress() -> str:
    """Bars on an interactive terminal, plain log lines everywhere else (files, CI, pipes)."""
    return "bars" if sys.stderr.isatty() else "lines"  # MUSICREC_PROGRESS=lines keeps log lines on a terminal


def _debug(args: argparse.Namespace) -> bool:
    return bool(args.debug or os.environ.get("MUSICREC_DEBUG"))


def _fail(args: argparse.Namespace, message: str, code: int = 2) -> int:
    if _debug(args):
        traceback.print_exc()
    print(message, file=sys.stderr)
    return code


def run(argv: Sequence[str] | None = None) -> Any:
    sys.exit(main(argv))
