"""One settings class (env prefix MUSICREC_): where the store lives. The deployments read their other
MUSICREC_* variables themselves (deployments/serve.py, prefect.yaml); flow parameters carry the rest."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The store a flow uses when its store_uri parameter is empty. No secrets live here."""

    model_config = SettingsConfigDict(env_prefix="MUSICREC_", extra="ignore")

    store_uri: str = Field("", description="s3://bucket/prefix or file:///path; empty = ./.musicrec/store")


def get_settings() -> Settings:
    return Settings()
