"""The run report's stage clock and its one-line summary."""

import time

import pytest

from musicrec.pipeline.report import StageClock, format_stages


def test_stage_clock_keeps_order_and_times_failed_stages():
    clock = StageClock()
    with clock("first"):
        time.sleep(0.02)
    with pytest.raises(RuntimeError), clock("second"):
        raise RuntimeError("stage failed")
    assert list(clock.seconds) == ["first", "second"]
    assert clock.seconds["first"] >= 0.02


def test_format_stages_shows_seconds_and_shares():
    assert format_stages({"a": 3.0, "b": 1.0}) == "stages: a 3.0 s (75%), b 1.0 s (25%)"
