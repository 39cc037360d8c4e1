import math

import numpy as np
import pytest

from musicrec.registry import choose_champion
from musicrec.metrics import mae, rmse


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


def test_champion_lowest_validation_rmse_ties_by_name():
    rows = [{"name": "b", "val_rmse": 0.80}, {"name": "a", "val_rmse": 0.80}, {"name": "c", "val_rmse": 0.9}]
    assert choose_champion(rows, "rating", 0.85) == "a"


def test_champion_must_beat_bias_baseline():
    rows = [{"name": "a", "val_rmse": 0.9}, {"name": "b", "val_rmse": float("nan")}]
    assert choose_champion(rows, "rating", 0.85) is None


def test_an_untrained_model_is_never_champion():
    """best_epoch 0: no epoch beat its starting point; it is the bias solution relabelled, not a result."""
    rows = [{"name": "a", "val_rmse": 0.80, "best_epoch": 0}, {"name": "b", "val_rmse": 0.84, "best_epoch": 3}]
    assert choose_champion(rows, "rating", 0.85) == "b"
