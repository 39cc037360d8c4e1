"""`musicrec` command line. Every argument that can be checked is checked before Prefect starts
(musicrec.preflight); every mistake is one message and exit code 2 (a traceback only with --debug).
runs, champion and recommend read the store directly and never start Prefect."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from musicrec import preflight as pre
from musicrec.errors import MusicrecError
from musicrec.fit.threads import limit_malloc_arenas
from musicrec.registry import names
from musicrec.settings import get_settings

MODEL_NAMES = names("rating")
SAMPLE_SCALES = [
    "small",
    "medium",
    "seed",
    "seed2x",
    "seed4x",
]  # musicrec.data.world.SCALES, without numpy/scipy
STORE_HELP = (
    "s3://bucket/prefix, file:///path or a folder (default MUSICREC_STORE_URI, else ./.musicrec/store)"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musicrec", description="Music recommendations from Amazon reviews.")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample-data", help="generate a dataset in the Amazon 2018 format")
    s.add_argument("out_dir")
    s.add_argument("--scale", choices=SAMPLE_SCALES, default="small")
    s.add_argument("--seed", type=int, default=0)
    t = sub.add_parser(
        "train", help="run the training flow (Prefect; ephemeral server if none is configured)"
    )
    u = sub.add_parser(
        "tune", help="run the tuning flow: an Optuna search per model; training then starts from it"
    )
    for cmd in (t, u):
        cmd.add_argument("--reviews", action="append", required=True, help="review file; repeat for several")
        cmd.add_argument("--meta", action="append", default=[], help="metadata file; repeat for several")
        cmd.add_argument(
            "--models",
            default=",".join(MODEL_NAMES),
            help="comma-separated subset of " + ",".join(MODEL_NAMES),
        )
        cmd.add_argument(
            "--task-runner",
            choices=["threads", "processes", "dask"],
            help="default MUSICREC_TASK_RUNNER, threads",
        )
        cmd.add_argument(
            "--dask-address",
            default="",
            help="Dask scheduler (default MUSICREC_DASK_ADDRESS, else a local cluster)",
        )
        cmd.add_argument("--seed", type=int, default=0)
        cmd.add_argument(
            "--columns",
            default="",
            help="input columns by header name, e.g. "
            "user=listener,item=track,rating=stars[,timestamp=ts] (weight=plays: a play count), "
            "or by 1-based position: user=1,item=2,rating=3",
        )
        cmd.add_argument(
            "--delimiter",
            default="",
            help="force the review files' delimiter: , tab ; | or space (default: detected)",
        )
        cmd.add_argument("--rating-range", default="", help="MIN,MAX of the ratings, e.g. 1,5")
        cmd.add_argument(
            "--tags",
            default="",
            help="tag assignments, delimited: user, item, tag id[, ...] (Last.fm "
            "user_taggedartists.dat); each item's tags become its text. Needs --tag-names",
        )
        cmd.add_argument(
            "--tag-names", default="", help="tag id, tag text (Last.fm tags.dat; Latin-1 is fine)"
        )
    t.add_argument(
        "--feedback",
        choices=["auto", "implicit", "explicit"],
        default="auto",
        help="explicit ratings, or implicit counts (plays, clicks, user-item pairs: retrieval models "
        "only, each count a confidence weight); auto (default): implicit when the value column is named "
        "like a count, there is none, or the values fit no rating scale",
    )
    t.add_argument(
        "--confidence-alpha",
        type=float,
        default=None,
        help="implicit feedback: an interaction weighs 1 + ALPHA * log(1 + count) in the retrieval loss "
        "(default MUSICREC_CONFIDENCE_ALPHA, 1.0)",
    )
    t.add_argument(
        "--overrides", default="{}", help='JSON, e.g. \'{"gmf": {"epochs": 5}}\' (wins over tuned values)'
    )
    t.add_argument(
        "--retrieval-models",
        default=",".join(names("retrieval")),
        help="implicit-feedback models for top-N retrieval (comma-separated), or none",
    )
    t.add_argument(
        "--parallel-tasks",
        type=int,
        default=None,
        help="threads runner: models trained at once (default 4; each holds its model in memory, so "
        "fewer means a lower peak; 0 = all at once)",
    )
    t.add_argument(
        "--no-tuning",
        action="store_true",
        help="ignore the store's tuning/<model>.json and search nothing: family defaults",
    )
    t.add_argument(
        "--search-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds of search for the models with no usable tuning record before the final fits "
        "(default MUSICREC_SEARCH_BUDGET, 90; 0 = no search)",
    )
    t.add_argument(
        "--no-promote", action="store_true", help="publish the bundle but leave the champion as it is"
    )
    t.add_argument(
        "--no-refit",
        action="store_true",
        help="serve the models fitted on the training split, not refit on every rating: `musicrec "
        "evaluate` can then measure the served lists on the run's own held-out items",
    )
    u.add_argument(
        "--retrieval-models",
        default="none",
        help="retrieval models to tune too (comma-separated), judged on validation NDCG@10 (default none)",
    )
    u.add_argument(
        "--trials", type=int, default=20, help="trials per model, the default configuration first (20)"
    )
    u.add_argument(
        "--timeout", type=float, default=1800.0, help="wall-clock seconds per model's search (1800)"
    )
    u.add_argument(
        "--total-timeout", type=float, default=14400.0, help="wall-clock seconds for all searches (14400)"
    )
    t.add_argument("--report", help="copy report.json here")
    c = sub.add_parser("score", help="run the batch scoring flow with the champion (or --version)")
    job = c.add_mutually_exclusive_group(required=True)
    job.add_argument("--pairs", help="CSV/Parquet with user_id,item_id")
    job.add_argument("--users", help="CSV/Parquet with user_id: top-N lists")
    job.add_argument("--all-users", action="store_true", help="top-N lists for every known user")
    c.add_argument("--top-n", type=int, default=10)
    c.add_argument(
        "--format", choices=["parquet", "csv"], default="parquet", help="parquet parts or one CSV file"
    )
    c.add_argument("--out", default="", help="output folder URI (default: the store, under scores/RUN/JOB)")
    e = sub.add_parser("evaluate", help="ranking quality (HR@10, NDCG@10, coverage) of a run's test users")
    e.add_argument("--run", required=True, help="training run id (musicrec runs lists them)")
    r = sub.add_parser("recommend", help="one user's top-N list from the champion (no Prefect)")
    r.add_argument("user_id")
    r.add_argument("--top-n", type=int, default=10)
    sub.add_parser("runs", help="the training runs in the store, their champions and promotion decisions")
    sub.add_parser("champion", help="the current champion and its metadata")
    for cmd in (t, u, c, e, r, *(sub.choices[n] for n in ("runs", "champion"))):
        cmd.add_argument("--store", default="", help=STORE_HELP)
    for cmd in (c, e, r):
        cmd.add_argument("--version", default="", help="published model version (default: the champion)")
    return p


def _sample_data(args: argparse.Namespace) -> int:
    from musicrec.data.generate import generate_sample

    card = generate_sample(
        args.out_dir, scale=args.scale, seed=args.seed, progress=lambda m: print(m, flush=True)
    )
    print(
        f"wrote {args.out_dir}: {card['ratings']:,} ratings, {card['users']:,} users, "
        f"{card['items']:,} items; noise_rmse {card['noise_rmse']:.4f}"
    )
    return 0


def _run_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The fields train and tune share, each checked before Prefect starts."""
    models = pre.parse_models(args.models)
    columns, rating_range = pre.parse_columns(args.columns), pre.parse_rating_range(args.rating_range)
    delimiter = pre.parse_delimiter(args.delimiter)
    env = get_settings()
    fields = {
        "reviews": args.reviews,
        "meta": args.meta,
        "models": models,
        "seed": args.seed,
        "store_uri": pre.check_store(args.store).uri,
        "task_runner": args.task_runner or env.task_runner,
        "dask_address": args.dask_address or env.dask_address,
        "work_dir": env.work_dir,
        "work_uri": pre.check_work_uri(env.work_uri),
    }
    pre.check_inputs(args.reviews, args.meta, columns, delimiter)
    if args.tags or args.tag_names:
        pre.check_tags(args.tags, args.tag_names)
    tags = {"tags": args.tags, "tag_names": args.tag_names} if args.tags else {}
    # only what the user asked for: a flow without these fields refuses them instead of ignoring them
    asked = (("columns", columns), ("rating_range", rating_range), ("delimiter", delimiter))
    return fields | {k: v for k, v in asked if v} | tags


