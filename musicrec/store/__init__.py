"""Artifact storage: one small interface, a local folder and an S3 implementation, chosen by URI.

base: the Store interface, errors, key checks, safe_key_part, atomic_write. local: FileStore. s3: S3Store (the
only module importing boto3, loaded when an s3:// URI is opened). layout: every key the store holds.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from musicrec.errors import ConflictError, StoreError
from musicrec.store.base import (
    DEFAULT_ROOT,
    OCTET_STREAM,
    RESERVED,
    MissingKeyError,
    Store,
    atomic_write,
    check_key,
    check_prefix,
    safe_key_part,
)
from musicrec.store.local import FileStore

__all__ = [
    "DEFAULT_ROOT",
    "OCTET_STREAM",
    "RESERVED",
    "ConflictError",
    "FileStore",
    "MissingKeyError",
    "Store",
    "StoreError",
    "atomic_write",
    "check_key",
    "check_prefix",
    "open_store",
    "safe_key_part",
]

_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def open_store(uri: str | None = None) -> Store:
    """Open the store for s3://bucket/prefix, file:///abs/path or a plain path (default ./.musicrec/store)."""
    if not uri:
        return FileStore(DEFAULT_ROOT)
    if not _URI_SCHEME.match(uri):
        return FileStore(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        from musicrec.store.s3 import S3Store  # boto3 costs import time; only pay it for S3

        return S3Store(uri)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StoreError(
                f"unsupported file URI {uri!r}", hint="use file:///absolute/path (three slashes)"
            )
        return FileStore(unquote(parts.path))
    raise StoreError(
        f"unsupported store URI {uri!r}", hint="use s3://bucket/prefix, file:///abs/path or a plain path"
    )
