"""Typed hyperparameters, one class per model family (pydantic, no torch: the CLI checks overrides with these
before anything slow starts). A key that does not belong to a family is an error naming the valid ones."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from musicrec.fit.space import Dim, choice, integer, real

# what every family has: step sizes, penalties, start scale, batch size (0: automatic, ~64 steps an epoch)
COMMON_SPACE: dict[str, Dim] = {
    "lr": real(0.03, 1.0),
    "bias_lr": real(0.001, 0.1),
    "weight_decay": real(0.1, 64.0),
    "init_std": real(0.005, 0.2),
    "batch_size": choice(0, 1024, 8192),
}


class TrainConfig(BaseModel):
    """What every family's trainer reads."""

    search_space: ClassVar[dict[str, Dim]] = COMMON_SPACE

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(30, ge=1, le=1000, description="maximum epochs; early stopping on validation RMSE")
    patience: int = Field(5, ge=1, description="epochs without improvement before stopping")
    batch_size: int = Field(0, ge=0, description="rows per step; 0 = about 64 steps per epoch in [256, 4096]")
    lr: float = Field(0.3, gt=0, description="row-wise AdaGrad step of the embedding tables")
    dense_lr: float = Field(0.003, gt=0, description="Adam step of dense layers")
    bias_lr: float = Field(0.01, ge=0, description="AdaGrad step of the bias tables (0 = biases frozen)")
    bias_decay: float | None = Field(
        None,
        ge=0,
        description="L2 on user/item biases per row and epoch; "
        "empty = the run's bias baseline's, chosen on validation",
    )
    weight_decay: float = Field(4.0, ge=0, description="L2 on user/item factor rows, per row and epoch")
    init_std: float = Field(0.02, ge=0, description="standard deviation of the initial factor rows")
    dense_decay: float = Field(0.0, ge=0, description="Adam weight decay of the dense layers")
    id_dropout: float = Field(0.02, ge=0, lt=1, description="share of rows whose id is replaced by 'unknown'")
    fused: bool = Field(
        True,
        description="train with the fused numba kernel (musicrec.rating.fused) where the model "
        "allows it: closed-form dot-product gradients, i.e. gmf and nnmf; the same updates as the "
        "torch path, several times faster. false = the torch path (other models always use it)",
    )
    seed: int = 0


class FactorConfig(TrainConfig):
    """gmf, gmf_regression, nnmf: user and item factor tables of one size."""

    factors: int = Field(32, ge=1, le=1024)
    search_space: ClassVar[dict[str, Dim]] = {**COMMON_SPACE, "factors": integer(4, 256)}


class NNMFConfig(FactorConfig):
    """nnmf: non-negative factors need a larger all-positive start and a lighter penalty to leave zero."""

    init_std: float = Field(0.05, ge=0)
    weight_decay: float = Field(1.0, ge=0)


class LogisticConfig(FactorConfig):
    """gmf_logistic: factor model trained on ratings scaled to [0, 1] with a logistic loss."""


class SVDppConfig(FactorConfig):
    """svdpp: gmf's factor tables plus a history table y: a user is p_u + |N(u)|^-1/2 sum of y_j over
    the items they rated (y is penalised like the factors, by weight_decay)."""

    # chosen on validation (MI ratings, CM100k): a step of 0.3 or a penalty of 6 or more stalls or
    # overfits on one of them
    lr: float = Field(0.1, gt=0)
    weight_decay: float = Field(5.0, ge=0)
    history_lr: float = Field(
        0.003,
        gt=0,
        description="row-wise AdaGrad step of the history rows y_j (a user's term sums many of them, "
        "so it moves about sqrt(|N(u)|) times faster than one row)",
    )
    search_space: ClassVar[dict[str, Dim]] = {**FactorConfig.search_space, "history_lr": real(0.0005, 0.05)}


class KNNBaselineConfig(TrainConfig):
    """knn_baseline: item kNN on the baselines' residuals (Surprise's KNNBaseline defaults: k 40, pearson-
    baseline shrinkage 100, min_support 1). The baselines are the run's bias baseline, shrunk by bias_decay
    (empty: the run's tuned weights). Fitted in closed form: epoch 1 adds the neighbourhood term, so one
    epoch is the whole fit; the SGD fields (steps, penalties, batches) are unused."""

    epochs: int = Field(1, ge=1, le=1000, description="epoch 1 adds the kNN term; later ones change nothing")
    patience: int = Field(1, ge=1)
    k: int = Field(40, ge=1, le=10_000, description="most similar rated items a prediction averages")
    shrinkage: float = Field(
        100.0, ge=0, description="similarity * (n - 1) / (n - 1 + shrinkage), n common users"
    )
    min_support: int = Field(1, ge=1, description="common users below which a similarity is zero")
    max_table_cells: int = Field(
        50_000_000,
        ge=1,
        description="users x items above which the model is skipped: the export serves a dense float32 "
        "correction table of that many cells (50M: 200 MB in the ONNX file, under its 2 GB limit)",
    )
    search_space: ClassVar[dict[str, Dim]] = {
        "k": integer(10, 200),
        "shrinkage": real(10.0, 1000.0),
        "min_support": integer(1, 10),
    }


class MLPConfig(TrainConfig):
    """mlp: concatenated user and item embeddings through a ReLU MLP, plus biases."""

    user_dim: int = Field(8, ge=1, le=1024, description="user embedding size (the seed's 8)")
    item_dim: int = Field(5, ge=1, le=1024, description="item embedding size (the seed's 5)")
    hidden: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    dense_decay: float = 1e-5
    dense_lr: float = Field(0.01, gt=0)
    init_std: float = Field(0.1, ge=0)
    interaction: bool = Field(
        True,
        description="add a learnt bilinear term u . W i beside the MLP (W starts as the identity: a "
        "dot product of the first factors); "
        "false = the seed's MLP alone, which learns a dot product poorly",
    )
    search_space: ClassVar[dict[str, Dim]] = {
        **COMMON_SPACE,
        "user_dim": integer(2, 64),
        "item_dim": integer(2, 64),
        "hidden": choice([32], [64, 32], [128, 64], [256, 128, 64]),
        "dense_lr": real(0.001, 0.03),
        "dense_decay": real(1e-7, 1e-3),
        "init_std": real(0.01, 0.3),
    }


class W2VMLPConfig(MLPConfig):
    """w2v_mlp: the MLP plus the item's Word2Vec text vector."""
