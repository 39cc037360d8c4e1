"""Tasks of the batch scoring flow. Each calls one musicrec.scoring.jobs function; nothing here does the work."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from musicrec.scoring import jobs
from musicrec.scoring.summary import markdown
from tasks.retries import io_retries


@task(name="fetch-bundle", **io_retries([1, 3]), cache_policy=NO_CACHE)
def fetch_bundle(store_uri: str, version: str, workdir: str) -> dict[str, Any]:
    """Download the bundle and verify every sha256 before anything is scored."""
    got = jobs.fetch_bundle(store_uri, version, workdir)
    get_run_logger().info("scoring with %s (%s)", got["version"], got["model"])
    return got


@task(name="score-pairs", task_run_name="score-pairs-{start}", cache_policy=NO_CACHE)
def score_pairs_chunk(
    directory: str, pairs_path: str, start: int, stop: int, out_path: str, batch_size: int
) -> dict[str, Any]:
    return jobs.score_pairs_chunk(directory, pairs_path, start, stop, out_path, batch_size)


@task(name="rank-users", task_run_name="rank-users-{chunk}", cache_policy=NO_CACHE)
def rank_users_chunk(
    directory: str, users: list[str], chunk: int, top_n: int, out_path: str, batch_size: int
) -> dict[str, Any]:
    return jobs.rank_users_chunk(directory, users, top_n, out_path, batch_size)


@task(name="commit-output", **io_retries([2, 5, 10]), cache_policy=NO_CACHE)
def commit_output(
    out_uri: str, prefix: str, parts: list[str], summaries: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    """Upload the parts, then the manifest last: readers see the whole output or none of it."""
    manifest = jobs.commit_job(out_uri, prefix, parts, summaries, extra)
    summary = {k: v for k, v in manifest.items() if k not in ("parts", "sha256")}
    create_markdown_artifact(markdown(summary), key="scoring-summary", description="Batch scoring summary")
    create_table_artifact(
        [{"metric": k, "value": str(v)} for k, v in summary.items()],
        key="scoring-table",
        description="Batch scoring summary as a table",
    )
    return manifest
