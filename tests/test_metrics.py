import math

import numpy as np
import pytest

from musicrec.metrics.directions import BIGGER_IS_BETTER, bigger_is_better
from musicrec.metrics.rating import mae, rmse
from musicrec.registry import BLEND_MARGIN, choose_champion


def test_rmse_of_identical_is_zero():
    x = np.array([1.0, 2.5, 5.0])
    assert rmse(x, x) == 0.0
    assert mae(x, x) == 0.0


def test_known_values():
    assert rmse([1, 2, 3], [2, 2, 5]) == pytest.approx(math.sqrt(5 / 3))
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)


def test_empty_is_nan_and_shape_mismatch_raises():
    assert math.isnan(rmse([], []))
    with pytest.raises(ValueError):
        rmse([1, 2], [1])


def test_rating_errors_at_their_limits():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert rmse(x, x + 2.0) == pytest.approx(2.0)  # a constant offset
    assert mae(x, x - 2.0) == pytest.approx(2.0)
    assert rmse(x, x[::-1]) == pytest.approx(math.sqrt(5.0)) and mae(x, x[::-1]) == pytest.approx(2.0)
    assert rmse([1, 5], [5, 1]) == pytest.approx(4.0)  # worst on a 1-5 scale
    assert rmse([1, 2, 3], [2, 2, 5]) >= mae([1, 2, 3], [2, 2, 5])  # a root of a mean of squares
    assert math.isnan(mae([], []))
    with pytest.raises(ValueError, match="shape"):
        mae([[1, 2]], [1, 2])  # never broadcast


def test_every_metric_declares_its_direction():
    assert BIGGER_IS_BETTER["rmse"] is False and BIGGER_IS_BETTER["mae"] is False
    for name in (
        "hr@10",
        "ndcg@10",
        "recall@50",
        "coverage@10",
        "val_ndcg_at_10",
        "test_recall_at_50",
        "catalogue_coverage",
    ):
        assert bigger_is_better(name), name
    for name in ("rmse", "val_rmse", "test_cold_user_rmse", "train_mae"):
        assert not bigger_is_better(name), name
    with pytest.raises(KeyError, match="no direction"):
        bigger_is_better("mean_popularity")


def test_champion_lowest_validation_rmse_ties_by_name():
    rows = [{"name": "b", "val_rmse": 0.80}, {"name": "a", "val_rmse": 0.80}, {"name": "c", "val_rmse": 0.9}]
    assert choose_champion(rows, "rating", 0.85) == "a"


def test_champion_must_beat_bias_baseline():
    rows = [{"name": "a", "val_rmse": 0.9}, {"name": "b", "val_rmse": float("nan")}]
    assert choose_champion(rows, "rating", 0.85) is None


def test_an_untrained_model_is_never_champion():
    """best_epoch 0: no epoch beat its starting point; it is the bias solution relabelled, not a result."""
    rows = [
        {"name": "a", "val_rmse": 0.80, "best_epoch": 0},
        {"name": "b", "val_rmse": 0.84, "best_epoch": 3},
    ]
    assert choose_champion(rows, "rating", 0.85) == "b"


def test_a_blend_is_champion_only_when_it_beats_the_best_single_model_by_the_margin():
    single = {"name": "svdpp", "val_rmse": 0.8000, "best_epoch": 2}
    close = {"name": "rating_ensemble", "val_rmse": 0.8000 * (1 - BLEND_MARGIN / 2), "members": [{}]}
    clear = {**close, "val_rmse": 0.8000 * (1 - 2 * BLEND_MARGIN)}
    assert choose_champion([single, close], "rating", 0.85) == "svdpp"
    assert choose_champion([single, clear], "rating", 0.85) == "rating_ensemble"
    # a rising metric: the blend must be above the best single model by the margin
    single = {"name": "ease", "val_ndcg_at_10": 0.1000, "best_epoch": 1}
    close = {"name": "ensemble", "val_ndcg_at_10": 0.1000 * (1 + BLEND_MARGIN / 2), "members": [{}]}
    clear = {**close, "val_ndcg_at_10": 0.1000 * (1 + 2 * BLEND_MARGIN)}
    assert choose_champion([single, close], "retrieval", 0.05) == "ease"
    assert choose_champion([single, clear], "retrieval", 0.05) == "ensemble"
    # no single model beats the bar: a blend that does is champion
    assert choose_champion([{**single, "val_ndcg_at_10": 0.01}, clear], "retrieval", 0.05) == "ensemble"
