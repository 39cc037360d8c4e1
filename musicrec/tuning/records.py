"""tuning/<model>.json: what a search found (best params, best and default validation value of the model's
family metric on one split: RMSE for rating models, NDCG@10 for retrieval models; the
trials, the search space, the data fingerprint). Training starts each model from its record; CLI overrides
still win. No Optuna or torch import here: the CLI and the training flow read records cheaply."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import musicrec
from musicrec.errors import ConfigError, MusicrecError
from musicrec.registry import FAMILIES, family_of, parse_config, relative_gain, search_space
from musicrec.store import MissingKeyError, Store, layout

# a search's best settings replace the defaults only when they beat them by this share of the default's
# validation value: a smaller gain is within noise, and tuned settings can cost more per epoch (a wider table,
# a smaller batch) in every later run that reuses them
MIN_GAIN = 0.001


def build_record(
    model: str,
    outcomes: list[dict[str, Any]],
    *,
    run_id: str,
    run: dict[str, Any],
    seed: int,
    seconds: float,
    budget_seconds: float,
    trials_asked: int,
) -> dict[str, Any]:
    """The stored summary of one model's search. Trial 0 is the default, so default_value is measured on
    the same split as the best; best_params is the default's when nothing beat it by MIN_GAIN (a note then
    says what the best trial reached)."""
    from musicrec.tuning.search import best_outcome

    done = [o for o in outcomes if o["state"] == "complete"]
    best = best_outcome(done) if done else None
    judge = FAMILIES[family_of(model)]
    default = next((o for o in outcomes if o["number"] == 0 and o["state"] == "complete"), None)
    note = None
    if best is not None and default is not None and best is not default:
        share = relative_gain(best["value"], default["value"], judge.bigger_is_better)
        if share < MIN_GAIN:
            note = (
                f"trial {best['number']} reached {best['value']:.6g} against the defaults' "
                f"{default['value']:.6g} ({share * 100:+.3f}%, under {MIN_GAIN * 100:g}%): "
                "the defaults are kept"
            )
            best = default
    counts = {s: sum(o["state"] == s for o in outcomes) for s in ("complete", "pruned", "failed")}
    skipped = next((o["skipped"] for o in outcomes if o.get("skipped")), None)
    return {
        "model": model,
        **({"skipped": skipped} if skipped and not done else {}),
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "code_version": musicrec.__version__,
        "data": {
            "fingerprint": run.get("fingerprint"),
            "ratings": run.get("ratings"),
            "split": run.get("split"),
        },
        "best_params": best["params"] if best else None,
        "best_trial": best["number"] if best else None,
        "metric": judge.metric,
        "bigger_is_better": judge.bigger_is_better,
        "best_value": best["value"] if best else None,
        "best_epoch": best["best_epoch"] if best else None,
        "default_value": default["value"] if default else None,
        **({"note": note} if note else {}),
        "trials": len(outcomes),
        "trials_asked": trials_asked,
        **counts,
        "stopped_by": "trials" if len(outcomes) >= trials_asked else "budget",
        "seconds": round(seconds, 1),
        "budget_seconds": budget_seconds,
        "sampler": f"TPE (seed {seed})",
        "pruner": "median of earlier trials at the same epoch",
        "search_space": {k: asdict(v) for k, v in search_space(model).items()},
        "history": outcomes,
    }


UNREACHED = "the search budget was spent before this model: its defaults until `musicrec tune` searches it"


def unreached_record(model: str, *, run_id: str, run: dict[str, Any], seed: int) -> dict[str, Any]:
    """The record of a model a first-run search did not reach: no trial, and a skipped note (UNREACHED) that
    keeps later runs from searching it until `musicrec tune` does or the data drifts (to_search)."""
    record = build_record(
        model, [], run_id=run_id, run=run, seed=seed, seconds=0.0, budget_seconds=0.0, trials_asked=0
    )
    return {**record, "skipped": UNREACHED}


def gain(record: dict[str, Any]) -> float | None:
    """How much better the tuned validation value is than the default's, in percent (positive: better)."""
    best, default = record.get("best_value"), record.get("default_value")
    if best is None or not default:
        return None
    return relative_gain(best, default, bool(record.get("bigger_is_better"))) * 100


def write_record(store: Store, record: dict[str, Any]) -> str:
    """Replace tuning/<model>.json in one put (a local store renames a finished temp file; an S3 PUT is
    atomic), so an interrupted run or a failing store leaves the previous record as it was."""
    key = layout.tuning_record(record["model"])
    store.put_bytes(key, json.dumps(record, indent=2, default=str).encode(), content_type="application/json")
    return store.url_for(key)


