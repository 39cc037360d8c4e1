"""The scoring side of a published bundle: write its candidate tables, download and verify it, load it.

Besides model.onnx a bundle carries four small Parquet tables (no pickles), all hashed in metadata.json:
- user_history.parquet: user_id, item_id of the rows the model fitted; its users are the model's known users,
  and it tells the top-N job which items a user already rated (unless the champion pointer names a later
  run's table to serve with: SERVING_HISTORY, see Served);
- item_stats.parquet: item_id (known items, index order), n_ratings, mean_rating, title (may be empty);
- also_bought.parquet: item_id, other_id pairs from the items table (other_id restricted to known items);
- item_vectors.parquet: the run's Word2Vec item vectors (item_id, v0..vD).
The id lists are checked against the id hashes baked into the ONNX graph when the bundle is loaded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from musicrec.data.ids import contained
from musicrec.errors import StoreError
from musicrec.hashing import ids_sha256, sha256_bytes, sha256_file
from musicrec.scoring.runtime import load_session, read_metadata
from musicrec.store import MissingKeyError, Store, layout, safe_key_part
from musicrec.store.pointer import read_pointer

TABLES = ("user_history.parquet", "item_stats.parquet", "also_bought.parquet", "item_vectors.parquet")
SERVING_HISTORY = "serving_history.parquet"  # downloaded beside the bundle when the pointer names one


class BundleDamaged(StoreError):
    """The store answered, and the bundle is missing, incomplete or fails its checksums: a definite verdict,
    unlike a store that cannot be reached (a plain StoreError, which may pass)."""


def write_tables(
    dest: Path, train: pd.DataFrame, items: pd.DataFrame, item_ids: list[str], item_vectors: Path
) -> list[str]:
    """Write the candidate tables beside model.onnx; return their file names."""
    history = train[["user_id", "item_id"]].astype(str).drop_duplicates()
    history.sort_values(["user_id", "item_id"]).to_parquet(dest / TABLES[0], index=False)
    stats = train.groupby("item_id")["rating"].agg(n_ratings="size", mean_rating="mean")
    stats = stats.reindex(pd.Index(item_ids, name="item_id"))
    stats = stats.assign(n_ratings=stats["n_ratings"].fillna(0).astype(np.int64)).reset_index()
    titles = items.set_index("item_id")["title"] if "title" in items else pd.Series(dtype="str")
    stats["title"] = stats["item_id"].map(titles).fillna("").astype(str)  # for people reading a list
    stats.to_parquet(dest / TABLES[1], index=False)
    pairs = items[["item_id", "also_bought"]].explode("also_bought").dropna()
    pairs = pairs.rename(columns={"also_bought": "other_id"}).astype(str)
    # Arrow hash-set lookups: pandas' isin on Arrow strings is slow (a Python loop over the ids)
    known = pd.Series(item_ids)
    pairs = pairs[
        contained(pairs["item_id"], known)
        & contained(pairs["other_id"], known)
        & (pairs["item_id"] != pairs["other_id"]).to_numpy()
    ]
    pairs.drop_duplicates().to_parquet(dest / TABLES[2], index=False)
    shutil.copyfile(item_vectors, dest / TABLES[3])
    return list(TABLES)


@dataclass(frozen=True)
class Served:
    """What scoring downloads: a bundle version, its metadata sha256 (None for a version named by hand), and
    the pointer's serving history, if any: {"version", "sha256"} of a later run's user_history table that
    the champion serves with (a run on newer data that was not promoted refreshes it; see publish.promote)."""

    version: str
    sha256: str | None = None
    history: dict[str, str] | None = None


def resolve_version(store: Store, version: str = "") -> Served:
    """The given version, or the champion pointer's (with its sha256 and serving history); a damaged pointer
    is a PointerDamaged error saying to name a --version."""
    if version:
        return Served(version)
    pointer, _ = read_pointer(store)
    if pointer is None:
        raise StoreError(
            f"no champion at {store.url_for(layout.CHAMPION)} and no --version given",
            hint="run the training flow first, or name a published version",
        )
    return Served(pointer["version"], pointer["sha256"], pointer.get("history"))


def download_bundle(
    store: Store,
    version: str,
    workdir: Path,
    metadata_sha256: str | None = None,
    history: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Download every file named in metadata.json into workdir and check each sha256; return the metadata.
    With `history` (Served.history), also the user_history table it names, checked, as SERVING_HISTORY.

    Files land under a temporary name and are renamed only after the whole bundle checked out, so a refused
    bundle leaves nothing behind in workdir.
    """
    meta_url = store.url_for(layout.bundle_metadata(version))
    try:
        meta_bytes = store.get_bytes(layout.bundle_metadata(version))
    except MissingKeyError as e:
        raise BundleDamaged(
            f"no bundle metadata at {meta_url}", hint="check the version name and the store URI"
        ) from e
    if metadata_sha256 is not None and sha256_bytes(meta_bytes) != metadata_sha256:
        raise BundleDamaged(
            f"{meta_url} does not match the champion pointer's sha256",
            hint="the bundle was modified after publishing; republish or repoint the champion",
        )
    meta = _parse_metadata(meta_bytes, meta_url)
    staging = workdir / f".incoming-{sha256_bytes(version.encode())[:12]}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for name, expected in meta["files"].items():
            _fetch_checked(store, layout.bundle_file(version, name), staging / name, expected)
        if history:
            key = layout.bundle_file(history["version"], TABLES[0])
            _fetch_checked(store, key, staging / SERVING_HISTORY, history["sha256"], by_pointer=True)
        for name in meta["files"]:
            (staging / name).replace(workdir / name)
        if history:
            (staging / SERVING_HISTORY).replace(workdir / SERVING_HISTORY)
        else:
            (workdir / SERVING_HISTORY).unlink(missing_ok=True)
        (workdir / "metadata.json").write_bytes(meta_bytes)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def _parse_metadata(data: bytes, where: str) -> dict[str, Any]:
    """metadata.json as a dict whose file names are plain names: they become local paths, and a name such as
    "../../x" or "a/b" from a tampered store must not write outside the download folder."""
    try:
        meta = json.loads(data)
    except ValueError as e:
        raise BundleDamaged(
            f"{where} is not valid JSON: {e}", hint="the bundle is damaged; republish it"
        ) from e
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise BundleDamaged(
            f"{where} has no 'files' table of name -> sha256", hint="the bundle is damaged; republish it"
        )
    unsafe = [n for n in files if not isinstance(n, str) or n == "metadata.json" or safe_key_part(n) != n]
    if unsafe:
        raise BundleDamaged(
            f"{where} names unsafe bundle file(s) {unsafe}",
            hint="bundle files are plain names such as model.onnx; the bundle was tampered with",
        )
    return meta