def _tune(args: argparse.Namespace) -> int:
    fields = _run_inputs(args)
    if fields["work_uri"]:
        raise pre.UsageError(
            f"musicrec tune keeps its workspace on a filesystem its trials share (the Optuna "
            f"journal is a file), and MUSICREC_WORK_URI is {fields['work_uri']}",
            hint="unset MUSICREC_WORK_URI for musicrec tune (musicrec train keeps using it)",
        )
    fields["retrieval_models"] = pre.parse_retrieval_models(args.retrieval_models)
    fields |= {
        "trials": pre.check_positive("--trials", args.trials),
        "timeout_per_model": pre.check_seconds("--timeout", args.timeout),
        "timeout_total": pre.check_seconds("--total-timeout", args.total_timeout),
    }
    from flows.tuning import TuningParams, tuning
    from musicrec.tuning.records import format_records

    out = _run_flow(args, tuning, TuningParams, fields)
    print("\n" + format_records(out["records"]))
    print(
        "\nvalidation values on this run's split (RMSE: lower is better; NDCG@10: higher is better); "
        "trial 0 of each search is the default configuration"
    )
    for record in out["records"]:
        print(f"{record['model']}: {record['uri']}")
    print("the next `musicrec train` on this store starts each model from these (--no-tuning: defaults)")
    return 0


