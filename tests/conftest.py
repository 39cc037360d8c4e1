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
