"""The `batch_scoring` flow: verified champion bundle -> chunks scored in parallel -> atomic Parquet output."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field, model_validator

from musicrec.pipeline.workspace import Workspace, new_run_id
from musicrec.scoring import jobs
from musicrec.settings import get_settings
from tasks import scoring as t


class ScoringParams(BaseModel):
    """What to score, with which model, and where to write it; the Prefect UI renders this as a form."""

    store_uri: str = Field("", description="s3://bucket/prefix or file:///path; empty = MUSICREC_STORE_URI")
    version: str = Field("", description="published model version; empty = the champion pointer")
    pairs: str = Field("", description="CSV/Parquet with user_id,item_id: score these pairs")
    users: str = Field("", description="CSV/Parquet with user_id: top-N lists for these users")
    all_users: bool = Field(False, description="top-N lists for every user the model knows")
    top_n: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(65536, ge=1, description="pairs per onnxruntime call")
    chunk_rows: int = Field(500_000, ge=1, description="at most this many pairs per chunk task")
    chunk_users: int = Field(25_000, ge=1, description="users per chunk task")
    out: str = Field("", description="output URI; empty = <store>/scores/<run id>/<job>")
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, description="parallel chunk tasks")
    work_dir: str = ".musicrec/work"

    @model_validator(mode="after")
    def _one_job(self) -> ScoringParams:
        if sum([bool(self.pairs), bool(self.users), self.all_users]) != 1:
            raise ValueError("give exactly one of pairs, users or all_users")
        return self


@flow(name="batch-scoring")
def batch_scoring(params: ScoringParams) -> dict[str, Any]:
    """Score pairs or rank users with a verified bundle; the output appears whole or not at all."""
    store_uri = params.store_uri or get_settings().store_uri
    run_id = new_run_id()
    ws = Workspace.create(params.work_dir, f"score-{run_id}")
    bundle = t.fetch_bundle(store_uri, params.version, str(ws.root))
    parts_dir = ws.root / "parts"
    parts_dir.mkdir(exist_ok=True)
    job = "pairs" if params.pairs else "topn"
    t0 = time.perf_counter()
    parts, summaries = _score_chunks(params, bundle["directory"], parts_dir)
    seconds = time.perf_counter() - t0
    extra: dict[str, Any] = {"job": job, "version": bundle["version"], "model": bundle["model"],
                             "seconds": round(seconds, 3)}
    if job == "pairs":
        extra["pairs_per_second"] = round(sum(s["rows"] for s in summaries) / seconds)
    else:
        extra.update(jobs.topn_totals(bundle["directory"], parts, seconds))
    out_uri, prefix = (params.out, "") if params.out else (store_uri, f"scores/{run_id}/{job}")
    return t.commit_output(out_uri, prefix, parts, summaries, extra)


def _score_chunks(params: ScoringParams, directory: str, parts_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The parallel stage: one task run per chunk, at most params.threads at a time, each writing a local part."""
    workers = max(1, params.threads)
    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        if params.pairs:
            ranges = jobs.plan_pair_chunks(params.pairs, params.chunk_rows, workers)
            paths = [str(parts_dir / f"{k:05d}.parquet") for k in range(len(ranges))]
            futures = [runner.submit(t.score_pairs_chunk, {"directory": directory, "pairs_path": params.pairs,
                                                           "start": a, "stop": b, "out_path": p,
                                                           "batch_size": params.batch_size})
                       for (a, b), p in zip(ranges, paths)]
        else:
            users = jobs.list_users(directory, params.users)
            chunks = [users[s:s + params.chunk_users] for s in range(0, len(users), params.chunk_users)] or [[]]
            paths = [str(parts_dir / f"{k:05d}.parquet") for k in range(len(chunks))]
            futures = [runner.submit(t.rank_users_chunk, {"directory": directory, "users": c, "chunk": k,
                                                          "top_n": params.top_n, "out_path": p,
                                                          "batch_size": params.batch_size})
                       for k, (c, p) in enumerate(zip(chunks, paths))]
        wait(futures)
        return paths, [f.result() for f in futures]
