"""The hold every flow run takes on its local workspace (musicrec.pipeline.workspace.run_in), kept apart from
flows/inputs.py so that the scoring and evaluation flows do not import the training tasks (and torch)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from musicrec.pipeline.workspace import run_in
from musicrec.settings import get_settings


@contextlib.contextmanager
def held_workspace(ref: str) -> Iterator[None]:
    """Hold the run's local workspace while the run lasts, after deleting older ones beyond
    MUSICREC_KEEP_WORK (musicrec.pipeline.workspace.run_in); says in the log what it deleted."""
    keep = get_settings().keep_work
    with run_in(ref, keep) as deleted:
        if deleted:
            from prefect import get_run_logger

            get_run_logger().info(
                f"deleted {len(deleted)} older run workspace(s) beside {ref} "
                f"(the {keep} newest are kept: MUSICREC_KEEP_WORK): {', '.join(sorted(deleted))}"
            )
        yield
