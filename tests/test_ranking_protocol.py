"""Temporal leave-last-out: who is test, validation, train; ties by row order; nulls oldest; vectorised."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from musicrec.metrics.protocol import leave_last_out


def _ratings(rows: list[tuple[str, str, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "rating": 5.0,
            "timestamp": pd.array([r[2] for r in rows], dtype="Float64"),
        }
    )


def test_latest_is_test_second_latest_validation_rest_train() -> None:
    df = _ratings(
        [
            ("a", "i1", 3),
            ("a", "i2", 1),
            ("a", "i3", 2),
            ("a", "i4", 5),
            ("b", "i1", 9),
            ("b", "i2", 4),
            ("c", "i5", 1),
        ]
    )
    s = leave_last_out(df)
    assert dict(zip(s.test["user_id"], s.test["item_id"], strict=False)) == {"a": "i4", "b": "i1"}
    assert dict(zip(s.validation["user_id"], s.validation["item_id"], strict=False)) == {
        "a": "i1"
    }  # b has only 2
    assert sorted(zip(s.train["user_id"], s.train["item_id"], strict=False)) == [
        ("a", "i2"),
        ("a", "i3"),
        ("b", "i2"),
        ("c", "i5"),
    ]
    assert s.single_users == ["c"]
    assert len(s.train) + len(s.validation) + len(s.test) == len(df)


def test_ties_go_to_the_later_row_and_null_timestamps_count_as_oldest() -> None:
    df = _ratings(
        [("a", "x", 5), ("a", "y", 5), ("a", "z", 5), ("b", "n", None), ("b", "m", 1), ("b", "o", 0)]
    )
    s = leave_last_out(df)
    assert dict(zip(s.test["user_id"], s.test["item_id"], strict=False)) == {"a": "z", "b": "m"}
    assert dict(zip(s.validation["user_id"], s.validation["item_id"], strict=False)) == {"a": "y", "b": "o"}


def test_no_timestamp_column_uses_row_order() -> None:
    df = _ratings([("a", "x", None), ("a", "y", None)]).drop(columns="timestamp")
    assert leave_last_out(df).test["item_id"].tolist() == ["y"]


def test_deterministic_and_fast_at_scale() -> None:
    rng = np.random.default_rng(0)
    n = 1_600_000
    df = pd.DataFrame(
        {
            "user_id": rng.integers(0, 840_000, n).astype(str),
            "item_id": rng.integers(0, 457_000, n),
            "rating": 5.0,
            "timestamp": rng.integers(0, 1000, n),
        }
    )
    t = time.perf_counter()
    first = leave_last_out(df)
    assert time.perf_counter() - t < 10
    second = leave_last_out(df.sample(frac=1.0, random_state=1).sort_index())
    pd.testing.assert_frame_equal(first.test, second.test)
    last = df.assign(pos=np.arange(n)).sort_values(["user_id", "timestamp", "pos"]).groupby("user_id").tail(1)
    counts = df["user_id"].value_counts()
    expected = last[last["user_id"].map(counts) >= 2]
    assert set(zip(expected["user_id"], expected["item_id"], strict=False)) == set(
        zip(first.test["user_id"], first.test["item_id"], strict=False)
    )


def test_a_table_without_times_holds_out_seeded_random_interactions() -> None:
    """Play counts carry no time: the held-out item of a user is drawn (seeded), not the file's last row."""
    users = np.repeat([f"u{k}" for k in range(200)], 5)
    df = pd.DataFrame({"user_id": users, "item_id": [f"i{k}" for k in range(len(users))], "rating": 1.0})
    first, again = leave_last_out(df), leave_last_out(df)
    assert first.test.equals(again.test) and len(first.test) == 200 and len(first.validation) == 200
    last = set(df.groupby("user_id")["item_id"].last())
    assert 0 < len(set(first.test["item_id"]) & last) < 100  # about one in five by chance
    stamped = df.assign(timestamp=np.arange(len(df)))
    assert set(leave_last_out(stamped).test["item_id"]) == last
