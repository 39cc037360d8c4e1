"""Every key the store holds, named once. Nothing else in the code base formats a store key string.

    models/champion.json                     the champion pointer, written last, conditionally
    models/<version>/metadata.json, ...      a published bundle (immutable)
    runs/<run_id>/report.json                the run report, written after the run's other files
    runs/<run_id>/splits/<split>.parquet     the rows each model of the run was fitted and judged on
    runs/<run_id>/ranking_splits/<split>.parquet, learning_curves.png, ranking.json
    tuning/<model>.json                      what a search found; training starts from it
    scores/<run_id>/<job>/...                batch scoring outputs, a manifest written last
    manifests/<name>, objects/<sha256>       a remote run workspace (its own store, MUSICREC_WORK_URI)

Ids from data or from people (versions, run ids, model and file names) always pass through safe_key_part.
"""

from __future__ import annotations

from musicrec.store.base import safe_key_part

MODELS = "models"
RUNS = "runs"
TUNING = "tuning"
SCORES = "scores"
CHAMPION = f"{MODELS}/champion.json"
METADATA = "metadata.json"
REPORT = "report.json"
OUTPUT_MANIFEST = "_manifest.json"
WORKSPACE_MANIFESTS = "manifests"
WORKSPACE_OBJECTS = "objects"
TOP_FOLDERS = (MODELS, RUNS, TUNING, SCORES)


def _join(*parts: str) -> str:
    return "/".join(parts)


def bundle_prefix(version: str) -> str:
    """models/<version>: the folder of one published bundle."""
    return _join(MODELS, safe_key_part(version))


def bundle_file(version: str, name: str) -> str:
    """models/<version>/<name>: one file of a bundle (model.onnx, a table, metadata.json)."""
    return _join(bundle_prefix(version), safe_key_part(name))


def bundle_metadata(version: str) -> str:
    """models/<version>/metadata.json: the bundle's file list with sha256 sums, uploaded last."""
    return bundle_file(version, METADATA)


def bundle_versions(keys: list[str]) -> list[str]:
    """The (key-safe) version folders among keys listed under MODELS, sorted."""
    return sorted({k.split("/")[1] for k in keys if k.count("/") == 2 and k.startswith(f"{MODELS}/")})


def run_prefix(run_id: str) -> str:
    """runs/<run_id>: everything one training run publishes."""
    return _join(RUNS, safe_key_part(run_id))


def run_report(run_id: str) -> str:
    """runs/<run_id>/report.json."""
    return _join(run_prefix(run_id), REPORT)


def run_split(run_id: str, split: str) -> str:
    """runs/<run_id>/splits/<split>.parquet."""
    return _join(run_prefix(run_id), "splits", f"{safe_key_part(split)}.parquet")


def run_ranking_split(run_id: str, split: str) -> str:
    """runs/<run_id>/ranking_splits/<split>.parquet: the leave-last-out parts the implicit models used."""
    return _join(run_prefix(run_id), "ranking_splits", f"{safe_key_part(split)}.parquet")


def run_learning_curves(run_id: str) -> str:
    """runs/<run_id>/learning_curves.png."""
    return _join(run_prefix(run_id), "learning_curves.png")


def run_ranking(run_id: str) -> str:
    """runs/<run_id>/ranking.json: the run's ranking evaluation."""
    return _join(run_prefix(run_id), "ranking.json")


def is_run_report(key: str) -> bool:
    """True for a key of the form runs/<run_id>/report.json (as listed under RUNS)."""
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == RUNS and parts[2] == REPORT


def tuning_record(model: str) -> str:
    """tuning/<model>.json: the latest search of one model."""
    return _join(TUNING, f"{safe_key_part(model)}.json")


def scores_prefix(run_id: str, job: str) -> str:
    """scores/<run_id>/<job>: one batch scoring run's output folder."""
    return _join(SCORES, safe_key_part(run_id), safe_key_part(job))


def output_file(prefix: str, name: str) -> str:
    """<prefix>/<name>: a file of a scoring output under prefix ("" = the root of an --out store)."""
    folder = prefix.strip("/")
    return _join(folder, safe_key_part(name)) if folder else safe_key_part(name)


def output_manifest(prefix: str) -> str:
    """<prefix>/_manifest.json: what a scoring output holds, written last."""
    return output_file(prefix, OUTPUT_MANIFEST)


def workspace_manifest(name: str) -> str:
    """manifests/<name>: one push of a remote run workspace (relpath -> sha256)."""
    return _join(WORKSPACE_MANIFESTS, safe_key_part(name))


def workspace_object(sha256: str) -> str:
    """objects/<sha256>: one file of a remote run workspace, content-addressed."""
    return _join(WORKSPACE_OBJECTS, safe_key_part(sha256))
