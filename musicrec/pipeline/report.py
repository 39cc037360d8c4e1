"""The run report (report.json), the leaderboard, the champion's model card and the learning curves."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from musicrec.pipeline.workspace import Workspace
from musicrec.store import Store, safe_key_part

LEADERBOARD_COLUMNS = ["name", "train_rmse", "val_rmse", "test_rmse", "test_mae", "test_cold_user_rmse",
                       "test_cold_item_rmse", "fit_seconds", "epochs"]


class StageClock:
    """Wall seconds per named stage of a run, in the order they ran: the report shows where the time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - start, 2)


def format_stages(seconds: dict[str, float]) -> str:
    """One line: stage seconds and each one's share of the total."""
    total = sum(seconds.values()) or 1.0
    return "stages: " + ", ".join(f"{k} {v:.1f} s ({v / total:.0%})" for k, v in seconds.items())


def run_prefix(run_id: str) -> str:
    return f"runs/{safe_key_part(run_id)}"


def leaderboard(models: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Models and baselines sorted by validation RMSE, rounded for display."""
    rows = [{**r, "kind": "model"} for r in models] + [{**r, "kind": "baseline"} for r in baselines]
    rows.sort(key=lambda r: (r["val_rmse"], r["name"]))
    return [{c: _round(r.get(c)) for c in ["name", "kind", *LEADERBOARD_COLUMNS[1:]]} for r in rows]


def _round(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


def format_leaderboard(rows: list[dict[str, Any]], champion: str | None) -> str:
    """A fixed-width text table for terminals."""
    head = f"{'model':<16}{'val_rmse':>10}{'test_rmse':>11}{'test_mae':>10}{'cold_user':>11}{'cold_item':>11}{'fit_s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = " *" if r["name"] == champion else ""
        lines.append(f"{r['name'] + mark:<16}{_f(r['val_rmse'])}{_f(r['test_rmse'], 11)}{_f(r['test_mae'])}"
                     f"{_f(r['test_cold_user_rmse'], 11)}{_f(r['test_cold_item_rmse'], 11)}{_f(r['fit_seconds'], 8, 1)}")
    return "\n".join(lines)


def _f(v: Any, width: int = 10, digits: int = 4) -> str:
    return f"{v:>{width}.{digits}f}" if isinstance(v, (int, float)) else f"{'-':>{width}}"


def learning_curves_png(histories: dict[str, list[dict[str, float]]]) -> bytes:
    """Validation RMSE per epoch for every model, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, hist in sorted(histories.items()):
        ax.plot([h["epoch"] for h in hist], [h["val_rmse"] for h in hist], marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation RMSE")
    ax.set_title("Learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def model_card(report: dict[str, Any]) -> str:
    """Markdown card for the champion: data, split, metrics, cold start, where the bundle is."""
    ch, data, split = report["champion"], report["data"], report["split"]
    row = next((m for m in report["models"] if m["name"] == ch.get("name")), {})
    lines = [f"# Champion: {ch.get('name')}", "",
             f"- run: `{report['run_id']}`; promoted: **{report['promoted']}** "
             f"(previous champion test RMSE on this split: {report.get('previous_test_rmse')})",
             f"- bundle: {ch.get('uri')}",
             f"- data: {data['ratings']:,} ratings, {data['users']:,} users, {data['items']:,} items; "
             f"fingerprint `{data['fingerprint'][:23]}…`",
             f"- split ({split['method']}, seed {split['seed']}): train {split['train']:,}, validation "
             f"{split['validation']:,}, test {split['test']:,}; test rows with unseen user {split['test_unseen_user']:,}, "
             f"unseen item {split['test_unseen_item']:,}", "",
             "| metric | value |", "|---|---|"]
    for k in ("train_rmse", "val_rmse", "test_rmse", "test_mae", "test_warm_rmse", "test_cold_user_rmse",
              "test_cold_item_rmse"):
        lines.append(f"| {k} | {_round(row.get(k))} |")
    card = report.get("sample_card") or {}
    if card.get("noise_rmse") is not None and row.get("test_rmse") is not None:
        lines += ["", f"Generated sample: noise_rmse {card['noise_rmse']:.4f} (the best possible predictor); "
                  f"the champion is {row['test_rmse'] - card['noise_rmse']:.4f} above it on test."]
    base = {b["name"]: b["test_rmse"] for b in report["baselines"]}
    lines += ["", f"Baselines (test RMSE): global mean {_round(base.get('global_mean'))}, "
              f"bias {_round(base.get('bias'))}.", "", f"Learning curves: {report.get('learning_curves_uri')}"]
    return "\n".join(lines)


def publish_run(store: Store, ws: Workspace, report: dict[str, Any], png: bytes) -> dict[str, str]:
    """Upload splits, the learning-curve PNG and report.json (last) under runs/<run_id>/."""
    prefix = run_prefix(ws.run_id)
    for name in ("train", "validation", "test"):
        store.put_file(f"{prefix}/splits/{name}.parquet", ws.splits / f"{name}.parquet")
    store.put_bytes(f"{prefix}/learning_curves.png", png, content_type="image/png")
    store.put_file(f"{prefix}/report.json", ws.write_json("report.json", report), content_type="application/json")
    return {"report_uri": store.url_for(f"{prefix}/report.json")}
