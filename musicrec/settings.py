"""One settings class (env prefix MUSICREC_): where data, store and work files live, seeds and threads."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Defaults for flows and the CLI; flow parameters override them per run. No secrets live here."""

    model_config = SettingsConfigDict(env_prefix="MUSICREC_", extra="ignore")

    store_uri: str = Field("", description="s3://bucket/prefix or file:///path; empty = ./.musicrec/store")
    work_dir: Path = Field(Path(".musicrec/work"), description="local scratch for a run's intermediate files")
    seed: int = 0
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, description="total CPU threads to use")
    task_runner: str = "threads"
    dask_address: str = ""


def get_settings() -> Settings:
    return Settings()
