"""The run report (report.json), the leaderboard, the champion's model card and the learning curves."""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from musicrec.pipeline.workspace import Workspace
from musicrec.results import promotion
from musicrec.store import Store, layout

# The leaderboard's columns, the same names in the UI table and the terminal table; a row's source key when
# it differs. RMSE/MAE show 4 decimals, seconds 1, the gain over the bias baseline 2 (a percentage).
LEADERBOARD_COLUMNS = [
    "model",
    "kind",
    "champion",
    "val_rmse",
    "val_gain_vs_bias",
    "test_rmse",
    "test_mae",
    "cold_user",
    "cold_item",
    "train_rmse",
    "best_epoch",
    "epochs",
    "fit_s",
]
_SOURCE = {
    "model": "name",
    "cold_user": "test_cold_user_rmse",
    "cold_item": "test_cold_item_rmse",
    "fit_s": "fit_seconds",
}
# The UI table leaves out train_rmse and epochs (in the model card and report.json) so that it fits a 1920 px
# wide window without a horizontal scroll bar.
UI_COLUMNS = [c for c in LEADERBOARD_COLUMNS if c not in ("train_rmse", "epochs")]
UNTRAINED = "untrained"  # kind of a model whose best_epoch is 0: no epoch beat its starting point
SKIPPED = "skipped"  # kind of a model that does not apply to the run's data (its row's note says why)
CHAMPION_MARK = "★"


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


def gain_vs_bias(val_rmse: Any, bias_val_rmse: Any) -> float | None:
    """Validation RMSE gain over the bias baseline, in percent (positive: better), None if unknown."""
    if not _number(val_rmse) or not _number(bias_val_rmse) or bias_val_rmse == 0:
        return None
    return 100.0 * (bias_val_rmse - val_rmse) / bias_val_rmse


def leaderboard(
    models: list[dict[str, Any]], baselines: list[dict[str, Any]], champion: str | None = None
) -> list[dict[str, Any]]:
    """Models and baselines sorted by validation RMSE (unknown last), one dict per row with
    LEADERBOARD_COLUMNS as keys: numbers rounded, the champion marked, untrained models labelled as such."""
    bias = next((b.get("val_rmse") for b in baselines if b.get("name") == "bias"), None)
    rows = [(r, _kind(r, "model")) for r in models] + [(r, "baseline") for r in baselines]
    rows.sort(
        key=lambda rk: (
            not _number(rk[0].get("val_rmse")),
            rk[0].get("val_rmse") or 0.0,
            str(rk[0].get("name")),
        )
    )
    return [_row(r, kind, champion, bias) for r, kind in rows]


def _kind(row: dict[str, Any], default: str) -> str:
    if row.get("skipped"):
        return SKIPPED
    return UNTRAINED if row.get("best_epoch") == 0 else default


def _row(r: dict[str, Any], kind: str, champion: str | None, bias: Any) -> dict[str, Any]:
    out = {c: r.get(_SOURCE.get(c, c)) for c in LEADERBOARD_COLUMNS}
    out.update(
        kind=kind,
        champion=champion is not None and r.get("name") == champion,
        val_gain_vs_bias=gain_vs_bias(r.get("val_rmse"), bias),
        **({"note": r["skipped"]} if r.get("skipped") else {}),
    )
    return {k: _round(k, v) for k, v in out.items()}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _digits(column: str) -> int:
    return 1 if column == "fit_s" else 2 if column == "val_gain_vs_bias" else 4


def _round(column: str, v: Any) -> Any:
    return round(v, _digits(column)) if isinstance(v, float) and math.isfinite(v) else v


def display(column: str, v: Any, missing: str = "-") -> str:
    """A leaderboard cell as text with fixed decimals (`missing` when unknown): the UI table and the terminal
    agree."""
    if column == "champion":
        return CHAMPION_MARK if v else ""
    if column == "val_gain_vs_bias":
        return f"{v:+.2f}%" if _number(v) else missing
    if isinstance(v, float):
        return f"{v:.{_digits(column)}f}" if math.isfinite(v) else missing
    return missing if v is None else str(v)


