"""The store interface and what every implementation shares: errors, key checks, safe key parts, atomic
writes.

Keys are relative, "/"-separated and checked (no absolute keys, no "." / ".." or empty segments), so nothing
written through a store can land outside its root. Strings that come from data (ids, run ids) go through
safe_key_part() before they become part of a key; musicrec.store.layout names every key the store holds.
"""

from __future__ import annotations

import abc
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from musicrec.errors import StoreError
from musicrec.hashing import sha256_bytes

DEFAULT_ROOT = Path(".musicrec") / "store"
OCTET_STREAM = "application/octet-stream"
RESERVED = ".~"  # name prefix of temp and lock files; refused in keys, hidden from list()
_SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=")
_MAX_PART = 200


class MissingKeyError(StoreError):
    """The key names no object in the store."""


def safe_key_part(text: str) -> str:
    """Turn any string from data into one harmless key segment (percent-encoded; distinct inputs stay
    distinct)."""
    out = "".join(
        c if c in _SAFE_CHARS else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in text
    )
    if not out:
        return "%"
    if out.startswith("."):
        out = "%2E" + out[1:]
    if len(out) > _MAX_PART:  # keep file names short; "~" never appears otherwise, so no collisions
        out = out[: _MAX_PART - 17] + "~" + sha256_bytes(text.encode("utf-8", "surrogatepass"))[:16]
    return out


def check_key(key: str) -> str:
    """Return key unchanged if it is a safe relative key, else raise StoreError."""
    if not isinstance(key, str) or not key or len(key.encode("utf-8", "surrogatepass")) > 1024:
        raise StoreError(f"invalid store key {key!r}: must be a non-empty string of at most 1024 bytes")
    for seg in key.split("/"):
        bad = (
            not seg
            or seg in (".", "..")
            or seg.startswith(RESERVED)
            or "\\" in seg
            or any(ord(c) < 32 or ord(c) == 127 for c in seg)
        )
        if bad:
            raise StoreError(
                f"invalid store key {key!r}: absolute, empty, '.', '..', '{RESERVED}*', "
                "backslash or control characters in a segment",
                hint="build keys from fixed names and safe_key_part(...) of data values",
            )
    return key


def check_prefix(prefix: str) -> str:
    """Normalise a listing prefix: "" (whole store) or a checked folder key without a trailing slash."""
    folder = prefix.removesuffix("/")
    return check_key(folder) if folder else ""


class Store(abc.ABC):
    """Object storage rooted at `uri`. Keys are relative to the root; prefixes in list/delete_prefix are
    folders ("models/v1" matches "models/v1/x" but never "models/v10/x")."""

    uri: str

    @abc.abstractmethod
    def url_for(self, key: str) -> str:
        """Absolute URL of key (file:///... or s3://bucket/...), for links in reports."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str = OCTET_STREAM) -> None:
        """Write an object atomically: readers see the old object or the new one, never a part."""

    @abc.abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = OCTET_STREAM) -> None:
        """Upload a local file atomically (S3: multipart for large files)."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read a whole object; MissingKeyError if absent."""

    @abc.abstractmethod
    def get_file(self, key: str, dest_path: str | os.PathLike[str]) -> None:
        """Download an object to dest_path; dest_path appears complete or not at all."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """True if key names an object."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys (relative to the root) of all objects under the folder prefix, recursively."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; a missing key is not an error."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under a non-empty folder prefix."""

    @abc.abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Content and an opaque version token for put_if, or None if the key is absent."""

    @abc.abstractmethod
    def put_if(self, key: str, data: bytes, expected_token: str | None) -> str:
        """Write only if the key is absent (expected_token None) or still at expected_token; return the new
        token. Raises ConflictError when someone else got there first."""


def atomic_write(dest: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(fh) on a temp file beside dest, fsync it, then rename it over dest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f"{RESERVED}{dest.name[:80]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
