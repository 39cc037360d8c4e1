"""A run workspace addressed by URI: a local folder is used in place; an s3:// prefix (moto over HTTP) is cached
per machine, fetched once per run and sha256-checked, and what a task writes goes back to the store."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from s3server import moto_s3

from musicrec.errors import StoreError
from musicrec.pipeline.workspace import (
    RemoteWorkspace,
    cache_dir,
    drop_cache,
    is_remote,
    open_workspace,
    run_ref,
)
from musicrec.store import open_store
from musicrec.store.layout import WORKSPACE_MANIFESTS, WORKSPACE_OBJECTS


@pytest.fixture
def s3(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICREC_CACHE_DIR", str(tmp_path / "cache-a"))
    with moto_s3() as server:
        yield server


def _switch_machine(monkeypatch, tmp_path, name: str) -> None:
    """Another machine: an empty cache of its own."""
    monkeypatch.setenv("MUSICREC_CACHE_DIR", str(tmp_path / f"cache-{name}"))


def test_a_local_ref_is_the_folder_itself(tmp_path):
    ref = run_ref(str(tmp_path / "work"), "r1")
    assert not is_remote(ref) and Path(ref).is_dir()
    with open_workspace(ref) as ws:
        assert ws.root == Path(ref)
        ws.write_json("a.json", {"x": 1})
    assert (Path(ref) / "a.json").exists()
    assert not drop_cache(ref) and (Path(ref) / "a.json").exists()  # a local workspace is not a cache


def test_what_one_machine_writes_another_reads_and_models_weights_only_on_request(s3, tmp_path, monkeypatch):
    ref = run_ref(s3.uri("work"), "run-1")
    assert ref == f"s3://{s3.bucket}/work/run-1" and is_remote(ref)
    with open_workspace(ref) as ws:
        ws.write_json("splits/meta.json", {"rows": 3})
        np.save(ws.model_dir("gmf") / "weights.npy", np.arange(5))
        ws.write_json("models/gmf/history.json", [{"epoch": 1}])
        first_cache = ws.root
    assert first_cache == cache_dir(ref) and first_cache.is_relative_to(tmp_path / "cache-a")

    _switch_machine(monkeypatch, tmp_path, "b")
    with open_workspace(ref) as ws:
        assert ws.root != first_cache
        assert ws.read_json("splits/meta.json") == {"rows": 3}
        assert ws.read_json("models/gmf/history.json") == [{"epoch": 1}]  # every model's JSON comes along
        assert not (ws.root / "models/gmf/weights.npy").exists()  # its weights only when named
    with open_workspace(ref, models=["gmf"]) as ws:
        assert np.load(ws.root / "models/gmf/weights.npy").tolist() == [0, 1, 2, 3, 4]

    store = open_store(ref)
    objects = store.list(WORKSPACE_OBJECTS)
    assert (
        len(objects) == 3 and len(store.list(WORKSPACE_MANIFESTS)) == 1
    )  # one manifest per task that wrote something


def test_each_file_is_fetched_once_and_only_changes_go_back(s3, tmp_path, monkeypatch):
    ref = run_ref(s3.uri("work"), "run-2")
    with open_workspace(ref) as ws:
        (ws.root / "ratings.parquet").write_bytes(b"x" * 1000)
    _switch_machine(monkeypatch, tmp_path, "b")
    remote = RemoteWorkspace(ref)
    assert remote.pull() == ["ratings.parquet"]
    assert remote.pull() == []  # cached for the rest of the run
    assert remote.push() == []  # nothing changed: no upload, no manifest
    (remote.local / "ratings.parquet").write_bytes(b"x" * 1000)  # rewritten, same bytes
    assert remote.push() == []
    (remote.local / "report.json").write_text("{}")
    assert remote.push() == ["report.json"]
    assert len(open_store(ref).list(WORKSPACE_MANIFESTS)) == 2


def test_a_later_writer_wins_and_a_failed_task_uploads_nothing(s3, tmp_path, monkeypatch):
    ref = run_ref(s3.uri("work"), "run-3")
    with open_workspace(ref) as ws:
        ws.write_json("state.json", {"v": 1})
    _switch_machine(monkeypatch, tmp_path, "b")
    with open_workspace(ref) as ws:
        ws.write_json("state.json", {"v": 2})
    with pytest.raises(RuntimeError), open_workspace(ref) as ws:
        ws.write_json("state.json", {"v": 3})
        raise RuntimeError("the task failed")
    _switch_machine(monkeypatch, tmp_path, "c")
    with open_workspace(ref) as ws:
        assert ws.read_json("state.json") == {"v": 2}


def test_damaged_bytes_in_the_store_are_refused_with_the_file_named(s3, tmp_path, monkeypatch):
    ref = run_ref(s3.uri("work"), "run-4")
    with open_workspace(ref) as ws:
        ws.write_json("splits/train.json", {"rows": 10})
    store = open_store(ref)
    (obj,) = store.list(WORKSPACE_OBJECTS)
    store.put_bytes(obj, b"not what the manifest says")
    _switch_machine(monkeypatch, tmp_path, "b")
    with pytest.raises(StoreError, match=r"splits/train\.json") as err, open_workspace(ref):
        pass
    assert "start the run again" in err.value.hint
    assert not (cache_dir(ref) / "splits/train.json").exists()  # nothing half-trusted stays in the cache


def test_concurrent_tasks_on_one_machine_share_the_cache(s3, tmp_path):
    ref = run_ref(s3.uri("work"), "run-5")
    errors: list[BaseException] = []

    def task(k: int) -> None:
        try:
            with open_workspace(ref) as ws:
                ws.write_json(f"models/m{k}/row.json", {"k": k})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=task, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    manifest = RemoteWorkspace(ref).manifest()
    assert sorted(manifest) == [f"models/m{k}/row.json" for k in range(6)]


def test_drop_cache_removes_this_machines_copy_only(s3, tmp_path):
    ref = run_ref(s3.uri("work"), "run-6")
    with open_workspace(ref) as ws:
        ws.write_json("a.json", {})
    assert cache_dir(ref).exists()
    assert drop_cache(ref) and not cache_dir(ref).exists()
    assert not drop_cache(ref)
    with open_workspace(ref) as ws:  # the store still has the run: the next task fetches it again
        assert ws.read_json("a.json") == {}
