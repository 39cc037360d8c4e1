"""The implicit models' test metrics on full score rows and with musicrec.metrics.bounded, side by side.

    .venv/bin/python benchmarks/bounded_eval.py --workspace <run folder> [--models implicit_hinge,implicit_bpr]

The run folder is a training run's workspace (with ratings.parquet and models/<name>/weights.npz), e.g. under
.musicrec/work/ of the folder `benchmarks/commands.py` logs to. Prints each model's seconds for both
evaluations (one thread, the flow's 20,000 test users) and whether the metrics are equal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True, type=Path)
    ap.add_argument("--models", default="implicit_hinge,implicit_bpr,implicit_pointwise")
    args = ap.parse_args()
    from musicrec.fit.threads import cpu_threads
    from musicrec.implicit.train import evaluate_model, score_fn
    from musicrec.metrics.full import evaluate_scorer
    from musicrec.pipeline.champion_retrieval import load_implicit
    from musicrec.pipeline.retrieval import TEST_USERS, ranking_data
    from musicrec.pipeline.workspace import Workspace

    ws = Workspace(args.workspace)
    data = ranking_data(ws)
    for name in args.models.split(","):
        model = load_implicit(ws, name)
        with cpu_threads(1):
            t = time.perf_counter()
            bounded = evaluate_model(
                model, None, data.test, data.seen_val, max_users=TEST_USERS, coverage=True
            )
            t_bounded = time.perf_counter() - t
            t = time.perf_counter()
            full = evaluate_scorer(
                score_fn(model), None, data.test, data.seen_val, data.items.size, max_users=TEST_USERS
            )
            t_full = time.perf_counter() - t
        print(
            f"{name}: bounded {t_bounded:.1f} s, full rows {t_full:.1f} s, equal: {bounded == full}; {bounded}",
            flush=True,
        )


if __name__ == "__main__":
    main()
