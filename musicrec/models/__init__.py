"""Model families, one file each, and the registry that names them."""

from musicrec.models.base import ModelConfig, RatingModel
from musicrec.models.registry import MODELS, build_model

__all__ = ["MODELS", "ModelConfig", "RatingModel", "build_model"]
