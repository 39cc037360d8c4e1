"""Read-only views of a store for people: runs, the champion, one user's recommendations, a scoring summary.

No Prefect: these answer in about a second from the store alone (musicrec runs / champion / recommend).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from musicrec.errors import StoreError, UsageError
from musicrec.store import Store, layout
from musicrec.store.pointer import read_pointer


def read_json(store: Store, key: str) -> dict[str, Any]:
    try:
        return json.loads(store.get_bytes(key))
    except ValueError as e:
        raise StoreError(f"{store.url_for(key)} is not valid JSON: {e}", hint="the file is damaged") from None


def current_version(store: Store) -> str | None:
    """The champion pointer's version, or None when nothing was promoted yet."""
    pointer, _ = read_pointer(store)
    return pointer["version"] if pointer else None


def promotion(report: dict[str, Any]) -> dict[str, Any]:
    """The run's promotion decision: report["promotion"], else rebuilt from the older top-level fields."""
    if isinstance(report.get("promotion"), dict):
        return report["promotion"]
    promoted = bool(report.get("promoted"))
    previous = report.get("previous_test_rmse")
    reason = (
        "no earlier champion"
        if promoted and previous is None
        else "at least as good as the champion on this run's test rows"
        if promoted
        else "nothing published"
        if not report.get("champion", {}).get("version")
        else "worse than the champion on this run's test rows"
    )
    name = (report.get("champion") or {}).get("name")
    challenger = next((m.get("test_rmse") for m in report.get("models", []) if m.get("name") == name), None)
    return {
        "promoted": promoted,
        "reason": reason,
        "incumbent_rmse": previous,
        "challenger_rmse": challenger,
        "incumbent_version": report.get("previous_version"),
    }


def mark_champion(result: dict[str, Any], current: str | None) -> dict[str, Any]:
    """A ranking evaluation result that says whether its bundle is the current champion. ranking_eval labels
    the evaluated model's row "champion (...)" whatever it is; any other bundle is relabelled."""
    is_champion = current is not None and result.get("version") == current
    label = f"evaluated ({result.get('model')}, not the champion)"
    methods = [
        {**m, "method": label} if not is_champion and str(m.get("method", "")).startswith("champion (") else m
        for m in result.get("methods", [])
    ]
    return {**result, "methods": methods, "is_champion": is_champion, "current_champion": current}


def promotion_summary(report: dict[str, Any]) -> str:
    """The training run's champion and promotion decision, for `musicrec train`."""
    champion, decision = report["champion"], promotion(report)
    if not champion.get("version"):
        return (
            f"champion: none ({decision.get('reason') or 'no model beat the bias baseline on validation'}; "
            "nothing published)"
        )
    verdict = "promoted to champion" if decision["promoted"] else "published, not promoted"
    line = f"{champion['name']} ({champion['version']}): {verdict}: {decision.get('reason', '')}"
    if champion.get("kind") == "retrieval":
        line += (
            "\n  a retrieval-only bundle (implicit feedback): score --pairs returns relevance_score, "
            "not ratings"
        )
    elif decision.get("incumbent_version"):
        rows = f" on {decision['compared_rows']:,} rows" if decision.get("compared_rows") else ""
        line += (
            f"\n  compared with {decision['incumbent_version']}{rows}: incumbent RMSE "
            f"{_num(decision.get('incumbent_rmse'))}, challenger RMSE {_num(decision.get('challenger_rmse'))}"
        )
    if decision.get("history_from"):
        line += (
            f"\n  {decision['incumbent_version']} stays champion and now serves with this run's data: its "
            "lists exclude what each user rated here, and users new in this data get lists from their items"
        )
    if report.get("replaced_damaged"):
        line += (
            "\nwarning: the previous champion was damaged and has been replaced: "
            f"{report['replaced_damaged']}"
        )
    return line


def list_runs(store: Store) -> list[dict[str, Any]]:
    """One row per runs/<run_id>/report.json, oldest first (run ids sort by time)."""
    current = current_version(store)
    rows = []
    for key in store.list(layout.RUNS):
        if not layout.is_run_report(key):
            continue
        parts = key.split("/")
        report = read_json(store, key)
        champion = report.get("champion") or {}
        metric, row = _champion_row(report, champion.get("name"))
        decision = promotion(report)
        rows.append(
            {
                "run_id": report.get("run_id", parts[1]),
                "champion": champion.get("name"),
                "version": champion.get("version"),
                "metric": metric,
                "val": row.get(f"val_{metric}"),
                "test": row.get(f"test_{metric}"),
                "promoted": decision["promoted"],
                "reason": decision.get("reason", ""),
                "current": bool(current) and champion.get("version") == current,
            }
        )
    return rows


def _champion_row(report: dict[str, Any], name: str | None) -> tuple[str, dict[str, Any]]:
    """The champion's metric ("rmse" for a rating champion, "ndcg_at_10" for the retrieval champion of an
    implicit run) and its leaderboard row ({} when the run has no champion)."""
    rating = next((m for m in report.get("models", []) if m.get("name") == name), None)
    if rating is not None or name is None:
        return "rmse", rating or {}
    ranked = (report.get("retrieval") or {}).get("models", [])
    return "ndcg_at_10", next((m for m in ranked if m.get("name") == name), {})


