"""Atomic job outputs: chunk files under a fresh name, then a manifest written last.

Readers go through the manifest (_manifest.json) only, so they see either the previous complete output or the
new complete one, never a half-written set. A re-run writes new part names, swaps the manifest in one put, and
then deletes the parts the old manifest listed.
"""

from __future__ import annotations

import io
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from musicrec.errors import StoreError
from musicrec.hashing import sha256_bytes, sha256_file
from musicrec.store import Store
from musicrec.store.layout import output_file, output_manifest

FORMATS = ("parquet", "csv")


def commit_parts(store: Store, prefix: str, parts: list[Path], summary: dict[str, Any]) -> dict[str, Any]:
    """Upload the part files, then the manifest (last); remove
    parts of any previous output. Returns the manifest.

    summary["format"] == "csv" turns the Parquet parts into ONE CSV file (a fresh name per run, like the
    parts, so the manifest never names a file that is being replaced); the manifest's "output" is that file's
    URL."""
    old = read_manifest(store, prefix)
    token = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    fmt = summary.get("format", "parquet")
    if fmt not in FORMATS:
        raise StoreError(f"unknown output format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    if fmt == "csv" and parts:
        parts = [_as_one_csv(parts, parts[0].parent / f"scores-{token}.csv")]
        names = [parts[0].name]
    else:
        names = [f"part-{token}-{k:05d}.parquet" for k in range(len(parts))]
    for name, path in zip(names, parts, strict=False):
        store.put_file(output_file(prefix, name), path)
    manifest = {
        "parts": names,
        "sha256": {n: sha256_file(p) for n, p in zip(names, parts, strict=False)},
        "created_at": datetime.now(UTC).isoformat(),
        **summary,
    }
    store.put_bytes(output_manifest(prefix), json.dumps(manifest, indent=2, default=str).encode())
    for name in (old or {}).get("parts", []):
        if name not in names:
            store.delete(output_file(prefix, name))
    where = output_file(prefix, names[0]) if fmt == "csv" and names else prefix.strip("/")
    output = store.url_for(where) if where else store.uri
    return {**manifest, "uri": store.url_for(output_manifest(prefix)), "output": output}


def _as_one_csv(parts: list[Path], dest: Path) -> Path:
    """Concatenate Parquet parts into one CSV (header once), part by part to bound memory."""
    with dest.open("w", encoding="utf-8", newline="") as fh:
        for k, part in enumerate(parts):
            pd.read_parquet(part).to_csv(fh, header=k == 0, index=False)
    return dest


def read_manifest(store: Store, prefix: str) -> dict[str, Any] | None:
    key = output_manifest(prefix)
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def read_output(store: Store, prefix: str) -> pd.DataFrame:
    """The complete output named by the manifest, parts checked against their sha256."""
    manifest = read_manifest(store, prefix)
    if manifest is None:
        raise StoreError(
            f"no complete scoring output at {store.url_for(output_manifest(prefix))}",
            hint="the job has not finished (or failed); run it again",
        )
    frames = []
    for name in manifest["parts"]:
        data = store.get_bytes(output_file(prefix, name))
        if sha256_bytes(data) != manifest["sha256"][name]:
            raise StoreError(f"{store.url_for(output_file(prefix, name))} fails its sha256 check")
        buf = io.BytesIO(data)
        ids = {"user_id": str, "item_id": str}
        frames.append(
            pd.read_csv(buf, dtype=ids, keep_default_na=False)
            if name.endswith(".csv")
            else pd.read_parquet(buf)
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
