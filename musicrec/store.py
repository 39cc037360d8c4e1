"""Artifact storage: one small interface, a local folder and an S3 implementation, chosen by URI.

Keys are relative, "/"-separated and checked (no absolute keys, no "." / ".." or empty segments), so nothing
written through a store can land outside its root. Strings that come from data (ids, run ids) go through
safe_key_part() before they become part of a key. The S3 implementation lives in musicrec.s3store and is only
imported (with boto3) when an s3:// URI is opened.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from musicrec.errors import ConflictError, StoreError
from musicrec.hashing import sha256_bytes

__all__ = [
    "ConflictError", "FileStore", "MissingKeyError", "Store", "StoreError", "atomic_write", "check_key",
    "open_store", "safe_key_part",
]

DEFAULT_ROOT = Path(".musicrec") / "store"
OCTET_STREAM = "application/octet-stream"
RESERVED = ".~"  # name prefix of temp and lock files; refused in keys, hidden from list()
_SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=")
_MAX_PART = 200
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class MissingKeyError(StoreError):
    """The key names no object in the store."""


def safe_key_part(text: str) -> str:
    """Turn any string from data into one harmless key segment (percent-encoded; distinct inputs stay
    distinct)."""
    out = "".join(c if c in _SAFE_CHARS else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
                  for c in text)
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
        bad = (not seg or seg in (".", "..") or seg.startswith(RESERVED) or "\\" in seg
               or any(ord(c) < 32 or ord(c) == 127 for c in seg))
        if bad:
            raise StoreError(f"invalid store key {key!r}: absolute, empty, '.', '..', '{RESERVED}*', "
                             "backslash or control characters in a segment",
                             hint="build keys from fixed names and safe_key_part(...) of data values")
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


def open_store(uri: str | None = None) -> Store:
    """Open the store for s3://bucket/prefix, file:///abs/path or a plain path (default ./.musicrec/store)."""
    if not uri:
        return FileStore(DEFAULT_ROOT)
    if not _URI_SCHEME.match(uri):
        return FileStore(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        from musicrec.s3store import S3Store  # boto3 costs import time; only pay it for S3

        return S3Store(uri)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StoreError(f"unsupported file URI {uri!r}",
                             hint="use file:///absolute/path (three slashes)")
        return FileStore(unquote(parts.path))
    raise StoreError(f"unsupported store URI {uri!r}",
                     hint="use s3://bucket/prefix, file:///abs/path or a plain path")


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


class FileStore(Store):
    """A folder on a local or shared file system. put_if is serialised by an fcntl lock file per key."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    @contextlib.contextmanager
    def _os_errors(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            if action == "read":
                raise MissingKeyError(f"no object at {self.url_for(key)} (key '{key}')",
                                      hint="check the key and the store URI") from exc
            raise StoreError(f"cannot {action} {self.url_for(key)}: {exc}", hint="check the path") from exc
        except OSError as exc:
            raise StoreError(f"cannot {action} {self.url_for(key)}: {exc}",
                             hint="check that the store folder is writable and has free space") from exc

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def put_bytes(self, key: str, data: bytes, content_type: str = OCTET_STREAM) -> None:
        with self._os_errors("write", key):
            atomic_write(self._path(key), lambda fh: fh.write(data))

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = OCTET_STREAM) -> None:
        dest = self._path(key)
        with self._os_errors("write", key), open(path, "rb") as src:
            atomic_write(dest, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))

    def get_bytes(self, key: str) -> bytes:
        with self._os_errors("read", key):
            return self._path(key).read_bytes()

    def get_file(self, key: str, dest_path: str | os.PathLike[str]) -> None:
        src_path = self._path(key)
        with self._os_errors("read", key), open(src_path, "rb") as src:
            atomic_write(Path(dest_path), lambda fh: shutil.copyfileobj(src, fh, 1 << 20))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        folder = check_prefix(prefix)
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED)]
            rel = Path(dirpath).relative_to(self.root)
            keys.extend((rel / f).as_posix() for f in filenames if not f.startswith(RESERVED))
        return sorted(keys)

    def delete(self, key: str) -> None:
        with self._os_errors("delete", key), contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def delete_prefix(self, prefix: str) -> None:
        folder = check_prefix(prefix)
        if not folder:
            raise StoreError(f"refusing to delete everything in {self.uri}", hint="pass a non-empty prefix")
        with self._os_errors("delete", folder):
            shutil.rmtree(self._path(folder), onerror=_ignore_missing)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.get_bytes(key)
        except MissingKeyError:
            return None
        return data, sha256_bytes(data)

    def put_if(self, key: str, data: bytes, expected_token: str | None) -> str:
        path = self._path(key)
        with self._os_errors("write", key), self._locked(path):
            current = self.read_versioned(key)
            token = current[1] if current else None
            if token != expected_token:
                raise ConflictError(
                    f"conditional write to {self.url_for(key)} lost: expected version {expected_token}, "
                    f"found {token}", hint="read the object again (read_versioned) and decide anew")
            atomic_write(path, lambda fh: fh.write(data))
        return sha256_bytes(data)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """Exclusive flock on a hidden lock file beside path (works across threads and processes)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.parent / f"{RESERVED}{sha256_bytes(path.name.encode())[:24]}.lock"
        with open(lock_path, "ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _ignore_missing(func: Callable[..., object], path: str,
                    exc_info: tuple[type, BaseException, object]) -> None:
    """rmtree error handler (Python 3.11 signature): anything already gone is fine."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
