"""Tasks of the ranking-evaluation flow. Each calls one musicrec.pipeline.ranking_eval function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from musicrec.pipeline import ranking_eval
from musicrec.results import current_version
from musicrec.store import open_store
from tasks.retries import io_retries


@task(name="resolve-version", **io_retries([1, 3]), cache_policy=NO_CACHE)
def resolve_version(store_uri: str, run_id: str, version: str) -> str:
    """The given version, else the bundle this run built, else the champion."""
    return ranking_eval.run_version(open_store(store_uri), run_id, version)


@task(name="fetch-splits", **io_retries([1, 3]), cache_policy=NO_CACHE)
def fetch_splits(store_uri: str, run_id: str, workdir: str) -> dict[str, str]:
    return ranking_eval.fetch_splits(open_store(store_uri), run_id, Path(workdir) / "splits")


@task(name="rank-test-users", cache_policy=NO_CACHE)
def rank_test_users(
    directory: str, split_paths: dict[str, str], k: int, seed: int, max_users: int, threads: int
) -> dict[str, Any]:
    """Top-k lists for the test users from the champion and both references, scored against the test items."""
    result = ranking_eval.evaluate_paths(directory, split_paths, k, seed, max_users, threads)
    top = result["methods"][0]
    get_run_logger().info(
        "ranking evaluation of %s on %s test users: HR@%s %.4f, NDCG@%s %.4f (table: "
        "artifact ranking-quality)",
        result["version"],
        result["test_users"],
        k,
        top[f"hr@{k}"],
        k,
        top[f"ndcg@{k}"],
    )
    return result


@task(name="current-champion", **io_retries([1, 3]), cache_policy=NO_CACHE)
def current_champion(store_uri: str) -> str | None:
    """The version the champion pointer names, or None."""
    return current_version(open_store(store_uri))


@task(name="publish-ranking", **io_retries([2, 5, 10]), cache_policy=NO_CACHE)
def publish_ranking(store_uri: str, run_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """Write runs/<run_id>/ranking.json and the table artifact."""
    uri = ranking_eval.write_ranking(open_store(store_uri), run_id, result)
    create_table_artifact(
        ranking_eval.table_rows(result),
        key="ranking-quality",
        description=f"Top-{result['k']} ranking quality on run {run_id}'s test users "
        f"({result['test_users']} users), model {result['version']}: {uri}",
    )
    return {**result, "uri": uri}
