"""Shared fixtures: tiny seeded synthetic tables, and isolation of Prefect and AWS settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synth import tiny_tables

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# `musicrec train` searches the models that have no tuning record first (learnt settings by default); the
# tests that are not about that search train from the defaults, as --no-tuning would, to stay quick
os.environ.setdefault("MUSICREC_SEARCH_BUDGET", "0")


@pytest.fixture(scope="session")
def tiny():
    """(ratings, items) canonical tables: 300 users, 120 items, 4,000 ratings with latent structure."""
    return tiny_tables()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One real (temporary) Prefect server for every flow test: slow to start, so session-scoped."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness) -> str:
    """The session server's API URL, for `python -m musicrec` children whose test is not about the temporary
    server a command starts on its own (test_fresh_home, test_server_lifetime and test_interrupts are): each
    such child would otherwise spend most of its time starting and migrating a server of its own."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness set no API URL"
    return url


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory):
    """The generator's small sample (about 20K ratings) in the Amazon 2018 format."""
    from musicrec.data.generate import generate_sample

    out = tmp_path_factory.mktemp("small_sample")
    card = generate_sample(out, scale="small", seed=0)
    return out, card


@pytest.fixture(scope="session")
def quick_champion(prefect_harness, small_sample, tmp_path_factory):
    """(store_uri, root, report) of one quick training run (gmf_logistic, 3 epochs) shared by the scoring and
    evaluation tests: on this sparse sample plain dot products barely beat the bias baseline, the logistic
    link does, so a champion is published. Tests that modify the store must restore it."""
    from flows.training import TrainingParams, training

    sample, _ = small_sample
    root = tmp_path_factory.mktemp("quick_champion")
    store_uri = (root / "store").as_uri()
    report = training(
        TrainingParams(
            reviews=[str(sample / "reviews.json.gz")],
            meta=[str(sample / "meta.json.gz")],
            store_uri=store_uri,
            work_dir=str(root / "work"),
            models=["gmf_logistic"],
            overrides={"gmf_logistic": {"epochs": 8}},
        )
    )
    assert report["promoted"], f"the training run published no champion: {report['champion']}"
    return store_uri, root, report
