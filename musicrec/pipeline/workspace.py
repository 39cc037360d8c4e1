"""Where a run keeps its intermediate files: a local folder, or an object store prefix with a local cache."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from musicrec.hashing import sha256_bytes, sha256_file
from musicrec.store import RESERVED, StoreError, atomic_write, layout, safe_key_part

MODELS_DIR = "models"  # in a run's workspace folder (not the store's models/): one folder per model


def model_file(name: str, file: str) -> str:
    """models/<name>/<file>: a model's file relative to a run's workspace (a local path, not a store key)."""
    return f"{MODELS_DIR}/{name}/{file}"


def new_run_id() -> str:
    """Sortable and unique: UTC time plus random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class Workspace:
    """Paths of one run's local working files."""

    root: Path

    @classmethod
    def create(cls, work_dir: str | Path, run_id: str) -> Workspace:
        ws = cls(Path(work_dir).resolve() / run_id)
        ws.root.mkdir(parents=True, exist_ok=True)
        return ws

    @property
    def run_id(self) -> str:
        return self.root.name

    ratings = property(lambda self: self.root / "ratings.parquet")
    items = property(lambda self: self.root / "items.parquet")
    tags = property(lambda self: self.root / "tags.parquet")  # user, item, tag name: --tags runs only
    splits = property(lambda self: self.root / "splits")
    item_vectors = property(lambda self: self.root / "item_vectors.parquet")
    retrieval_vectors = property(lambda self: self.root / "retrieval_item_vectors.parquet")  # with reviews
    word_vectors = property(lambda self: self.root / "word2vec.txt")
    bundle = property(lambda self: self.root / "bundle")

    def model_dir(self, name: str) -> Path:
        path = self.root / MODELS_DIR / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, relpath: str, data: Any) -> Path:
        path = self.root / relpath
        atomic_write(path, lambda fh: fh.write(json.dumps(data, indent=2, default=str).encode()))
        return path

    def read_json(self, relpath: str) -> Any:
        return json.loads((self.root / relpath).read_text())


# --- a workspace addressed by URI ---------------------------------------------------------------------------
# A run's workspace is either a local folder (the default, as fast as ever: tasks use it in place) or a prefix
# in the object store (MUSICREC_WORK_URI=s3://bucket/work, or the flows' work_uri parameter), so that Dask
# workers that share no filesystem can run the tasks. In the store, file contents live under objects/<sha256>
# and each task that wrote files adds one manifest (manifests/<time>-<token>.json: {relpath: sha256}); later
# manifests win. Content-addressed objects make concurrent writers harmless and every download checkable. A
# task opens the workspace with open_workspace(ref): for a remote ref it gets a local cache folder (one per
# run and machine, under the Dask worker's own directory when it runs on one), filled with what it needs, each
# file fetched once per run and sha256-checked; when the task succeeds, the files it added or changed are
# uploaded and one manifest is written. drop_cache(ref) deletes the cache when the run ends.

INDEX = (
    ".~index.json"  # in the cache folder: relpath -> [sha256, size, mtime_ns] of what it holds from the store
)
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def is_remote(ref: str) -> bool:
    """True for an object-store workspace (s3://...); a plain path or file:// URI is a local folder."""
    return ref.lower().startswith("s3://")


def run_ref(work: str, run_id: str) -> str:
    """The workspace reference of one run: `work`/run_id (created when it is a local folder)."""
    if is_remote(work):
        return f"{work.rstrip('/')}/{run_id}"
    path = work.removeprefix("file://") if work.startswith("file:///") else work
    return str(Workspace.create(path, run_id).root)


def worker_cache_root(local_directory: str) -> Path:
    """The cache folder of remote workspaces inside a Dask worker's own directory."""
    return Path(local_directory) / "musicrec-cache"


def cache_root() -> Path:
    """Where remote workspaces are cached on this machine: the Dask worker's own directory when a task runs on
    one, else MUSICREC_CACHE_DIR, else the system temp folder."""
    try:
        from distributed import get_worker

        return worker_cache_root(get_worker().local_directory)
    except (ImportError, ValueError):
        pass
    from musicrec.settings import get_settings

    configured = get_settings().cache_dir
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"musicrec-cache-{os.getuid()}"


def cache_dir(ref: str, root: Path | None = None) -> Path:
    run_id = ref.rstrip("/").rsplit("/", 1)[-1]
    return (root or cache_root()) / f"{safe_key_part(run_id)}-{sha256_bytes(ref.encode())[:12]}"


@contextlib.contextmanager
def open_workspace(ref: str, models: Iterable[str] = ()) -> Iterator[Workspace]:
    """The run's workspace for one task. Local: the folder itself. Remote: the local cache, holding every file
    of the run except the weights under models/ (only those of the model folders named in `models` are
    fetched; every model's JSON files are); on success what the task added or changed goes to the store."""
    if not is_remote(ref):
        yield Workspace(Path(ref))
        return
    remote = RemoteWorkspace(ref)
    remote.pull(models)
    yield Workspace(remote.local)
    remote.push()


def drop_cache(ref: str, root: Path | None = None) -> bool:
    """Delete this machine's cache of a remote workspace (at the end of a run); True if there was one."""
    if not is_remote(ref):
        return False
    path = cache_dir(ref, root)
    existed = path.exists()
    shutil.rmtree(path, ignore_errors=True)
    return existed


