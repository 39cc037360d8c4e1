"""The training flow on a real Dask cluster whose workers share no filesystem with the flow: two worker
processes (distributed.LocalCluster(processes=True)), each in its own empty directory, with the workspace and
the store on S3 (moto over HTTP). The flow's folders are watched: workers must never open a path there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from s3server import moto_s3

from musicrec.store import open_store

pytestmark = [pytest.mark.slow, pytest.mark.flow]
QUICK = {
    "gmf_logistic": {"epochs": 3},
    "w2v_mlp": {"epochs": 2},
    "nnmf": {"epochs": 3},
    "implicit_bpr": {"epochs": 2},
}

# Run on each worker (as a string, so the workers need nothing of this test module): record every Python-level
# open() of a path under the flow machine's folder.
AUDIT = """
import sys
sys.musicrec_forbidden_opens = []
def _hook(event, args, forbidden={forbidden!r}, log=sys.musicrec_forbidden_opens):
    if event == "open" and args and isinstance(args[0], str) and args[0].startswith(forbidden):
        log.append(args[0])
sys.addaudithook(_hook)
"""


def _chdir_to_own_dir(dask_worker) -> str:
    """On a worker: make its own (empty) Dask directory the working directory."""
    os.chdir(dask_worker.local_directory)
    return os.getcwd()


def _forbidden_opens() -> list[str]:
    import sys

    return list(getattr(sys, "musicrec_forbidden_opens", ["(no audit hook on this worker)"]))


@pytest.fixture
def s3_cluster(tmp_path, monkeypatch):
    """(s3, client, flow_machine): moto S3 in the environment, then a 2-worker process cluster started after
    it (the workers inherit the endpoint and the dummy credentials, nothing else of the flow's machine)."""
    from distributed import Client, LocalCluster

    flow_machine = tmp_path / "flow-machine"
    monkeypatch.setenv("MUSICREC_CACHE_DIR", str(flow_machine / "cache"))
    with moto_s3() as s3:
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            local_directory=str(tmp_path / "workers"),
        )
        client = Client(cluster)
        try:
            dirs = client.run(_chdir_to_own_dir)
            assert len(set(dirs.values())) == 2 and not any(
                d.startswith(str(flow_machine)) for d in dirs.values()
            )
            client.run(exec, AUDIT.format(forbidden=str(flow_machine)), {})
            yield s3, client, flow_machine
        finally:
            client.close()
            cluster.close()


def _params(sample: Path, s3, client, flow_machine: Path, models: list[str], retrieval: list[str]):
    from flows.training import TrainingParams

    return TrainingParams(
        reviews=[str(sample / "reviews.json.gz")],
        meta=[str(sample / "meta.json.gz")],
        store_uri=s3.uri("store"),
        work_uri=s3.uri("work"),
        work_dir=str(flow_machine / "work"),
        models=models,
        retrieval_models=retrieval,
        task_runner="dask",
        dask_address=client.scheduler.address,
        threads=2,
        overrides={m: QUICK[m] for m in [*models, *retrieval]},
    )


def _check_champion(store, report) -> None:
    from musicrec.hashing import sha256_bytes

    assert report["promoted"], report["promotion"]
    pointer = json.loads(store.get_bytes("models/champion.json"))
    meta_bytes = store.get_bytes(f"models/{pointer['version']}/metadata.json")
    assert pointer["version"] == report["champion"]["version"] and pointer["sha256"] == sha256_bytes(
        meta_bytes
    )
    for name, digest in json.loads(meta_bytes)["files"].items():
        assert sha256_bytes(store.get_bytes(f"models/{pointer['version']}/{name}")) == digest


def test_training_on_dask_workers_that_share_no_filesystem(
    prefect_harness, small_sample, s3_cluster, tmp_path
):
    from flows.training import training

    s3, client, flow_machine = s3_cluster
    workers_dir, flow_cache = tmp_path / "workers", flow_machine / "cache"
    seen = {"worker_caches": set(), "flow_cache_removed": False}
    done = threading.Event()

    def remove_flow_cache_once_workers_start() -> None:
        """When a worker opens its own cache of the run, delete the flow's copy: any worker that relied on it
        would fail, and the flow's later steps must fetch it again from the store."""
        while not done.is_set():
            caches = {p for p in workers_dir.glob("**/musicrec-cache/*") if p.is_dir()}
            seen["worker_caches"] |= caches
            if caches and not seen["flow_cache_removed"]:
                shutil.rmtree(flow_cache)
                seen["flow_cache_removed"] = True
            time.sleep(0.05)

    pids = client.run(os.getpid)
    watcher = threading.Thread(target=remove_flow_cache_once_workers_start, daemon=True)
    watcher.start()
    try:
        report = training(
            _params(small_sample[0], s3, client, flow_machine, ["gmf_logistic", "w2v_mlp"], ["implicit_bpr"])
        )
    finally:
        done.set()
        watcher.join()

    assert seen["flow_cache_removed"] and len(seen["worker_caches"]) >= 1
    assert client.run(os.getpid) == pids  # the same two worker processes all along
    assert client.run(_forbidden_opens) == {w: [] for w in client.scheduler_info()["workers"]}
    assert not (flow_machine / "work").exists()  # the local work folder was never used
    assert not any(flow_cache.iterdir()) and not any(
        p.exists() for p in seen["worker_caches"]
    )  # caches dropped
    assert sorted(m["name"] for m in report["models"] if not m.get("members")) == ["gmf_logistic", "w2v_mlp"]
    assert [r["name"] for r in report["retrieval"]["models"]] == ["implicit_bpr"]
    _check_champion(open_store(s3.uri("store")), report)
    work = open_store(f"{s3.uri('work')}/{report['run_id']}")
    files = {k for m in work.list("manifests") for k in json.loads(work.get_bytes(m))["files"]}
    assert {
        "ratings.parquet",
        "splits/train.parquet",
        "item_vectors.parquet",
        "bundle/model.onnx",
        "models/gmf_logistic/weights.npz",
        "models/w2v_mlp/weights.npz",
    } <= files


def test_a_worker_killed_mid_training_is_survived(prefect_harness, small_sample, s3_cluster):
    from flows.training import training

    s3, client, flow_machine = s3_cluster
    killed: dict[str, object] = {}
    done = threading.Event()

    def kill_a_worker_while_it_trains() -> None:
        pids = client.run(os.getpid)
        while not done.is_set() and not killed:
            busy = {
                w: keys
                for w, keys in client.processing().items()
                if any("train_model" in k or "train-model" in k for k in keys)
            }
            if busy:
                time.sleep(1.0)  # let it get into its epochs
                worker, keys = next(iter(busy.items()))
                os.kill(pids[worker], signal.SIGKILL)
                killed.update(worker=worker, pid=pids[worker], keys=keys)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_while_it_trains, daemon=True)
    killer.start()
    try:
        report = training(_params(small_sample[0], s3, client, flow_machine, ["gmf_logistic", "nnmf"], []))
    finally:
        done.set()
        killer.join()

    assert killed, "no worker was seen training"
    assert killed["pid"] not in client.run(os.getpid).values()  # it died (its nanny started a new process)
    singles = [m for m in report["models"] if not m.get("members")]  # (and their blend, when it is one)
    assert sorted(m["name"] for m in singles) == ["gmf_logistic", "nnmf"]  # the killed task ran again
    assert all(m["best_epoch"] >= 1 for m in singles)
    _check_champion(open_store(s3.uri("store")), report)