def _fetch_checked(store: Store, key: str, dest: Path, expected: str, by_pointer: bool = False) -> None:
    """Download key to dest and check its sha256. by_pointer: the champion pointer's serving history, whose
    failure is said as such (the champion's own bundle can still be scored by its version)."""
    what = "the serving history named by the champion pointer, " if by_pointer else "bundle file "
    hint = (
        "score the champion's own bundle with --version, or run musicrec train again to refresh it"
        if by_pointer
        else "the bundle is incomplete; republish it"
    )
    try:
        store.get_file(key, dest)
    except MissingKeyError as e:
        raise BundleDamaged(f"{what}{store.url_for(key)} is missing", hint=hint) from e
    if sha256_file(dest) != expected:
        raise BundleDamaged(
            f"{what}{store.url_for(key)} fails its sha256 check",
            hint=hint if by_pointer else "the file is corrupt or was replaced; republish the bundle",
        )


@dataclass
class Bundle:
    """A verified, loaded bundle: the onnxruntime session plus the candidate tables."""

    directory: Path
    meta: dict[str, Any]
    session: Any
    users: pd.Index  # known users, sorted (the model's index order)
    items: pd.Index  # known items, the model's index order
    history: pd.DataFrame  # user_id, item_id: the bundle's rows, or the pointer's serving history
    item_stats: pd.DataFrame
    also_bought: pd.DataFrame
    vectors: pd.DataFrame


def load_bundle(directory: Path, threads: int = 1) -> Bundle:
    """Load a downloaded bundle; refuse one whose tables do not match the ids baked into the model."""
    meta = json.loads((directory / "metadata.json").read_text())
    missing = [t for t in TABLES if t not in meta["files"]]
    if missing:
        raise StoreError(
            f"bundle {meta.get('version')} has no {missing}",
            hint="it was published before scoring tables existed; retrain and republish",
        )
    session = load_session(directory / "model.onnx", threads=threads)
    own = pd.read_parquet(directory / TABLES[0])
    serving = directory / SERVING_HISTORY  # a later run's data, when the pointer names one (Served.history)
    history = pd.read_parquet(serving) if serving.exists() else own
    stats = pd.read_parquet(directory / TABLES[1])
    users = pd.Index(np.sort(own["user_id"].unique()))
    items = pd.Index(stats["item_id"])
    onnx_meta = read_metadata(session)
    for what, ids in (("user", users), ("item", items)):
        if onnx_meta.get(f"musicrec.{what}_ids_sha256") != ids_sha256(ids):
            raise StoreError(
                f"bundle {meta.get('version')}: the {what} table does not match the model's ids",
                hint="the bundle is inconsistent; republish it",
            )
    return Bundle(
        directory,
        meta,
        session,
        users,
        items,
        history,
        stats,
        pd.read_parquet(directory / TABLES[2]),
        pd.read_parquet(directory / TABLES[3]),
    )
