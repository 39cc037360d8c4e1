"""Tasks that publish the run report and show it in the UI (leaderboard, model card, plots, locations).

Locations (the champion's bundle, report.json) become a link artifact only for http(s) URLs, which a browser
can open. A file:// or s3:// URI would be a dead link in the UI, so those are markdown artifacts that show the
path or URI as text to copy, with the command that reads it. Plots are markdown artifacts with the PNG
embedded as a data URI (see musicrec.pipeline.report.image_markdown): they render without access to the store.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from musicrec.pipeline import report as rep
from musicrec.pipeline.workspace import Workspace, model_file, open_workspace
from musicrec.store import Store, open_store

LEADERBOARD_NOTE = (
    "★ = champion (lowest val_rmse of the models that beat the bias baseline); val_gain_vs_bias = "
    "% lower val_rmse than bias; kind untrained = no epoch beat the starting point"
)


def location_markdown(uri: str, title: str) -> str:
    """Markdown naming where something is stored: the local path for file://, the URI for anything else."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = url2pathname(parsed.path)
        return f"**{title}**\n\nLocal path (on the machine that ran the flow):\n\n```\n{path}\n```"
    hint = f"\n\nDownload: `aws s3 cp --recursive {uri} .`" if parsed.scheme == "s3" else ""
    return f"**{title}**\n\n```\n{uri}\n```{hint}"


def publish_location(uri: str, title: str, key: str, description: str) -> None:
    """A link artifact for http(s) URLs, a markdown artifact with the location as text otherwise."""
    if urlparse(uri).scheme in ("http", "https"):
        create_link_artifact(uri, link_text=title, key=key, description=description)
    else:
        create_markdown_artifact(location_markdown(uri, title), key=key, description=description)


def publish_image(png: bytes, title: str, key: str, description: str, caption: str = "") -> None:
    """Show a PNG plot in the UI as a markdown artifact (the tuning flow's optimisation history too)."""
    create_markdown_artifact(rep.image_markdown(png, title, caption), key=key, description=description)


@task(name="publish-run-files", retries=3, retry_delay_seconds=[2, 5, 10], cache_policy=NO_CACHE)
def publish_run_files(workdir: str, store_uri: str, report: dict[str, Any]) -> str:
    """Upload the splits and the learning curves (before any promotion); show the curves; return their URI."""
    with open_workspace(workdir) as ws:
        histories = {m["name"]: ws.read_json(model_file(m["name"], "history.json")) for m in report["models"]}
        png = rep.learning_curves_png(histories)
        curves_uri = rep.publish_run_files(open_store(store_uri), ws, png)
    publish_image(
        png,
        "Learning curves",
        key="learning-curves",
        description="Validation RMSE per epoch of every model (epoch 0: its starting point)",
        caption=f"Stored as `{curves_uri}`",
    )
    return curves_uri


@task(name="publish-report", retries=3, retry_delay_seconds=[2, 5, 10], cache_policy=NO_CACHE)
def publish_report(workdir: str, store_uri: str, report: dict[str, Any]) -> dict[str, Any]:
    """Write report.json (after publish_run_files); create the UI artifacts."""
    with open_workspace(workdir) as ws:
        return _publish_report(ws, open_store(store_uri), report)


def _publish_report(ws: Workspace, store: Store, report: dict[str, Any]) -> dict[str, Any]:
    out = rep.write_report(store, ws, report)
    champion = report.get("champion") or {}
    skipped = (report.get("skipped") or {}).get("rating_models")
    if skipped:  # implicit feedback: no rating model, one line instead of an empty table
        create_markdown_artifact(
            f"# Leaderboard\n\n{skipped}",
            key="leaderboard",
            description=f"Run {ws.run_id}: no rating models (implicit feedback)",
        )
    else:
        board = rep.leaderboard(report["models"], report["baselines"], champion.get("name"))
        create_table_artifact(
            rep.leaderboard_table(board),
            key="leaderboard",
            description=f"Run {ws.run_id}: models and baselines by validation RMSE. {LEADERBOARD_NOTE}",
        )
    ranking = rep.ranking_table(report.get("retrieval"))
    if ranking:
        create_table_artifact(
            ranking,
            key="ranking-leaderboard",
            description=f"Run {ws.run_id}: retrieval models and baselines by validation NDCG@10 "
            "(temporal leave-last-out, full ranking over unrated items); * retrieval champion",
        )
    if champion.get("name"):
        create_markdown_artifact(
            rep.model_card(report),
            key="model-card",
            description=f"Champion {champion['name']}: promotion decision, metrics, data",
        )
    if champion.get("uri"):
        publish_location(
            champion["uri"],
            f"Champion bundle {champion.get('version', '')}",
            key="champion-bundle",
            description="Where the champion's ONNX bundle (model.onnx + metadata.json) is stored",
        )
    publish_location(
        out["report_uri"],
        "Run report (report.json)",
        key="run-report",
        description=f"Run {ws.run_id}: the full report (models, baselines, split, promotion)",
    )
    return {**report, **out}
