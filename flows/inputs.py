"""What the training and tuning flows share: their input parameters (one pydantic model, so both UI forms
ask the same way) and their first two stages, read + validate and split + Word2Vec."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, Field

from musicrec import registry
from musicrec.fit.threads import limit_malloc_arenas
from musicrec.pipeline.report import StageClock
from musicrec.pipeline.workspace import new_run_id, run_ref
from musicrec.quiet import quiet_third_party
from musicrec.settings import get_settings
from tasks import training as t

RATING_MODELS = registry.names("rating")  # the registry's names: the UI form offers exactly these
ModelName = Literal[tuple(RATING_MODELS)]
RETRIEVAL_MODELS = registry.names("retrieval")  # the implicit-feedback models (musicrec.implicit)
RetrievalName = Literal[tuple(RETRIEVAL_MODELS)]


class SplitParams(BaseModel):
    method: Literal["random", "temporal"] = "random"
    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)


class RunInputs(BaseModel):
    """The data a run reads, where it publishes, and how it runs."""

    reviews: list[str] = Field(
        ..., description="review files (Amazon 2014/2018/2023 JSON lines, ratings CSV, ...)"
    )
    meta: list[str] = Field(default=[], description="optional metadata files")
    store_uri: str = Field(
        "", description="s3://bucket/prefix or file:///path; empty = MUSICREC_STORE_URI or ./.musicrec/store"
    )
    models: list[ModelName] = Field(default=list(RATING_MODELS), description="which models to train")
    seed: int = 0
    split: SplitParams = Field(default=SplitParams())
    task_runner: Literal["threads", "processes", "dask"] = "threads"
    dask_address: str = Field("", description="existing Dask scheduler; empty = a LocalCluster")
    threads: int = Field(0, ge=0, description="CPU threads for the whole run; 0 = every core")
    work_dir: str = ".musicrec/work"
    work_uri: str = Field(
        "",
        description="s3://bucket/prefix: keep the run's workspace in the object store (Dask "
        "workers without a shared filesystem); empty = MUSICREC_WORK_URI or work_dir",
    )
    columns: dict[str, str] = Field(
        default={}, description="file column for user, item, rating, timestamp (headers not matched)"
    )
    rating_range: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[min, max] stars; empty = read from the data"
    )
    delimiter: str = Field("", description="the review files' delimiter (, tab ; | space); empty = detected")
    feedback: Literal["auto", "implicit", "explicit"] = Field(
        "auto",
        description="explicit ratings (rating and retrieval models) or implicit counts (plays, clicks, "
        "pairs: retrieval models only); auto = implicit when the value column is named like a count, "
        "there is none, or the values fit no rating scale",
    )
    tags: str = Field(
        "",
        description="tag assignments (user, item, tag id, ...; Last.fm user_taggedartists.dat): "
        "each item's tags become its text; needs tag_names",
    )
    tag_names: str = Field("", description="tag id -> tag text (Last.fm tags.dat; Latin-1 is read as such)")
    confidence_alpha: float = Field(
        -1.0,
        description="implicit feedback: each interaction weighs 1 + alpha * "
        "log(1 + count) in the retrieval loss; < 0 = MUSICREC_CONFIDENCE_ALPHA (1.0)",
    )


def begin_run(params: RunInputs, prefix: str) -> tuple[str, str, str, int]:
    """A run's workspace reference (a local folder or an s3:// prefix, named after the flow run), its run id,
    its store URI and its thread budget."""
    quiet_third_party()
    limit_malloc_arenas()  # before the run's task threads allocate
    settings = get_settings()
    store_uri = params.store_uri or settings.store_uri
    threads = params.threads or os.cpu_count() or 1
    run_id = run_id_from_name(prefix)
    return (
        run_ref(params.work_uri or settings.work_uri or params.work_dir, run_id),
        run_id,
        store_uri,
        threads,
    )


def load_and_prepare(
    params: RunInputs, workdir: str, clock: StageClock, embed: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stages 1 and 2 of both flows: read + validate the inputs, split, and (embed=True) train Word2Vec; the
    training flow passes embed=False and trains Word2Vec beside the models that need no text."""
    with clock("load-and-validate"):
        alpha = params.confidence_alpha if params.confidence_alpha >= 0 else get_settings().confidence_alpha
        run = t.load_and_validate(
            workdir,
            params.reviews,
            params.meta,
            params.columns,
            tuple(params.rating_range) if params.rating_range else None,
            **({"delimiter": params.delimiter} if params.delimiter else {}),
            feedback=params.feedback,
            confidence_alpha=alpha,
            **({"tags": params.tags, "tag_names": params.tag_names} if params.tags else {}),
        )
    fractions = (params.split.train, params.split.validation, params.split.test)
    with clock("split"):
        prep = t.split_data(workdir, params.seed, fractions, params.split.method)
    if embed:
        with clock("embed-text"):
            prep["word2vec"] = t.embed_text(workdir, params.seed)
    return run, prep


def run_name(prefix: str) -> str:
    """A flow run name that carries a new musicrec run id (the flow reads it back with run_id_from_name)."""
    return prefix + new_run_id()


def run_id_from_name(prefix: str) -> str:
    """The run id in the current flow run's name; a new one when the run was named otherwise."""
    from prefect.runtime import flow_run

    name = flow_run.name or ""
    return name[len(prefix) :] if name.startswith(prefix) else new_run_id()