def _train(args: argparse.Namespace) -> int:
    fields = _run_inputs(args)
    retrieval = pre.parse_retrieval_models(args.retrieval_models)
    fields["overrides"] = pre.parse_overrides(args.overrides, [*fields["models"], *retrieval])
    fields["retrieval_models"] = retrieval
    if args.feedback == "implicit" and not retrieval:
        raise pre.UsageError(
            "--feedback implicit trains the retrieval models only, and --retrieval-models is none",
            hint="name the retrieval models to train, e.g. --retrieval-models implicit_bpr",
        )
    counts = None
    if args.feedback == "auto" and not retrieval:
        counts = pre.count_column(args.reviews, fields.get("columns", {}), fields.get("delimiter", ""))
    if counts:
        raise pre.UsageError(
            f"{counts} holds play counts, which train the retrieval models only, and --retrieval-models "
            "is none",
            hint="name the retrieval models to train, e.g. --retrieval-models implicit_bpr, or "
            "--feedback explicit --rating-range MIN,MAX if the values are ratings",
        )
    fields |= {"feedback": args.feedback} if args.feedback != "auto" else {}
    if args.confidence_alpha is not None:
        if not 0 <= args.confidence_alpha < float("inf"):
            raise pre.UsageError(
                f"--confidence-alpha {args.confidence_alpha:g}: must be a number >= 0",
                hint="e.g. --confidence-alpha 1 (0: every interaction weighs 1)",
            )
        fields["confidence_alpha"] = args.confidence_alpha
    fields |= {"promote": False} if args.no_promote else {}
    fields |= {"use_tuning": False} if args.no_tuning else {}
    if args.search_budget is not None:
        if not 0 <= args.search_budget < float("inf"):
            raise pre.UsageError(
                f"--search-budget {args.search_budget:g}: must be a number of seconds >= 0",
                hint="e.g. --search-budget 90 (0: no search; --no-tuning: no search and no records)",
            )
        fields["search_budget"] = args.search_budget
    fields |= {"refit": False} if args.no_refit else {}
    if args.parallel_tasks is not None:
        fields["parallel_tasks"] = pre.check_at_least("--parallel-tasks", args.parallel_tasks, 0, 4)
    from flows.training import TrainingParams, training

    report = _run_flow(args, training, TrainingParams, fields, bars=True)
    from musicrec.pipeline.report import format_leaderboard, format_ranking, format_stages, leaderboard
    from musicrec.results import promotion_summary

    for path, delimiter in report.get("read", {}).get("delimiters", {}).items():
        print(f"input: {path}: delimiter {delimiter}")
    for note in report.get("read", {}).get("notes", []):  # what the readers repaired or warn about
        print(f"input: {note}")
    champion = report["champion"]
    skipped = (report.get("skipped") or {}).get("rating_models")
    if skipped:
        print("\n" + skipped)
    else:
        print(
            "\n"
            + format_leaderboard(leaderboard(report["models"], report["baselines"]), champion.get("name"))
        )
    if report.get("retrieval", {}).get("models"):
        print("\n" + format_ranking(report["retrieval"]))
    for name, used in (report.get("tuning") or {}).items():
        differs = " (tuned on other data: re-run musicrec tune)" if used.get("fingerprint_differs") else ""
        print(f"tuning: {name} starts from tuning run {used['run_id']}{differs}")
    search = report.get("search") or {}
    for name, got in (search.get("models") or {}).items():
        print(
            f"search: {name} ({got['reason']}): {got['trials']} trials in {got['seconds']:.0f} s, "
            f"{got['metric']} default {_value(got.get('default_value'))} "
            f"-> best {_value(got.get('best_value'))}" + (f"\n  {got['note']}" if got.get("note") else "")
        )
    for name, why in (search.get("not_searched") or {}).items():
        print(f"search: {name} not searched ({why})")
    for note in report.get("tuning_notes") or []:
        print(f"tuning: {note}")
    print("\n" + promotion_summary(report))
    if champion.get("uri"):
        print(f"bundle: {champion['uri']}")
    print(f"report: {report['report_uri']}")
    if report.get("stage_seconds"):
        print(format_stages(report["stage_seconds"]))
    card = report.get("sample_card") or {}
    if card.get("noise_rmse") is not None and champion.get("name"):
        best = next(m["test_rmse"] for m in report["models"] if m["name"] == champion["name"])
        print(
            f"noise floor (card.json noise_rmse): {card['noise_rmse']:.4f}; "
            f"champion gap {best - card['noise_rmse']:.4f}"
        )
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    return 0


