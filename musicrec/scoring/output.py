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

MANIFEST = "_manifest.json"


def _key(prefix: str, name: str) -> str:
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def commit_parts(store: Store, prefix: str, parts: list[Path], summary: dict[str, Any]) -> dict[str, Any]:
    """Upload the part files, then the manifest (last); remove parts of any previous output. Returns the manifest."""
    old = read_manifest(store, prefix)
    token = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    names = [f"part-{token}-{k:05d}.parquet" for k in range(len(parts))]
    for name, path in zip(names, parts):
        store.put_file(_key(prefix, name), path)
    manifest = {"parts": names, "sha256": {n: sha256_file(p) for n, p in zip(names, parts)},
                "created_at": datetime.now(UTC).isoformat(), **summary}
    store.put_bytes(_key(prefix, MANIFEST), json.dumps(manifest, indent=2, default=str).encode())
    for name in (old or {}).get("parts", []):
        if name not in names:
            store.delete(_key(prefix, name))
    return {**manifest, "uri": store.url_for(_key(prefix, MANIFEST))}


def read_manifest(store: Store, prefix: str) -> dict[str, Any] | None:
    key = _key(prefix, MANIFEST)
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def read_output(store: Store, prefix: str) -> pd.DataFrame:
    """The complete output named by the manifest, parts checked against their sha256."""
    manifest = read_manifest(store, prefix)
    if manifest is None:
        raise StoreError(f"no complete scoring output at {store.url_for(_key(prefix, MANIFEST))}",
                         hint="the job has not finished (or failed); run it again")
    frames = []
    for name in manifest["parts"]:
        data = store.get_bytes(_key(prefix, name))
        if sha256_bytes(data) != manifest["sha256"][name]:
            raise StoreError(f"{store.url_for(_key(prefix, name))} fails its sha256 check")
        frames.append(pd.read_parquet(io.BytesIO(data)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
