"""Typed hyperparameters of the implicit models (pydantic,
no torch import, so overrides are checked early)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from musicrec.fit.space import Dim, integer, real

# what tuning searches for every loss: size, step, penalty, start scale, how a history is averaged
SPACE: dict[str, Dim] = {
    "factors": integer(16, 128),
    "lr": real(0.03, 1.0),
    "weight_decay": real(0.001, 0.3),
    "init_std": real(0.01, 0.3),
    "history_alpha": real(0.0, 1.0, log=False),
}


class ImplicitConfig(BaseModel):
    """Shared by the three losses; each loss's class names its loss and changes defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    loss: ClassVar[str] = "pointwise"  # musicrec.implicit.losses: what the trainer minimises
    search_space: ClassVar[dict[str, Dim]] = SPACE

    factors: int = Field(64, ge=1, le=1024, description="embedding size of users and items")
    lr: float = Field(0.3, gt=0, description="row-wise AdaGrad step of the embedding and bias tables")
    weight_decay: float = Field(0.03, ge=0, description="L2 per touched row and occurrence (lazy, sparse)")
    epochs: int = Field(
        100, ge=1, le=1000, description="maximum epochs; early stopping on validation NDCG@10"
    )
    patience: int = Field(
        8,
        ge=1,
        description="epochs without a better validation NDCG@10 before stopping (on MI in "
        "the flow 4 stopped pointwise and bpr at epoch 7, 8 found better ones at 14-17)",
    )
    max_patience_rows: int = Field(
        5_000_000,
        ge=0,
        description="cap on patience x training interactions, so large "
        "data waits fewer epochs for a better one (seed size: 4); 0 = no cap",
    )
    max_epoch_rows: int = Field(
        25_000_000,
        ge=0,
        description="cap on epochs x training interactions, so the "
        "maximum epochs shrink on large data (seed size: 19); 0 = no cap",
    )
    batch_size: int = Field(0, ge=0, description="positives per step; 0 = rows / 100 within [64, 4096]")
    negatives: int = Field(1, ge=1, le=1024, description="sampled negatives per positive")
    neg_sampling: Literal["uniform", "popularity"] = "uniform"
    neg_exponent: float = Field(0.75, ge=0, le=2, description="popularity sampling: p(item) ~ count^exponent")
    resample_positives: bool = Field(
        True, description="re-draw (once) negatives that are positives of the user"
    )
    negative_pick: Literal["mean", "max"] = Field(
        "mean",
        description="average the loss over the negatives, "
        "or take the highest-scoring one (adaptive, WARP-like)",
    )
    margin: float = Field(1.0, ge=0, description="hinge margin")
    init_std: float = Field(0.1, ge=0, description="standard deviation of the initial embedding rows")
    use_text: bool = Field(
        True,
        description="add a learnt projection of the item's text vector (the run's "
        "Word2Vec, waited for) to its row; no effect when the run has no text",
    )
    text_lr: float = Field(
        0.03,
        gt=0,
        description="AdaGrad step of the text projection (one dense matrix that every item's row shares)",
    )
    user_history: bool = Field(
        True,
        description="describe a user by learnt vectors of the items they interacted "
        "with (FISM): a row learnt from a handful of interactions over-fits",
    )
    free_user: bool = Field(
        False, description="also learn a free row per user (always on without user_history)"
    )
    history_limit: int = Field(
        16,
        ge=0,
        description="history items summed per user and training step; a longer "
        "history is sampled and scaled (the served vector uses all of it); 0 = all",
    )
    history_alpha: float = Field(
        0.5, ge=0, le=1, description="user history: sum of item vectors x count^-alpha"
    )
    fused: bool = Field(
        True,
        description="train with the compiled step (musicrec.implicit.fused; the same update "
        "as the torch step, about 2x faster) where it applies: user_history without free_user",
    )
    val_users: int = Field(5000, ge=1, description="fixed seeded sample of validation users per epoch")
    seed: int = 0


class PointwiseConfig(ImplicitConfig):
    """implicit_pointwise: logistic loss on positives (label 1) and sampled negatives (label 0)."""


