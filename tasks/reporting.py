"""Tasks that publish the run report and show it in the Prefect UI (leaderboard, model card, links)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from musicrec.pipeline import report as rep
from musicrec.pipeline.workspace import Workspace


@task(name="publish-report", retries=3, retry_delay_seconds=[2, 5, 10], cache_policy=NO_CACHE)
def publish_report(workdir: str, store_uri: str, report: dict[str, Any]) -> dict[str, Any]:
    """Upload splits, learning curves and report.json; create the UI artifacts."""
    from musicrec.store import open_store

    ws = Workspace(Path(workdir))
    store = open_store(store_uri)
    histories = {m["name"]: ws.read_json(f"models/{m['name']}/history.json") for m in report["models"]}
    report = {**report, "learning_curves_uri": store.url_for(f"{rep.run_prefix(ws.run_id)}/learning_curves.png")}
    out = rep.publish_run(store, ws, report, rep.learning_curves_png(histories))
    board = rep.leaderboard(report["models"], report["baselines"])
    create_table_artifact(board, key="leaderboard", description=f"run {ws.run_id}: models and baselines by val RMSE")
    if report["champion"].get("name"):
        create_markdown_artifact(rep.model_card(report), key="model-card", description="The champion's model card")
    if report["champion"].get("uri"):
        create_link_artifact(report["champion"]["uri"], link_text="champion bundle", key="champion-bundle")
    create_link_artifact(out["report_uri"], link_text="report.json", key="run-report")
    return {**report, **out}