def read_records(
    store: Store, models: list[str], keep_skipped: bool = False
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The latest record of each model that has one, and notes on records that could not be used.
    keep_skipped: also the records of searches that ended because the model does not apply to the data
    (no settings in them: for planning the next search, never to start a fit from)."""
    found, notes = {}, []
    for model in models:
        key = layout.tuning_record(model)
        try:
            record = json.loads(store.get_bytes(key))
        except MissingKeyError:
            continue
        except (ValueError, MusicrecError) as e:
            notes.append(f"{store.url_for(key)} unreadable ({e}): {model} starts from its defaults")
            continue
        shape = _shape_problem(record)
        if shape:
            notes.append(f"{store.url_for(key)} is damaged ({shape}): {model} starts from its defaults")
            continue
        if not record.get("best_params") and record.get("skipped"):
            if keep_skipped:
                found[model] = record
            else:
                notes.append(f"{model} not searched ({record['skipped']}): {model} starts from its defaults")
            continue
        if not record.get("best_params"):
            notes.append(f"{store.url_for(key)} has no completed trial: {model} starts from its defaults")
            continue
        try:
            parse_config(model, record["best_params"])
        except ConfigError as e:
            notes.append(f"{store.url_for(key)} does not fit this version's {model} ({e}): defaults used")
            continue
        found[model] = record
    return found, notes


def _shape_problem(record: Any) -> str:
    """What makes a parsed record unusable ("" if nothing): it must be an object whose best_params is an
    object (or empty: no completed trial)."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    params = record.get("best_params")
    if params and not isinstance(params, dict):
        return f"best_params is a {type(params).__name__}, not an object of name -> value"
    return ""


def apply_records(
    records: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]], fingerprint: str | None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per model: tuned params under the user's overrides (which win), and what the report says about it:
    which params came from tuning, from which run, and whether the tuning data differs from today's."""
    merged, info = {m: dict(v) for m, v in overrides.items()}, {}
    for model, record in records.items():
        user = overrides.get(model, {})
        tuned = {k: v for k, v in record["best_params"].items() if k not in user}
        merged[model] = {**tuned, **user}
        info[model] = {
            "run_id": record.get("run_id"),
            "created_at": record.get("created_at"),
            "params": tuned,
            "overridden": sorted(set(record["best_params"]) & set(user) - {"seed"}),
            "metric": record.get("metric"),
            "best_value": record.get("best_value"),
            "default_value": record.get("default_value"),
            "fingerprint_differs": (record.get("data") or {}).get("fingerprint") != fingerprint,
        }
    return merged, info


def format_records(records: list[dict[str, Any]]) -> str:
    """Default vs tuned validation value per model, for the terminal."""
    lines = [
        "model               metric           default val   tuned val    gain   "
        "trials (pruned)   seconds  stopped by"
    ]
    for r in records:
        g = gain(r)
        lines.append(
            f"{r['model']:<19} {r.get('metric', ''):<16} {_f(r.get('default_value')):>11} "
            f"{_f(r.get('best_value')):>11} "
            f"{(f'{g:+.2f}%' if g is not None else '-'):>7}   {r['trials']:>3} ({r['pruned']:>3})       "
            f"{r['seconds']:>8.1f}  {r['stopped_by']}"
        )
    return "\n".join(lines)


def _f(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) else "-"


def trial_table(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the UI's trials table: params, validation value, epochs, pruned or not, seconds."""
    return [
        {
            "trial": o["number"],
            "state": o["state"],
            "value": _f(o.get("value")),
            "epochs": o.get("epochs"),
            "best_epoch": o.get("best_epoch"),
            "seconds": o.get("seconds"),
            "params": ", ".join(f"{k}={_short(v)}" for k, v in o["params"].items()),
        }
        for o in record["history"]
    ]


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def history_png(record: dict[str, Any]) -> bytes:
    """The optimisation history: each trial's validation value (pruned ones marked), best so far, default."""
    from musicrec.pipeline.report import figure_png, new_figure

    fig, ax = new_figure()
    sign = -1.0 if record.get("bigger_is_better") else 1.0  # drawn so that lower is better: -NDCG, RMSE
    hist = sorted(record["history"], key=lambda o: o["number"])
    for state, marker in (("complete", "o"), ("pruned", "x")):
        pts = [(o["number"], sign * o["value"]) for o in hist if o["state"] == state]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=18, label=state)
    best, run = [], float("inf")
    for o in hist:
        run = min(run, sign * o["value"]) if o["state"] == "complete" else run
        best.append((o["number"], run))
    ax.step([b[0] for b in best], [b[1] for b in best], where="post", label="best so far")
    default = record.get("default_value")
    if default is not None:
        default = sign * default
        ax.axhline(default, ls="--", color="grey", label="default")
        low = min([b[1] for b in best if b[1] < float("inf")], default=default)
        ax.set_ylim(
            low - 0.2 * (default - low) - 1e-4, default + 2 * (default - low) + 1e-3
        )  # far-off trials clip
    return figure_png(fig, ax, "trial", f"Tuning {record['model']}")


DRIFT = 2.0  # a record is searched again once the data's rating count has changed by more than this factor


def to_search(models: list[str], records: dict[str, dict[str, Any]], ratings: int) -> dict[str, str]:
    """The models `musicrec train` searches before its final fits, each with the reason: it has no usable
    record, or its record was searched on data whose rating count differs from `ratings` by more than DRIFT
    times either way (the settings of a model fitted on 10x the data rarely carry over). Models with nothing
    to search (an empty search space: closed-form kinds choose their few settings inside fit) are left
    out, and so are the models whose last search, on data of about this size, found that they do not apply
    to it (a record with a `skipped` note: searching again would only skip again)."""
    out = {}
    for model in models:
        if not search_space(model):
            continue
        record = records.get(model)
        if record is None:
            out[model] = "no usable tuning record"
            continue
        then = (record.get("data") or {}).get("ratings")
        if isinstance(then, int) and then > 0 and not (1 / DRIFT <= ratings / then <= DRIFT):
            out[model] = f"its record was searched on {then:,} rows, this data has {ratings:,}"
    return out
