"""The `batch_scoring` flow: verified champion bundle -> parallel chunks -> atomic Parquet/CSV output."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field, model_validator

from flows.workspaces import held_workspace
from musicrec.pipeline.workspace import Workspace, new_run_id
from musicrec.scoring import jobs
from musicrec.settings import get_settings
from musicrec.store import layout
from tasks import scoring as t

Job = Literal["all_users", "users", "pairs"]


class ScoringParams(BaseModel):
    """What to score, with which model, and where to write it; the Prefect UI renders this as a form."""

    job: Job = Field(
        "all_users",
        description="all_users: top-N for every known user; users: top-N for the "
        "users file; pairs: score the pairs file",
    )
    pairs: str = Field("", description="job pairs: CSV/Parquet file with columns user_id, item_id")
    users: str = Field("", description="job users: CSV/Parquet file with a user_id column")
    store_uri: str = Field("", description="s3://bucket/prefix or file:///path; empty = MUSICREC_STORE_URI")
    version: str = Field("", description="published model version; empty = the champion pointer")
    top_n: int = Field(10, ge=1, le=1000, description="list length of top-N jobs")
    format: Literal["parquet", "csv"] = Field("parquet", description="parquet parts, or one CSV file")
    out: str = Field("", description="output URI; empty = the store, under scores/RUN_ID/JOB")
    batch_size: int = Field(65536, ge=1, description="pairs per onnxruntime call")
    chunk_rows: int = Field(500_000, ge=1, description="at most this many pairs per chunk task")
    chunk_users: int = Field(25_000, ge=1, description="users per chunk task")
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, description="parallel chunk tasks")
    work_dir: str = Field(default_factory=lambda: get_settings().work_dir, description="local scratch folder")

    @model_validator(mode="before")
    @classmethod
    def _job_from_inputs(cls, data: Any) -> Any:
        """Without an explicit job (callers in code), the one input file given names it; all_users=true, the
        older form, means job all_users. The UI form always sends a job, which is then checked as it is."""
        if isinstance(data, dict) and "job" not in data:
            data = {k: v for k, v in data.items() if k != "all_users"}
            given = [name for name in ("pairs", "users") if data.get(name)]
            if len(given) == 1:
                data["job"] = given[0]
        return data

    @model_validator(mode="after")
    def _one_job(self) -> ScoringParams:
        if self.pairs and self.users:
            raise ValueError("pairs and users are both filled in: a run does one job, clear one of them")
        for name in ("pairs", "users"):
            given = bool(getattr(self, name))
            if given and self.job != name:
                raise ValueError(
                    f"{name} is filled in but job is {self.job}: set job to {name}, or clear {name}"
                )
            if self.job == name and not given:
                raise ValueError(f"job {name} needs the {name} file: fill in {name}")
        return self


def run_namer(prefix: str, *fields: str, defaults: dict[str, str] | None = None) -> Callable[[], str]:
    """A flow_run_name callable: prefix plus the named fields of the flow's `params` (e.g.
    score-pairs-champion), so a run list in the UI says what each run did."""

    def name() -> str:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        params = ctx.parameters.get("params") if ctx and ctx.parameters else None
        read = params.get if isinstance(params, dict) else lambda f, d=None: getattr(params, f, d)
        values = [str(read(f, "") or (defaults or {}).get(f, "")) for f in fields]
        return "-".join([prefix, *[v for v in values if v]])

    return name


@flow(
    name="batch-scoring", flow_run_name=run_namer("score", "job", "version", defaults={"version": "champion"})
)
def batch_scoring(params: ScoringParams) -> dict[str, Any]:
    """Score pairs or rank users with a verified bundle; the output appears whole or not at all."""
    store_uri = params.store_uri or get_settings().store_uri
    run_id = new_run_id()
    ws = Workspace.create(params.work_dir, f"score-{run_id}")
    with held_workspace(str(ws.root)):
        return _batch_scoring(params, store_uri, run_id, ws)


def _batch_scoring(params: ScoringParams, store_uri: str, run_id: str, ws: Workspace) -> dict[str, Any]:
    bundle = t.fetch_bundle(store_uri, params.version, str(ws.root))
    parts_dir = ws.root / "parts"
    parts_dir.mkdir(exist_ok=True)
    job = "pairs" if params.job == "pairs" else "topn"
    t0 = time.perf_counter()
    parts, summaries = _score_chunks(params, bundle["directory"], parts_dir)
    seconds = time.perf_counter() - t0
    extra: dict[str, Any] = {
        "job": job,
        "version": bundle["version"],
        "model": bundle["model"],
        "kind": bundle.get("kind", "rating"),
        **({"history_from": bundle["history_from"]} if bundle.get("history_from") else {}),
        "seconds": round(seconds, 3),
        "format": params.format,
    }
    if job == "pairs":
        extra["pairs_per_second"] = round(sum(s["rows"] for s in summaries) / seconds)
    else:
        extra.update(jobs.topn_totals(bundle["directory"], parts, seconds))
    out_uri, prefix = (params.out, "") if params.out else (store_uri, layout.scores_prefix(run_id, job))
    return t.commit_output(out_uri, prefix, parts, summaries, extra)


def _score_chunks(
    params: ScoringParams, directory: str, parts_dir: Path
) -> tuple[list[str], list[dict[str, Any]]]:
    """The parallel stage: a task run per chunk, at most params.threads at once, each writing a local part."""
    workers = max(1, params.threads)
    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        if params.job == "pairs":
            ranges = jobs.plan_pair_chunks(params.pairs, params.chunk_rows, workers)
            paths = [str(parts_dir / f"{k:05d}.parquet") for k in range(len(ranges))]
            futures = [
                runner.submit(
                    t.score_pairs_chunk,
                    {
                        "directory": directory,
                        "pairs_path": params.pairs,
                        "start": a,
                        "stop": b,
                        "out_path": p,
                        "batch_size": params.batch_size,
                    },
                )
                for (a, b), p in zip(ranges, paths, strict=False)
            ]
        else:
            users = jobs.list_users(directory, params.users)
            chunks = [
                users[s : s + params.chunk_users] for s in range(0, len(users), params.chunk_users)
            ] or [[]]
            paths = [str(parts_dir / f"{k:05d}.parquet") for k in range(len(chunks))]
            futures = [
                runner.submit(
                    t.rank_users_chunk,
                    {
                        "directory": directory,
                        "users": c,
                        "chunk": k,
                        "top_n": params.top_n,
                        "out_path": p,
                        "batch_size": params.batch_size,
                    },
                )
                for k, (c, p) in enumerate(zip(chunks, paths, strict=False))
            ]
        wait(futures)
        return paths, [f.result() for f in futures]
