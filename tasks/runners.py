"""Pick the task runner for the parallel training stage from a flow parameter."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SWITCH_INTERVAL = 1e-4  # seconds; CPython's default is 5e-3


def make_task_runner(
    kind: str, dask_address: str, threads: int, n_tasks: int, at_once: int = 0
) -> tuple[Any, int]:
    """Return (runner, how many tasks run at once). threads: a thread pool of `at_once` threads (0: one per
    task, the two baseline tasks included), tasks beyond it queue in submission order; processes: Prefect's
    ProcessPoolTaskRunner with one worker per core; dask: prefect-dask on an existing cluster or a LocalCluster."""
    workers = max(1, min(threads, n_tasks))
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        pool = n_tasks + 2 if at_once <= 0 else min(at_once, n_tasks + 2)
        return ThreadPoolTaskRunner(max_workers=pool), min(pool, n_tasks)
    if kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers), workers
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address), workers
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        ), workers
    raise ValueError(f"unknown task runner {kind!r}: use threads, processes or dask")


@contextmanager
def fair_threads(kind: str) -> Iterator[None]:
    """With the threads runner, let a thread that waits for the GIL get it after 0.1 ms instead of 5 ms.

    A torch task releases the GIL around every op and must win it back for the next; beside a task that
    runs Python bytecode (Word2Vec's corpus loop, pandas), each win waited up to the 5 ms default. Measured
    on this 2-core machine: an implicit-model epoch of 2.3 s took 132 s beside a pure-Python thread, 5.2 s
    at 0.1 ms. The interval is process-wide, so it is restored when the stage ends."""
    if kind != "threads":
        yield
        return
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def release_worker_caches(workdir: str) -> None:
    """When the parallel stage ran on Dask with a remote workspace, delete every worker's cache of it (the
    stage is over; the flow's own steps keep theirs until the run ends)."""
    from musicrec.pipeline.workspace import is_remote

    if not is_remote(workdir):
        return
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner, get_dask_client

    ctx = FlowRunContext.get()
    if ctx is None or not isinstance(ctx.task_runner, DaskTaskRunner):
        return  # threads or processes: the caches are this machine's, which the flow drops at the end
    with get_dask_client() as client:
        client.run(_drop_worker_cache, workdir)


def _drop_worker_cache(workdir: str, dask_worker: Any) -> bool:
    """On one Dask worker (client.run passes it): delete its cache of the run."""
    from musicrec.pipeline.workspace import drop_cache, worker_cache_root

    return drop_cache(workdir, worker_cache_root(dask_worker.local_directory))
