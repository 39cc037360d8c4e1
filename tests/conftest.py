"""Shared fixtures: tiny seeded synthetic tables, and isolation of Prefect and AWS settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synth import tiny_tables  # noqa: E402

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def tiny():
    """(ratings, items) canonical tables: 300 users, 120 items, 4,000 ratings with latent structure."""
    return tiny_tables()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One real (temporary) Prefect server for every flow test: ~13 s to start, so session-scoped."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory):
    """The generator's small sample (about 20K ratings) in the Amazon 2018 format."""
    from musicrec.data.generate import generate_sample

    out = tmp_path_factory.mktemp("small_sample")
    card = generate_sample(out, scale="small", seed=0)
    return out, card