def _score(args: argparse.Namespace) -> int:
    top_n = pre.check_positive("--top-n", args.top_n)
    if args.pairs:
        pre.check_job_file("--pairs", args.pairs, ["user_id", "item_id"])
    if args.users:
        pre.check_job_file("--users", args.users, ["user_id"])
    store = pre.check_store(args.store)
    if args.out:
        pre.check_output_outside(args.out, store)
    pre.check_version(store, args.version)
    fields = {
        "store_uri": store.uri,
        "version": args.version,
        "pairs": args.pairs or "",
        "users": args.users or "",
        "job": "pairs" if args.pairs else "users" if args.users else "all_users",
        "top_n": top_n,
        "out": args.out,
        "format": args.format,
    }
    from flows.scoring import ScoringParams, batch_scoring
    from musicrec.scoring.summary import describe

    print(describe(_run_flow(args, batch_scoring, ScoringParams, fields)))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    store = pre.check_store(args.store)
    pre.check_run(store, args.run)
    if args.version:
        pre.check_version(store, args.version)
    from flows.evaluation import RankingParams, ranking_evaluation
    from musicrec.pipeline.ranking_eval import format_table

    result = _run_flow(
        args,
        ranking_evaluation,
        RankingParams,
        {"run_id": args.run, "store_uri": store.uri, "version": args.version},
    )
    print(
        f"{result['version']} ({_champion_note(result)}) on {result['test_users']:,} test users "
        f"of run {args.run}\n"
    )
    print(format_table(result) + f"\n\nranking: {result['uri']}")
    if result.get("note") and result.get("bundle_run_id") == args.run:
        print(f"note: {result['note']}")
    return 0


def _champion_note(result: dict[str, Any]) -> str:
    current = result.get("current_champion")
    if result.get("is_champion"):
        return "the current champion"
    return f"not the current champion, which is {current}" if current else "there is no champion yet"


def _recommend(args: argparse.Namespace) -> int:
    from musicrec.results import format_recommendations, recommend

    pre.check_user_id(args.user_id)
    top_n = pre.check_positive("--top-n", args.top_n)
    store = pre.check_store(args.store)
    pre.check_version(store, args.version)
    version, out = recommend(store, args.user_id, top_n, args.version)
    print(format_recommendations(args.user_id, version, out))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from musicrec.results import format_runs, list_runs

    store = pre.check_store(args.store)
    print(format_runs(list_runs(store), store.uri))
    return 0


