"""Why the threads runner shortens the GIL switch interval (tasks/runners.py fair_threads).

    .venv/bin/python benchmarks/threads_gil.py [--rows 400000]

One implicit_bpr epoch at the seed's table shape (840K users x 457K items, --rows interactions), alone and
then beside a thread that only runs Python bytecode (as Word2Vec's corpus loop or pandas do), at CPython's
default switch interval and inside fair_threads("threads"). Prints one line per setting.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def epoch_seconds(trainer) -> float:
    t = time.perf_counter()
    trainer.train_epoch()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=400_000)
    args = ap.parse_args()
    import torch

    from musicrec.implicit.train import Trainer, new_model
    from musicrec.registry import parse_config as make_config
    from tasks.runners import fair_threads

    torch.set_num_threads(1)
    nu, ni = 840_372, 456_992
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, nu, args.rows), rng.integers(0, ni, args.rows)
    cfg = make_config("implicit_bpr", {"batch_size": 4096})
    trainer = Trainer(cfg, new_model(cfg, nu, ni, u, i), u, i, ni)
    stop = threading.Event()

    def python_bound() -> None:
        x = 0
        while not stop.is_set():
            for k in range(10_000):
                x += k % 7

    for label, kind in (("default interval", "none"), ("fair_threads", "threads")):
        with fair_threads(kind):
            interval = sys.getswitchinterval()
            alone = epoch_seconds(trainer)
            stop.clear()
            other = threading.Thread(target=python_bound)
            other.start()
            try:
                beside = epoch_seconds(trainer)
            finally:
                stop.set()
                other.join()
        print(
            f"{label} ({interval * 1000:g} ms): epoch alone {alone:.2f} s, beside a Python-bound thread "
            f"{beside:.2f} s ({beside / alone:.1f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