RUN_METRICS = {"rmse": "RMSE", "ndcg_at_10": "NDCG@10"}


def format_runs(rows: list[dict[str, Any]], store_uri: str) -> str:
    if not rows:
        return f"no runs in {store_uri} yet (musicrec train writes runs/<run_id>/report.json)"
    head = f"{'run':<24}{'champion':<20}{'metric':<9}{'val':>8}{'test':>8}  promoted"
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = " (current champion)" if r["current"] else ""
        decision = ("yes" if r["promoted"] else "no") + (f": {r['reason']}" if r["reason"] else "")
        lines.append(
            f"{r['run_id']:<24}{r['champion'] or '-':<20}{RUN_METRICS[r['metric']]:<9}{_num(r['val'], 8)}"
            f"{_num(r['test'], 8)}  {decision}{mark}"
        )
    lines.append("RMSE: lower is better (rating champions); NDCG@10: higher is better (implicit runs)")
    return "\n".join(lines)


def champion_info(store: Store) -> dict[str, Any]:
    """The champion pointer merged with its bundle's metadata.json (model, metrics, data, created_at)."""
    pointer, _ = read_pointer(store)
    if pointer is None:
        raise UsageError(f"no champion in {store.uri} yet", hint="musicrec train publishes one")
    meta_key = layout.bundle_metadata(pointer["version"])
    meta = read_json(store, meta_key) if store.exists(meta_key) else {}
    return {
        "pointer": pointer,
        "metadata": meta,
        "uri": store.url_for(layout.bundle_prefix(pointer["version"])),
    }


def format_champion(info: dict[str, Any]) -> str:
    p, m = info["pointer"], info["metadata"]
    metrics = m.get("metrics", {})
    lines = [
        f"champion: {p['version']} ({m.get('model', 'bundle metadata missing')})",
        f"  run: {m.get('run_id', '-')}, created {m.get('created_at', '-')}, "
        f"promoted {p.get('updated_at', '-')}",
    ]
    if m.get("kind") == "retrieval":
        lines += [
            f"  retrieval only (implicit feedback): val NDCG@10 {_num(metrics.get('val_ndcg_at_10'))}, "
            f"test NDCG@10 {_num(metrics.get('test_ndcg_at_10'))}; scores are relevance, not ratings",
            f"  trained on {m.get('data', {}).get('interactions', 0):,} interactions; bundle {info['uri']}",
        ]
    else:
        lines += [
            f"  val RMSE {_num(metrics.get('val_rmse'))}, test RMSE {_num(metrics.get('test_rmse'))}"
            f", test RMSE on the rows it was promoted on {_num(p.get('test_rmse'))}",
            f"  trained on {m.get('data', {}).get('ratings', 0):,} ratings; bundle {info['uri']}",
        ]
    if p.get("history"):
        lines.append(
            f"  serves with the user history of {p['history']['version']} (a later run, not promoted; "
            f"since {p['history'].get('updated_at', '-')}): lists exclude what users rated there"
        )
    if p.get("replaced_damaged"):
        lines.append(
            f"  replaced the damaged {p['replaced_damaged']['version']}: {p['replaced_damaged']['reason']}"
        )
    return "\n".join(lines)


def recommend(store: Store, user_id: str, top_n: int, version: str = "") -> tuple[str, pd.DataFrame]:
    """(version, one user's top-n list) from a verified bundle; an unknown user gets the popular fallback."""
    from musicrec.scoring.bundle import download_bundle, load_bundle, resolve_version
    from musicrec.scoring.candidates import build_candidate_index
    from musicrec.scoring.rank import rank_users

    served = resolve_version(store, version)
    version = served.version
    with tempfile.TemporaryDirectory(prefix="musicrec-recommend-") as tmp:
        download_bundle(store, version, Path(tmp), served.sha256, served.history)
        bundle = load_bundle(Path(tmp), threads=1)
        out = rank_users(bundle, build_candidate_index(bundle), [user_id], top_n)
        stats = bundle.item_stats.set_index("item_id")
    cols = [c for c in ("n_ratings", "mean_rating", "title") if c in stats]  # bundles before titles: no title
    out = out.join(stats[cols], on="item_id")
    return version, out


def format_recommendations(user_id: str, version: str, out: pd.DataFrame) -> str:
    known = not (out["source"] == "fallback").all()
    head = (
        f"top {len(out)} for {user_id} from {version}"
        if known
        else f"{user_id} is not known to {version}: the popular, diverse fallback list"
    )
    lines = [head, f"{'rank':>4}  {'item':<16}{'score':>7}  {'source':<12}{'ratings':>8} {'mean':>9}  title"]
    for r in out.itertuples():
        title = str(getattr(r, "title", "") or "")[:60]
        lines.append(
            f"{r.rank:>4}  {r.item_id:<16}{r.score:>7.3f}  {r.source:<12}{r.n_ratings:>8} "
            f"{r.mean_rating:>9.2f}  {title}"
        )
    if "title" not in out:
        lines.append("(this bundle predates titles: items are shown by id)")
    return "\n".join(lines)


def _num(v: Any, width: int = 0) -> str:
    return f"{v:>{width}.4f}" if isinstance(v, (int, float)) else f"{'-':>{width}}"
