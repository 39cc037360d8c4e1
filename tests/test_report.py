"""The run report: stage clock, leaderboard (UI table and terminal text), model card, embedded plots."""

import time

import pytest

from musicrec.pipeline import report as rep
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


MODELS = [
    {
        "name": "gmf",
        "train_rmse": 0.71234567,
        "val_rmse": 0.85,
        "test_rmse": 0.86,
        "test_mae": 0.66,
        "test_cold_user_rmse": 1.01,
        "test_cold_item_rmse": 0.93,
        "fit_seconds": 12.3456,
        "epochs": 9,
        "best_epoch": 6,
        "initial_val_rmse": 0.9,
    },
    {
        "name": "mlp",
        "train_rmse": 0.9,
        "val_rmse": 0.9,
        "test_rmse": 0.91,
        "test_mae": 0.7,
        "test_cold_user_rmse": 1.0,
        "test_cold_item_rmse": 0.95,
        "fit_seconds": 3.0,
        "epochs": 3,
        "best_epoch": 0,
    },
    {"name": "nnmf", "val_rmse": float("nan"), "epochs": 1},  # a row with missing metrics still shows
]
BASELINES = [
    {"name": "bias", "val_rmse": 0.9, "test_rmse": 0.9, "test_mae": 0.7, "fit_seconds": 0.0, "epochs": 0},
    {"name": "global_mean", "val_rmse": 1.08, "test_rmse": 1.03, "fit_seconds": 0.0, "epochs": 0},
]


def test_leaderboard_marks_champion_gain_and_untrained_models():
    rows = rep.leaderboard(MODELS, BASELINES, champion="gmf")
    assert [r["model"] for r in rows] == ["gmf", "bias", "mlp", "global_mean", "nnmf"]
    by = {r["model"]: r for r in rows}
    assert list(rows[0]) == rep.LEADERBOARD_COLUMNS
    assert by["gmf"]["champion"] is True and not any(by[n]["champion"] for n in ("bias", "mlp", "nnmf"))
    assert by["gmf"]["val_gain_vs_bias"] == pytest.approx(
        5.56, abs=0.005
    )  # (0.9 - 0.85) / 0.9, better: positive
    assert by["global_mean"]["val_gain_vs_bias"] == pytest.approx(-20.0)
    assert (
        by["mlp"]["kind"] == "untrained" and by["gmf"]["kind"] == "model" and by["bias"]["kind"] == "baseline"
    )
    assert by["gmf"]["train_rmse"] == 0.7123 and by["gmf"]["fit_s"] == 12.3 and by["gmf"]["best_epoch"] == 6
    assert by["nnmf"]["val_gain_vs_bias"] is None and by["nnmf"]["kind"] == "model"


def test_ui_table_cells_have_fixed_decimals_and_a_star():
    table = {r["model"]: r for r in rep.leaderboard_table(rep.leaderboard(MODELS, BASELINES, "gmf"))}
    gmf = table["gmf"]
    assert (gmf["champion"], gmf["val_rmse"], gmf["test_mae"], gmf["fit_s"]) == (
        "★",
        "0.8500",
        "0.6600",
        "12.3",
    )
    assert gmf["val_gain_vs_bias"] == "+5.56%" and table["bias"]["val_gain_vs_bias"] == "+0.00%"
    assert table["nnmf"]["val_rmse"] == "n/a" and table["nnmf"]["test_rmse"] == "n/a"
    assert table["mlp"]["champion"] == "" and list(gmf) == rep.UI_COLUMNS and "train_rmse" not in gmf
    assert all(isinstance(v, str) for row in table.values() for v in row.values())


def test_text_leaderboard_stars_champion_and_labels_untrained():
    text = rep.format_leaderboard(rep.leaderboard(MODELS, BASELINES), "gmf")
    lines = {ln.split()[0]: ln for ln in text.splitlines()[2:7]}
    assert lines["gmf"].startswith("gmf *") and "0.8500" in lines["gmf"] and "+5.56%" in lines["gmf"]
    assert lines["mlp"].endswith("untrained") and not lines["gmf"].endswith("untrained")
    assert "12.3" in lines["gmf"] and "12.35" not in lines["gmf"]
    assert "val_gain_vs_bias" in text.splitlines()[0] and "* champion" in text


REPORT = {
    "run_id": "r1",
    "models": MODELS,
    "baselines": BASELINES,
    "champion": {"name": "gmf", "version": "v1", "uri": "file:///s/models/v1"},
    "promotion": {
        "compared_rows": 1994,
        "incumbent_rmse": 0.87654321,
        "challenger_rmse": 0.86123456,
        "promoted": True,
        "reason": "better than the incumbent",
        "incumbent_version": "v0",
    },
    "refit": {"rows": 19940, "epochs": 6},
    "data": {"ratings": 19940, "users": 100, "items": 50, "fingerprint": "sha256:abc"},
    "split": {
        "method": "random",
        "seed": 0,
        "train": 15952,
        "validation": 1994,
        "test": 1994,
        "test_unseen_user": 3,
        "test_unseen_item": 4,
    },
}


def test_model_card_shows_promotion_refit_best_epoch_and_gains():
    card = rep.model_card(REPORT)
    assert "promoted: **yes**: better than the incumbent" in card
    assert "`v0` on 1,994 rows" in card and "incumbent RMSE 0.8765, challenger RMSE 0.8612" in card
    assert "refit on all data: 19,940 rows, 6 epochs" in card
    assert "best epoch: 6 of 9" in card and "gain over the bias baseline: val +5.56%, test +4.44%" in card
    assert "| val_rmse | 0.8500 | 0.9000 |" in card and "0.87654321" not in card
    assert (
        "- split (random, seed 0): train 15,952, validation 1,994, test 1,994; test rows with unseen user 3, "
        "unseen item 4" in card
    )


def test_model_card_survives_an_older_report_without_promotion_or_refit():
    old = {k: v for k, v in REPORT.items() if k not in ("promotion", "refit", "data", "split")}
    card = rep.model_card({**old, "promoted": False, "previous_test_rmse": 0.8, "previous_version": "v0"})
    assert "promoted: **no**" in card and "refit" not in card and "incumbent RMSE 0.8000" in card


def test_image_markdown_embeds_the_png_as_a_data_uri():
    import base64

    png = rep.learning_curves_png(
        {
            "gmf": [
                {"epoch": 0, "val_rmse": 0.95},
                {"epoch": 1, "val_rmse": 0.9},
                {"epoch": 2, "val_rmse": 0.8},
            ]
        }
    )
    assert png.startswith(b"\x89PNG")
    md = rep.image_markdown(png, "Learning curves", "caption")
    uri = md.split("](", 1)[1].split(")", 1)[0]
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri.split(",", 1)[1]) == png
    assert md.startswith("## Learning curves") and md.endswith("caption")


def test_locations_are_text_unless_a_browser_can_open_them():
    from tasks.reporting import location_markdown

    md = location_markdown("file:///tmp/my%20store/runs/r1/report.json", "Run report")
    assert "/tmp/my store/runs/r1/report.json" in md and "file://" not in md
    s3 = location_markdown("s3://bucket/prefix/models/v1", "Champion bundle")
    assert "s3://bucket/prefix/models/v1" in s3 and "aws s3 cp" in s3
