"""A folder on a local or shared file system as a Store."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from musicrec.errors import ConflictError, StoreError
from musicrec.hashing import sha256_bytes
from musicrec.store.base import (
    OCTET_STREAM,
    RESERVED,
    MissingKeyError,
    Store,
    atomic_write,
    check_key,
    check_prefix,
)


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
                raise MissingKeyError(
                    f"no object at {self.url_for(key)} (key '{key}')", hint="check the key and the store URI"
                ) from exc
            raise StoreError(f"cannot {action} {self.url_for(key)}: {exc}", hint="check the path") from exc
        except OSError as exc:
            raise StoreError(
                f"cannot {action} {self.url_for(key)}: {exc}",
                hint="check that the store folder is writable and has free space",
            ) from exc

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
                    f"found {token}",
                    hint="read the object again (read_versioned) and decide anew",
                )
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


def _ignore_missing(
    func: Callable[..., object], path: str, exc_info: tuple[type, BaseException, object]
) -> None:
    """rmtree error handler (Python 3.11 signature): anything already gone is fine."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
