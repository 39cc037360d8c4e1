"""SHA-256 helpers for artifacts: bundle metadata records these so readers can verify what they fetched."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of an in-memory payload."""
    return hashlib.sha256(data).hexdigest()


def ids_sha256(ids: Iterable[object]) -> str:
    """sha256 of an ordered id list (each id as UTF-8 text, newline-terminated): pins the id -> index map that
    an exported model bakes in, so scoring can check its tables against the model without importing torch."""
    if hasattr(ids, "to_numpy"):  # pandas: its Arrow strings iterate far slower than a numpy object array
        ids = ids.to_numpy(dtype=object)
    h, it = hashlib.sha256(), iter(ids)
    while block := list(itertools.islice(it, 65536)):  # one update per block: far faster than one per id
        h.update(("\n".join(map(str, block)) + "\n").encode("utf-8"))
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks so large models never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
