"""Every MUSICREC_* environment variable, in one pydantic-settings class (env prefix MUSICREC_).

Nothing else in musicrec, flows, tasks or deployments reads a MUSICREC_* variable; docs/settings.md lists
them. No secrets live here: credentials come from the AWS chain only. Settings are read afresh on every call,
so a changed environment (tests, a long-running serve process) is seen at once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from musicrec.errors import MusicrecError

ENV_PREFIX = "MUSICREC_"


class SettingsError(MusicrecError):
    """A MUSICREC_* variable holds a value its setting cannot take."""


class Settings(BaseSettings):
    """Defaults that flow parameters and the CLI fall back on when they are left empty."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True)

    store_uri: str = Field(
        "", description="s3://bucket/prefix, file:///path or a plain path; empty = ./.musicrec/store"
    )
    work_dir: str = Field(
        ".musicrec/work", description="run workspaces when work_uri is empty (a local folder)"
    )
    keep_work: int = Field(
        3,
        ge=0,
        description="finished run workspaces kept under work_dir, the newest; a run deletes older ones "
        "when it starts (a run's intermediate files: about 5 GB at the seed's size)",
    )
    work_uri: str = Field(
        "",
        description="s3://bucket/prefix: run workspaces in the object store, for Dask "
        "workers that share no filesystem; empty = work_dir",
    )
    cache_dir: str = Field(
        "",
        description="local cache of remote workspaces off Dask workers (deleted at the "
        "end of a run); empty = the system temp folder",
    )
    reviews: str = Field(
        "", description="deployments: comma-separated review files (empty = the demo sample)"
    )
    meta: str = Field("", description="deployments: comma-separated metadata files (empty = the demo sample)")
    task_runner: Literal["threads", "processes", "dask"] = Field(
        "threads",
        description="task runner of the training deployments and of musicrec train without --task-runner",
    )
    dask_address: str = Field(
        "",
        description="Dask scheduler for task_runner dask (deployments, musicrec train); "
        "empty = a local cluster",
    )
    timezone: str = Field("UTC", description="deployments: timezone of the training and tuning crons")
    training_cron: str = Field("0 2 * * *", description="deployments: cron of training/nightly")
    tuning_cron: str = Field("0 1 * * 0", description="deployments: cron of tuning/weekly (Sundays 01:00)")
    tuning_trials: int = Field(30, ge=1, description="deployments: trials per model of tuning/weekly")
    search_budget: float = Field(
        90.0,
        ge=0,
        description="musicrec train: wall-clock seconds for searching the models that have no usable "
        "tuning record (none, or one from data whose size changed past the drift rule); 0 = never search",
    )
    search_trials: int = Field(
        8, ge=1, description="musicrec train: at most this many trials per model in that search"
    )
    serve_limit: int = Field(
        2, ge=1, description="deployments/serve.py: flow runs at once in the serve process"
    )
    s3_endpoint_url: str = Field(
        "", description="S3 endpoint (MinIO, Ceph, R2); empty = AWS_ENDPOINT_URL or AWS"
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="S3 addressing; path for MinIO-like servers"
    )
    s3_max_attempts: int = Field(
        5, ge=1, description="S3 tries per request (first included) on 5xx, throttling, resets"
    )
    s3_connect_timeout: float = Field(10.0, ge=0.01, description="S3 connect timeout, seconds")
    s3_read_timeout: float = Field(60.0, ge=0.01, description="S3 read timeout, seconds")
    confidence_alpha: float = Field(
        1.0,
        ge=0,
        description="implicit feedback (plays, clicks): an interaction "
        "weighs 1 + alpha * log(1 + count) in the retrieval models' loss",
    )
    expectations_dir: str = Field(
        "", description="folder of the expectation suites; empty = expectations/ in the repo"
    )
    progress: Literal["", "bars", "lines"] = Field(
        "", description="training progress in the CLI: bars or log lines; empty = bars on a terminal only"
    )
    debug: bool = Field(False, description="the CLI shows Python tracebacks on errors (as --debug does)")


def get_settings() -> Settings:
    """The current settings; a bad value is one SettingsError naming the variable and what it accepts."""
    try:
        return Settings()
    except ValidationError as e:
        raise settings_error(e) from None


def settings_error(e: ValidationError) -> SettingsError:
    """One line per bad variable: MUSICREC_NAME='value': what is wrong."""
    problems = [
        f"{ENV_PREFIX}{str(err['loc'][0]).upper()}={err.get('input')!r}: {err['msg']}" for err in e.errors()
    ]
    return SettingsError(
        "; ".join(problems), hint="fix or unset the variable (docs/settings.md lists them all)"
    )


def env_name(field: str) -> str:
    """The environment variable of a settings field (for messages)."""
    return f"{ENV_PREFIX}{field.upper()}"
