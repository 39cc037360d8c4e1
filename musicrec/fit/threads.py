"""One BLAS thread while any of musicrec's side-by-side workers runs (implicit fits, ranking chunks).

The workers run on the threads of one process (the flow's task runner), and a BLAS library's thread count is
process-wide: each worker spawning BLAS threads under itself oversubscribes the cores, and a worker that
restored the old count on finishing would hand the ones still running their spinning BLAS threads back. So the
limit is counted: set when the first worker enters, lifted when the last one leaves.

threadpoolctl limits only the libraries already loaded. numba's np.dot (the fused implicit step) calls scipy's
OpenBLAS, which numba loads at a kernel's first call, inside the first fit: it is loaded here first. Without
it, the first fit of a process trained beside two spinning BLAS threads, with markedly slower epochs (hinge at
the seed's shape; see benchmarks/RESULTS.md)."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from threadpoolctl import threadpool_limits

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
ARENAS = 2
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"users": 0, "limiter": None}


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Every loaded BLAS (scipy's included) at one thread until the last concurrent user leaves."""
    with _LOCK:
        if _STATE["users"] == 0:
            import scipy.linalg.cython_blas  # noqa: F401 (loads the library numba's np.dot uses)

            _STATE["limiter"] = threadpool_limits(limits=1, user_api="blas")
        _STATE["users"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["users"] -= 1
            if _STATE["users"] == 0:
                _STATE["limiter"].restore_original_limits()
                _STATE["limiter"] = None


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run with n torch intra-op threads and one BLAS thread (one_blas_thread), restoring the torch threads.

    BLAS: the fused step's small matrix products (a batch x 64 x 50) go to scipy's OpenBLAS. With its
    default of one thread per core the calls of the tasks training side by side (threads of one process)
    queued behind one another (epochs at the seed's size got much slower in the flow), and even alone two
    threads spent more on waking each other than they saved (see benchmarks/RESULTS.md)."""
    import torch  # here: scoring limits BLAS threads without importing torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        with one_blas_thread():
            yield
    finally:
        torch.set_num_threads(old)


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; True when the cap was set.

    glibc gives a thread that first allocates an arena of its own, up to 8 per core, and what a thread frees
    stays in its arena for that arena's next allocations. The flow's tasks run side by side on threads of one
    process, so memory one task freed could sit in an arena the next task never allocates from. At the
    seed's size the cap's effect on the nightly run's peak was within its run-to-run spread (see
    benchmarks/RESULTS.md); it is kept as a bound. The CLI calls this first, and a run's flow before its
    tasks start (a flow a worker runs); arenas made before stay. MALLOC_ARENA_MAX in the environment (the
    user's own choice) wins, and a C library without mallopt leaves everything as it is."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without the symbol)
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