def _champion(args: argparse.Namespace) -> int:
    from musicrec.results import champion_info, format_champion

    print(format_champion(champion_info(pre.check_store(args.store))))
    return 0


FLAGS = {
    "promote": "--no-promote",
    "use_tuning": "--no-tuning",
    "refit": "--no-refit",
    "timeout_per_model": "--timeout",
    "timeout_total": "--total-timeout",
}


def _run_flow(
    args: argparse.Namespace,
    flow: Callable[[Any], Any],
    params_cls: Any,
    fields: dict[str, Any],
    bars: bool = False,
) -> Any:
    """Build the flow's parameters (a pydantic error becomes one UsageError) and run the flow."""
    from pydantic import ValidationError

    from flows.console import quiet_console_tracebacks, show_epoch_bars
    from flows.server import tie_temporary_server

    unknown = sorted(set(fields) - set(params_cls.model_fields))
    if unknown:
        flags = ", ".join(FLAGS.get(f, "--" + f.replace("_", "-")) for f in unknown)
        raise pre.UsageError(
            f"{flags}: not supported by this version of the {args.command} flow",
            hint="leave the option out, or update musicrec",
        )
    try:
        params = params_cls(**fields)
    except ValidationError as e:
        raise pre.pydantic_message(e, args.command) from None
    if not _debug(args):
        quiet_console_tracebacks()
    handler = show_epoch_bars() if bars and _progress() == "bars" else None
    try:
        tie_temporary_server()  # a killed command leaves no server behind
        return flow(params)
    finally:
        if handler:
            import logging

            logging.getLogger("").removeHandler(handler)
            handler.close()


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sample-data": _sample_data,
    "train": _train,
    "tune": _tune,
    "score": _score,
    "evaluate": _evaluate,
    "recommend": _recommend,
    "runs": _runs,
    "champion": _champion,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    limit_malloc_arenas()  # before Prefect's threads and the flow's tasks allocate (also in each run's flow)
    args = _parser().parse_args(argv)
    pre.prefect_defaults()
    from musicrec.quiet import quiet_third_party

    quiet_third_party()
    previous = _note_interrupts()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", code=130)
    except Exception as e:  # noqa: BLE001  (an unexpected bug: still one line unless --debug)
        if _INTERRUPTED.is_set() or _caused_by_interrupt(e):  # cleanup that failed after Ctrl-C (a lock)
            return _fail(args, "interrupted", code=130)
        if isinstance(e, MusicrecError):
            return _fail(args, f"error: {e}")
        if pre.STARTUP_TIMED_OUT in str(e):
            return _fail(args, pre.startup_timeout_message())
        return _fail(
            args, f"error: unexpected {type(e).__name__}: {e}\n  (run with --debug for the traceback)"
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


_INTERRUPTED = threading.Event()


def _note_interrupts() -> Any:
    """Remember a Ctrl-C (SIGINT) before Python raises KeyboardInterrupt for it: whatever error a library's
    cleanup raises after it (Optuna's journal lock, a task runner), the command was interrupted. Returns the
    handler it replaced (None off the main thread, where signals cannot be handled)."""
    _INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigint(signum: int, frame: Any) -> None:
        _INTERRUPTED.set()
        signal.default_int_handler(signum, frame)

    return signal.signal(signal.SIGINT, on_sigint)


def _caused_by_interrupt(error: BaseException) -> bool:
    """True when a KeyboardInterrupt is in the error's chain of causes and contexts."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _value(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def _progress() -> str:
    """Bars on an interactive terminal, plain log lines everywhere else (files, CI, pipes)."""
    return get_settings().progress or ("bars" if sys.stderr.isatty() else "lines")


def _debug(args: argparse.Namespace) -> bool:
    try:
        return bool(args.debug or get_settings().debug)
    except MusicrecError:
        return bool(args.debug)


def _fail(args: argparse.Namespace, message: str, code: int = 2) -> int:
    if _debug(args):
        traceback.print_exc()
    print(message, file=sys.stderr)
    return code


def run(argv: Sequence[str] | None = None) -> Any:
    sys.exit(main(argv))