class BPRConfig(ImplicitConfig):
    """implicit_bpr: -log sigmoid(s_pos - s_neg)."""

    loss: ClassVar[str] = "bpr"


class HingeConfig(ImplicitConfig):
    """implicit_hinge: max(0, margin - s_pos + s_neg) on the highest-scoring of several negatives."""

    loss: ClassVar[str] = "hinge"
    search_space: ClassVar[dict[str, Dim]] = {**SPACE, "negatives": integer(2, 16), "margin": real(0.1, 2.0)}

    negatives: int = Field(8, ge=1, le=1024)
    negative_pick: Literal["mean", "max"] = "max"
    lr: float = Field(0.1, gt=0)


def max_epochs(cfg: ImplicitConfig | SASRecConfig, n_rows: int) -> int:
    """The most epochs a fit on n_rows interactions runs: cfg.epochs, fewer where max_epoch_rows says so."""
    if cfg.max_epoch_rows <= 0 or n_rows <= 0:
        return cfg.epochs
    return max(1, min(cfg.epochs, cfg.max_epoch_rows // n_rows))


def patience_for(cfg: ImplicitConfig | SASRecConfig, n_rows: int) -> int:
    """Epochs without a better validation NDCG@10 before a fit on n_rows interactions stops: cfg.patience,
    fewer on large data (at the seed's size hinge's best epoch by validation moved from 5 to 20 with patience
    8, over a 1,094-user validation sample, for 270 s more and a lower test NDCG@10: 0.0106 against
    0.0113)."""
    if cfg.max_patience_rows <= 0 or n_rows <= 0:
        return cfg.patience
    return max(2, min(cfg.patience, cfg.max_patience_rows // n_rows))


class DenseConfig(BaseModel):
    """Shared by the kinds fitted without sampled negatives or text (ease, als, transitions)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    search_space: ClassVar[dict[str, Dim]] = {}
    use_text: ClassVar[bool] = False  # the flow reads it: these kinds never wait for Word2Vec
    negatives: ClassVar[int] = 0  # the flow starts the fits that score the most sampled negatives first

    val_users: int = Field(5000, ge=1, description="fixed seeded sample of validation users per evaluation")
    seed: int = 0


class EASEConfig(DenseConfig):
    """ease: EASE (Steck 2019), B = I - P diag(1/diag P), P = (X^T X + l2 I)^-1; l2 chosen on validation."""

    factors: int = Field(
        512,
        ge=1,
        le=4096,
        description="served vector width: exact scores when the fitted items fit in it, else B's truncated "
        "SVD at this rank",
    )
    l2: float | None = Field(
        None, gt=0, description="EASE's lambda; None: chosen on validation NDCG@10 from l2_grid"
    )
    l2_grid: tuple[float, ...] = Field(
        (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0),
        min_length=1,
        description="the lambdas tried when l2 is None, as multiples of the mean diagonal of X^T X (the "
        "mean interactions per item); a refit without l2 takes the middle one",
    )
    max_items: int = Field(
        3_000,
        ge=1,
        description="on larger catalogues B is fitted on this many items, those with the most training "
        "interactions, and the others rank by popularity alone: each l2 of the grid inverts a dense "
        "max_items^2 matrix and takes B's truncated SVD (time ~max_items^3; benchmarks/RESULTS.md: "
        "3,000 kept items cost a third of 5,000 for the same validation NDCG@10 on Last.fm and a "
        "higher one on the small sample)",
    )


class ALSConfig(DenseConfig):
    """als: weighted ALS (Hu, Koren, Volinsky 2008) with conjugate-gradient solves (Takacs et al. 2011)."""

    search_space: ClassVar[dict[str, Dim]] = {
        "factors": integer(16, 128),
        "regularization": real(0.1, 100.0),
        "alpha": real(0.5, 50.0),
    }

    factors: int = Field(64, ge=1, le=1024, description="embedding size of users and items")
    regularization: float = Field(
        10.0,
        ge=0,
        description="L2 penalty of every user and item row (benchmarks/RESULTS.md: 10 against 0.1 raised "
        "validation NDCG@10 on Last.fm, MI ratings, the small and medium samples and the seed's size; 20 "
        "raised it further on the smaller sets but shrank the rows towards zero at the seed's size)",
    )
    alpha: float = Field(
        5.0,
        ge=0,
        description="confidence of an interaction: 1 + alpha x its weight over the mean weight (the run's "
        "confidence weight of a play count, 1 for a rating); a missing pair has confidence 1 and target 0",
    )
    epochs: int = Field(
        15,
        ge=1,
        le=200,
        description="maximum ALS iterations (users, then items); early stopping on validation",
    )
    patience: int = Field(
        3, ge=1, description="iterations without a better validation NDCG@10 before stopping"
    )
    cg_steps: int = Field(3, ge=1, le=32, description="conjugate-gradient steps per row and iteration")
    init_std: float = Field(0.01, gt=0, description="standard deviation of the initial rows")


class TransitionsConfig(DenseConfig):
    """transitions: the items that followed the user's latest items in everyone's training sequences."""

    factors: int = Field(
        512,
        ge=1,
        le=4096,
        description="served vector width: exact scores up to this many items, else a rank-factors SVD of "
        "the transition matrix",
    )
    last: int = Field(5, ge=1, le=100, description="the user's latest items that vote")
    window: int = Field(3, ge=1, le=50, description="an item follows another within this many steps (1/step)")
    decay: float = Field(
        0.5, gt=0, le=1, description="weight of the k-th latest item: decay^k (the latest weighs 1)"
    )
    window_grid: tuple[int, ...] = Field(
        (1, 3, 5), description="windows tried on validation by a fit (empty: window alone)"
    )
    decay_grid: tuple[float, ...] = Field(
        (0.25, 0.5, 1.0), description="decays tried on validation by a fit (empty: decay alone)"
    )


class SASRecConfig(BaseModel):
    """sasrec: a causal self-attention encoder of the user's latest items (Kang & McAuley 2018), trained to
    predict each next item from the items before it (sampled softmax)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    search_space: ClassVar[dict[str, Dim]] = {
        "factors": integer(16, 128),
        "lr": real(3e-4, 1e-2),
        "dropout": real(0.0, 0.5, log=False),
        "last": integer(5, 50),
    }
    use_text: ClassVar[bool] = False  # the flow reads it: this kind never waits for Word2Vec

    factors: int = Field(64, ge=1, le=1024, description="item embedding and query width (the served vector)")
    last: int = Field(
        20, ge=1, le=200, description="the user's latest items the encoder reads, in time order"
    )
    blocks: int = Field(1, ge=1, le=8, description="self-attention blocks")
    heads: int = Field(1, ge=1, le=16, description="attention heads per block (they divide factors)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on the embeddings and inside each block")
    lr: float = Field(3e-3, gt=0, description="Adam step")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    negatives: int = Field(
        256,
        ge=1,
        le=100_000,
        description="uniform negatives a batch's positions share in the sampled softmax; the full softmax "
        "when the catalogue has no more items",
    )
    batch_size: int = Field(128, ge=1, description="training windows (of last + 1 items) per step")
    epoch_windows: int = Field(
        50_000,
        ge=0,
        description="windows an epoch trains on, a fresh seeded sample each epoch when there are more "
        "(large data: an epoch's cost stays bounded); 0 = every window",
    )
    epochs: int = Field(
        200, ge=1, le=1000, description="maximum epochs; early stopping on validation NDCG@10"
    )
    patience: int = Field(10, ge=1, description="epochs without a better validation NDCG@10 before stopping")
    max_patience_rows: int = Field(
        5_000_000, ge=0, description="cap on patience x training interactions (as the losses'); 0 = no cap"
    )
    max_epoch_rows: int = Field(
        25_000_000, ge=0, description="cap on epochs x training interactions (as the losses'); 0 = no cap"
    )
    val_users: int = Field(5000, ge=1, description="fixed seeded sample of validation users per epoch")
    seed: int = 0

    @model_validator(mode="after")
    def _heads_divide_factors(self) -> SASRecConfig:
        if self.factors % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide factors ({self.factors})")
        return self