def leaderboard_table(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The rows as the UI table artifact shows them: UI_COLUMNS, every cell text with fixed decimals; unknown
    cells are "n/a" (the UI renders cells as markdown, where a lone "-" becomes a bullet)."""
    return [{c: display(c, r.get(c), missing="n/a") for c in UI_COLUMNS} for r in rows]


_TEXT_COLUMNS = [
    ("model", 18),
    ("val_rmse", 9),
    ("val_gain_vs_bias", 17),
    ("test_rmse", 10),
    ("test_mae", 9),
    ("cold_user", 10),
    ("cold_item", 10),
    ("best_epoch", 11),
    ("fit_s", 7),
]


def format_leaderboard(rows: list[dict[str, Any]], champion: str | None) -> str:
    """A fixed-width text table for terminals: the champion starred, untrained models labelled, a legend."""
    head = "".join(f"{c:<{w}}" if c == "model" else f"{c:>{w}}" for c, w in _TEXT_COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        name = f"{r['model']} *" if r["model"] == champion or r.get("champion") is True else r["model"]
        cells = [f"{name:<18}"] + [f"{display(c, r.get(c)):>{w}}" for c, w in _TEXT_COLUMNS[1:]]
        lines.append("".join(cells) + ("  untrained" if r.get("kind") == UNTRAINED else ""))
        if r.get("kind") == SKIPPED:
            lines[-1] = f"{r['model']:<18}  {r.get('note', SKIPPED)}"
    lines += [
        "* champion: the lowest val_rmse among the models that beat the bias baseline",
        "val_gain_vs_bias: how much lower val_rmse is than the bias baseline's, in percent",
        "cold_user / cold_item: test RMSE on rows whose user / item the training split never saw",
        "untrained: no epoch beat the model's starting point (best_epoch 0): not a result",
    ]
    return "\n".join(lines)


def new_figure() -> tuple[Any, Any]:
    """A (figure, axes) pair for a report plot, on the headless backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt.subplots(figsize=(7, 4), dpi=90)


def figure_png(fig: Any, ax: Any, xlabel: str, title: str) -> bytes:
    """Label, grid and legend a report plot; return it as PNG bytes and free it."""
    from matplotlib import pyplot as plt

    ax.set(xlabel=xlabel, ylabel="validation RMSE", title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # an implicit run has no rating model's curve
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


RANKING_COLUMNS = (
    "val_ndcg_at_10",
    "test_hr_at_10",
    "test_ndcg_at_10",
    "test_recall_at_50",
    "test_coverage_at_10",
)


def ranking_table(retrieval: dict[str, Any] | None) -> list[dict[str, str]]:
    """The retrieval models and their baselines by validation NDCG@10 (leave-last-out, full ranking)."""
    if not retrieval or not retrieval.get("models"):
        return []
    rows = sorted(
        [*retrieval["models"], *retrieval.get("baselines", [])], key=lambda r: -r.get("val_ndcg_at_10", 0)
    )
    champion = retrieval.get("champion")
    return [
        {
            "model": r["name"] + (" *" if r["name"] == champion else ""),
            **{
                c.replace("_at_", "@"): "-" if r.get("skipped") else f"{r.get(c, float('nan')):.4f}"
                for c in RANKING_COLUMNS
            },
            "best_epoch": str(r.get("best_epoch", "-")),
            "fit_s": f"{r.get('fit_seconds', 0):.1f}",
        }
        for r in rows
    ]


def format_ranking(retrieval: dict[str, Any] | None) -> str:
    """The ranking table for the terminal, with what the columns mean."""
    table = ranking_table(retrieval)
    if not table:
        return ""
    cols = list(table[0])
    widths = {c: max(len(c), *(len(r[c]) for r in table)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) if c == "model" else c.rjust(widths[c]) for c in cols)]
    lines += [
        "  ".join(r[c].ljust(widths[c]) if c == "model" else r[c].rjust(widths[c]) for c in cols)
        for r in table
    ]
    users = max(int(r.get("test_users", 0)) for r in retrieval["models"])
    held = retrieval.get("held_out") or "temporal leave-last-out"
    lines.append(
        f"* retrieval champion: the highest val_ndcg@10 among the models that beat most_popular; "
        f"{held}, full ranking over unrated items, {users:,} test users"
    )
    lines += [f"{r['name']}: {r.get('skipped') or r['note']}" for r in retrieval["models"] if _noted(r)]
    return "\n".join(lines)


def _noted(row: dict[str, Any]) -> bool:
    """Whether a retrieval row has a note under the table: skipped, or fitted on part of the data."""
    return bool(row.get("skipped") or row.get("note"))


def learning_curves_png(histories: dict[str, list[dict[str, float]]]) -> bytes:
    """Validation RMSE per epoch for every model (epoch 0 = its starting point), as PNG bytes."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = new_figure()
    for name, hist in sorted(histories.items()):
        points = [(h["epoch"], h.get("val_rmse")) for h in hist]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure_png(fig, ax, "epoch", "Learning curves")


def image_markdown(png: bytes, title: str, caption: str = "") -> str:
    """Markdown that shows a PNG inline, embedded as a base64 data URI: the Prefect UI renders it without
    reaching the store (a file:// or s3:// image would not load in a browser). Any plot can use it."""
    alt = title.replace("[", "(").replace("]", ")")
    data = base64.b64encode(png).decode("ascii")
    return "\n\n".join(p for p in (f"## {title}", f"![{alt}](data:image/png;base64,{data})", caption) if p)


def model_card(report: dict[str, Any]) -> str:
    """Markdown card for the champion: how it was chosen and promoted, refit, metrics, data, where it is."""
    ch = report.get("champion") or {}
    row = next((m for m in report.get("models", []) if m.get("name") == ch.get("name")), {})
    bias = {b.get("name"): b for b in report.get("baselines", [])}.get("bias", {})
    lines = [
        f"# Champion: {ch.get('name')}",
        "",
        f"- run: `{report.get('run_id')}`; version: `{ch.get('version')}`",
        f"- bundle: `{ch.get('uri')}`",
        *_promotion_lines(report),
        *_training_lines(row, bias),
        *([] if row.get("members") else tuning_lines((report.get("tuning") or {}).get(ch.get("name")))),
        *_refit_lines(report.get("refit")),
        *_data_lines(report),
        "",
        "| metric | champion | bias |",
        "|---|---|---|",
    ]
    skipped = (report.get("skipped") or {}).get("rating_models")
    if (
        skipped
    ):  # implicit feedback: the champion is the retrieval champion, judged in the ranking table below
        lines[-3:] = ["", f"- {skipped}"]
    for k in (
        ()
        if skipped
        else (
            "train_rmse",
            "val_rmse",
            "test_rmse",
            "test_mae",
            "test_warm_rmse",
            "test_cold_user_rmse",
            "test_cold_item_rmse",
        )
    ):
        lines.append(f"| {k} | {display(k, row.get(k))} | {display(k, bias.get(k))} |")
    card = report.get("sample_card") or {}
    if _number(card.get("noise_rmse")) and _number(row.get("test_rmse")):
        lines += [
            "",
            f"Generated sample: noise_rmse {card['noise_rmse']:.4f} (the best possible predictor); "
            f"the champion is {row['test_rmse'] - card['noise_rmse']:.4f} above it on test.",
        ]
    lines += _retrieval_lines(report.get("retrieval"))
    if report.get("learning_curves_uri"):
        lines += [
            "",
            f"Learning curves: `{report['learning_curves_uri']}` (shown in the learning-curves artifact)",
        ]
    return "\n".join(lines)


def _retrieval_lines(retrieval: Any) -> list[str]:
    """The retrieval champion and the ranking table (it orders the top-N lists of this bundle)."""
    table = ranking_table(retrieval)
    if not table:
        return []
    name = retrieval.get("champion")
    head = (
        f"## Retrieval champion: {name}"
        if name
        else "## No retrieval champion (no implicit model beat most-popular on validation NDCG@10)"
    )
    cols = list(table[0])
    return [
        "",
        head,
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(r[c] for c in cols) + " |" for r in table),
    ]


def _promotion_lines(report: dict[str, Any]) -> list[str]:
    """The promotion decision: compared rows, incumbent vs challenger RMSE on them, the reason."""
    p = promotion(report)
    lines = [
        f"- promoted: **{'yes' if p.get('promoted') else 'no'}**: {p.get('reason') or 'no reason given'}"
    ]
    if p.get("incumbent_version") or _number(p.get("incumbent_rmse")):
        lines.append(
            f"- compared with `{p.get('incumbent_version')}` on {_count(p.get('compared_rows'))} "
            f"rows neither fitted on: incumbent RMSE {display('rmse', p.get('incumbent_rmse'))}, "
            f"challenger RMSE {display('rmse', p.get('challenger_rmse'))}"
        )
    return lines


def _training_lines(row: dict[str, Any], bias: dict[str, Any]) -> list[str]:
    if row.get("members"):
        return _blend_lines(row, bias)
    best, epochs = row.get("best_epoch"), row.get("epochs")
    note = " (untrained: no epoch beat its starting point)" if best == 0 else ""
    lines = [
        f"- best epoch: {display('best_epoch', best)} of {display('epochs', epochs)}{note}; "
        f"fit {display('fit_s', row.get('fit_seconds'))} s"
    ]
    if _number(row.get("initial_val_rmse")):
        lines[0] += f"; starting val RMSE {row['initial_val_rmse']:.4f}"
    return [*lines, _gain_line(row, bias)]


def _gain_line(row: dict[str, Any], bias: dict[str, Any]) -> str:
    gains = [
        f"{split} "
        f"{display('val_gain_vs_bias', gain_vs_bias(row.get(f'{split}_rmse'), bias.get(f'{split}_rmse')))}"
        for split in ("val", "test")
    ]
    return f"- RMSE gain over the bias baseline: {', '.join(gains)}"


def _blend_lines(row: dict[str, Any], bias: dict[str, Any]) -> list[str]:
    """A blend's card: its members and weights, and how its validation RMSE was measured."""
    fit = row.get("blend") or {}
    terms = " + ".join(f"{m['weight']:.3f} x {m['name']}" for m in row["members"])
    among = ", ".join(fit.get("candidates") or [])
    val, in_sample = (display("rmse", row.get(k)) for k in ("val_rmse", "val_rmse_in_sample"))
    return [
        f"- a blend of {len(row['members'])} member(s), ridge on their validation predictions, clamped to "
        f"the rating range: {display('rmse', fit.get('intercept'))} + {terms}",
        f"- members and penalty (alpha {fit.get('alpha')}) chosen by {len(fit.get('folds') or [])}-fold "
        f"cross-validation on validation rows among {among}; val RMSE out of fold {val} (in sample "
        f"{in_sample})",
        _gain_line(row, bias),
    ]


def tuning_lines(used: Any) -> list[str]:
    """Which hyperparameters came from a tuning run (and whether it tuned on other data than this run's)."""
    if not isinstance(used, dict):
        return ["- hyperparameters: the family's defaults (no tuning record in the store)"]
    params = ", ".join(
        f"{k}={f'{v:.4g}' if isinstance(v, float) else v}" for k, v in used.get("params", {}).items()
    )
    lines = [f"- hyperparameters from tuning run `{used.get('run_id')}`: {params or 'none (all overridden)'}"]
    if used.get("overridden"):
        lines.append(f"- overridden by this run: {', '.join(used['overridden'])}")
    if used.get("fingerprint_differs"):
        lines.append("- warning: tuned on other data than this run's (fingerprint differs); re-run tuning")
    return lines


def _refit_lines(refit: Any) -> list[str]:
    if not isinstance(refit, dict):
        return []
    epochs = refit.get("epochs")
    if isinstance(epochs, dict):  # a blend: each member refit, the weights kept from validation
        epochs = ", ".join(f"{m} {e}" for m, e in epochs.items())
    return [
        f"- served model refit on all data: {_count(refit.get('rows'))} rows, "
        f"{display('epochs', epochs)} epochs; the metrics below come from the held-out fit"
    ]


def _data_lines(report: dict[str, Any]) -> list[str]:
    data, split = report.get("data") or {}, report.get("split") or {}
    lines = []
    if data:
        lines.append(
            f"- data: {_count(data.get('ratings'))} ratings, {_count(data.get('users'))} users, "
            f"{_count(data.get('items'))} items; fingerprint `{str(data.get('fingerprint', ''))[:23]}…`"
        )
    if split:
        lines.append(f"- {format_split(split)}")
    return lines


def format_split(split: dict[str, Any]) -> str:
    """One line for people (log and model card) instead of the split record's dict repr."""
    return (
        f"split ({split.get('method')}, seed {split.get('seed')}): train {_count(split.get('train'))}, "
        f"validation {_count(split.get('validation'))}, test {_count(split.get('test'))}; "
        f"test rows with unseen user {_count(split.get('test_unseen_user'))}, "
        f"unseen item {_count(split.get('test_unseen_item'))}"
    )


def _count(v: Any) -> str:
    return f"{v:,}" if _number(v) else "?"


def publish_run_files(store: Store, ws: Workspace, png: bytes) -> str:
    """Upload the splits and the learning-curve PNG under runs/<run_id>/ (before any promotion: whatever the
    champion pointer names has them); return the PNG's URI."""
    run_id = ws.run_id
    for name in ("train", "validation", "test"):
        store.put_file(layout.run_split(run_id, name), ws.splits / f"{name}.parquet")
        ranking = ws.root / "ranking_splits" / f"{name}.parquet"  # written when implicit models were trained
        if ranking.exists():
            store.put_file(layout.run_ranking_split(run_id, name), ranking)
    store.put_bytes(layout.run_learning_curves(run_id), png, content_type="image/png")
    return store.url_for(layout.run_learning_curves(run_id))


def write_report(store: Store, ws: Workspace, report: dict[str, Any]) -> dict[str, str]:
    """Replace runs/<run_id>/report.json in one put (also kept in the workspace)."""
    key = layout.run_report(ws.run_id)
    store.put_file(key, ws.write_json("report.json", report), content_type="application/json")
    return {"report_uri": store.url_for(key)}


def with_decision(report: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """The report with a promotion decision: report["promotion"] and the older top-level fields."""
    return {
        **report,
        "promotion": decision,
        "promoted": decision["promoted"],
        "previous_version": decision.get("incumbent_version"),
        "previous_test_rmse": decision.get("incumbent_rmse"),
        "replaced_damaged": decision.get("replaced_damaged"),
    }