IN_USE = ".in-use"  # in a local run workspace: locked (flock) by the run's process while the run lasts


@contextlib.contextmanager
def run_in(ref: str, keep: int) -> Iterator[list[str]]:
    """Hold a local run workspace for the run, and delete the workspaces beside it beyond the `keep` newest
    (by modification time) that no live run holds; yields the names deleted.

    A run's workspace holds its intermediate files (the seed's size: about 5 GB), and everything a user
    needs afterwards is in the store, so without this a nightly schedule filled the disk. The hold is an
    exclusive flock on <workspace>/.in-use, which the kernel releases however the process ends, so a
    workspace a killed run left behind is deleted in turn and one a live run holds never is. A remote
    workspace (an object-store prefix) is not touched: yields []."""
    if is_remote(ref):
        yield []
        return
    root = Path(ref)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / IN_USE, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield _prune(root.parent, keep, root.name)
        finally:
            (root / IN_USE).unlink(missing_ok=True)  # the run leaves nothing of its own behind


RUN_FOLDER = re.compile(r"(^|-)\d{8}T\d{6}Z-[0-9a-f]{6}$")  # a run id (new_run_id), maybe after "score-"


def _prune(work_dir: Path, keep: int, current: str) -> list[str]:
    """Only folders named as run workspaces are candidates: a work_dir shared with anything else keeps it."""
    others = [p for p in work_dir.iterdir() if p.is_dir() and p.name != current and RUN_FOLDER.search(p.name)]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    deleted = []
    for path in others[max(keep, 0) :]:
        if _held(path):
            continue
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path.name)
    return deleted


def _held(path: Path) -> bool:
    """True when a live run holds this workspace's .in-use lock."""
    lock = path / IN_USE
    if not lock.exists():
        return False
    with open(lock, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


class RemoteWorkspace:
    """One run's workspace in the object store and its local cache on this machine."""

    def __init__(self, ref: str) -> None:
        from musicrec.store import open_store

        self.ref, self.store, self.local = ref, open_store(ref), cache_dir(ref)
        self.local.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One pull or push at a time per cache folder (threads of this process, and other processes)."""
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(str(self.local), threading.Lock())
        with lock, open(self.local / ".~lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _index(self) -> dict[str, list[Any]]:
        path = self.local / INDEX
        return json.loads(path.read_text()) if path.exists() else {}

    def _save_index(self, index: dict[str, list[Any]]) -> None:
        atomic_write(self.local / INDEX, lambda fh: fh.write(json.dumps(index).encode()))

    def manifest(self) -> dict[str, str]:
        """relpath -> sha256 of every file of the run in the store (later manifests win)."""
        files: dict[str, str] = {}
        for key in sorted(self.store.list(layout.WORKSPACE_MANIFESTS)):
            files.update(json.loads(self.store.get_bytes(key))["files"])
        return files

    def pull(self, models: Iterable[str] = ()) -> list[str]:
        """Fetch what is missing or stale in the cache; return the relpaths fetched."""
        wanted = tuple(model_file(m, "") for m in models)
        fetched = []
        with self._locked():
            index = self._index()
            for rel, sha in self.manifest().items():
                if (
                    rel.startswith(f"{MODELS_DIR}/")
                    and not rel.endswith(".json")
                    and not rel.startswith(wanted)
                ):
                    continue  # another model's weights: not needed here
                path = self.local / rel
                if index.get(rel, [None])[0] == sha and path.exists():
                    continue
                self.store.get_file(layout.workspace_object(sha), path)
                got = sha256_file(path)
                if got != sha:
                    path.unlink(missing_ok=True)
                    raise StoreError(
                        f"{self.store.url_for(layout.workspace_object(sha))} holds other bytes than the "
                        f"workspace file {rel} it stands for (sha256 {got[:12]}..., not {sha[:12]}...)",
                        hint="the run's workspace in the store is damaged: start the run again",
                    )
                st = path.stat()
                index[rel] = [sha, st.st_size, st.st_mtime_ns]
                fetched.append(rel)
            self._save_index(index)
        return fetched

    def push(self) -> list[str]:
        """Upload the files added or changed in the cache since they were fetched or last pushed, then one
        manifest naming them; return their relpaths."""
        with self._locked():
            index, changed = self._index(), {}
            for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
                rel = path.relative_to(self.local).as_posix()
                if any(part.startswith(RESERVED) for part in rel.split("/")):
                    continue
                st, known = path.stat(), index.get(rel)
                if known and known[1:] == [st.st_size, st.st_mtime_ns]:
                    continue
                sha = sha256_file(path)
                if not known or known[0] != sha:
                    if not self.store.exists(layout.workspace_object(sha)):
                        self.store.put_file(layout.workspace_object(sha), path)
                    changed[rel] = sha
                index[rel] = [sha, st.st_size, st.st_mtime_ns]
            if changed:
                name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.json"
                self.store.put_bytes(
                    layout.workspace_manifest(name),
                    json.dumps({"files": changed}, indent=1).encode(),
                    "application/json",
                )
            self._save_index(index)
        return sorted(changed)
