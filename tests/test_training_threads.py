"""The threads task runner trains several models at once in one process: results must not depend on it."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from musicrec.data.split import split_ratings
from musicrec.rating.data import prepare_data
from musicrec.rating.train import fit_model

NAMES = ["gmf", "nnmf", "mlp", "gmf_logistic"]


@pytest.fixture(scope="module")
def data(tiny):
    return prepare_data(split_ratings(tiny[0], seed=0))


def test_concurrent_training_equals_sequential(data):
    overrides = {"epochs": 3, "patience": 3}
    alone = {n: fit_model(n, data, overrides).history for n in NAMES}
    with ThreadPoolExecutor(len(NAMES)) as pool:
        together = dict(
            zip(NAMES, pool.map(lambda n: fit_model(n, data, overrides).history, NAMES), strict=False)
        )
    for name in NAMES:
        assert [h["val_rmse"] for h in together[name]] == [h["val_rmse"] for h in alone[name]], name


def test_initial_weights_do_not_depend_on_what_other_threads_build():
    """nn.Embedding draws its first weights from torch's global generator. Baselines built in another
    thread (the flow's evaluate-baselines task runs beside the models) once shifted the draws of a model
    being built: gmf's seed-size results changed by 1e-4 from run to run."""
    import hashlib
    import threading

    from musicrec.rating.baselines import fit_global_mean
    from musicrec.rating.build import build_model, model_config

    def built() -> str:
        model = build_model("gmf", 200_000, 50_000, 4.0, model_config("gmf", {"seed": 3}))
        return hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()

    alone = built()
    stop = threading.Event()

    big = SimpleNamespace(
        users=SimpleNamespace(size=200_000),
        items=SimpleNamespace(size=50_000),
        global_mean=4.0,
        rating_range=(1.0, 5.0),
    )
    built_baselines = []

    def keep_building_baselines() -> None:
        while not stop.is_set():
            fit_global_mean(big)
            built_baselines.append(1)

    other = threading.Thread(target=keep_building_baselines)
    other.start()
    try:
        together = [built() for _ in range(8)]
    finally:
        stop.set()
        other.join()
    assert together == [alone] * 8
    assert (
        built_baselines
    )  # the other thread really built baselines meanwhile (it used to die at once, silently)


@pytest.mark.parametrize("kind", ["threads", "processes", "dask"])
def test_fair_threads_shortens_the_gil_switch_interval_only_for_the_threads_runner_and_restores_it(kind):
    import sys

    from tasks.runners import SWITCH_INTERVAL, fair_threads

    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), fair_threads(kind):
        inside = sys.getswitchinterval()
        raise RuntimeError("a task failed")
    assert sys.getswitchinterval() == before
    assert inside == pytest.approx(min(before, SWITCH_INTERVAL) if kind == "threads" else before)
    assert before > SWITCH_INTERVAL  # CPython's 5 ms default: the setting changes something


ARENAS_SCRIPT = """
import ctypes, sys, threading
from musicrec.fit.threads import limit_malloc_arenas
print(limit_malloc_arenas())
barrier = threading.Barrier(8)
def task():  # eight task threads alive at once, each allocating
    kept = [bytearray(1000) for _ in range(200)]
    barrier.wait()
threads = [threading.Thread(target=task) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and malloc_stats")
@pytest.mark.parametrize(("env", "arenas"), [({}, 2), ({"MALLOC_ARENA_MAX": "4"}, 4)])
def test_a_run_caps_malloc_arenas_unless_the_user_chose_a_cap(env, arenas):
    """Eight threads alive at once get an arena each (and the main thread's) by glibc's default; after
    limit_malloc_arenas they share two; a MALLOC_ARENA_MAX of the user's is left to glibc."""
    run_env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT], env=run_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("False" if env else "True")
    assert out.stderr.count("Arena ") == arenas, out.stderr
    no_cap = ARENAS_SCRIPT.replace("print(limit_malloc_arenas())", "print(False)")
    out = subprocess.run([sys.executable, "-c", no_cap], env=run_env, capture_output=True, text=True)
    uncapped = out.stderr.count("Arena ")  # glibc's own limit: 8 per core (4 where the user set 4)
    assert uncapped == 4 if env else uncapped > 2, out.stderr
