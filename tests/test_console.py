"""Terminal progress for `musicrec train`: one bar per model, fed by the epoch log lines."""

import io
import logging

from flows.console import EPOCH_LINE, EpochBars


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, message, None, None)


def test_epoch_lines_drive_one_bar_per_model():
    stream = io.StringIO()
    bars = EpochBars(stream)
    for k in (1, 2, 3):
        bars.emit(_record(f"gmf: epoch {k}/20 loss 0.5 val_rmse 0.9 (1.0s)"))
    bars.emit(_record("w2v_mlp: epoch 1/10 loss 0.5 val_rmse 0.9 (1.0s)"))
    bars.emit(_record("loaded 20,000 ratings"))  # not an epoch line: ignored
    assert {m: (b.n, b.total) for m, b in bars.bars.items()} == {"gmf": (3, 20), "w2v_mlp": (1, 10)}
    bars.emit(_record("gmf: val_rmse 0.9000 test_rmse 0.9100 in 3.0s"))  # stopped early at epoch 3
    assert (bars.bars["gmf"].n, bars.bars["gmf"].total) == (3, 3)
    bars.close()
    out = stream.getvalue()
    assert "gmf" in out and "3/3" in out and "w2v_mlp" in out


def test_epoch_line_pattern_matches_what_training_logs():
    from musicrec.pipeline.train import progress_printer

    lines: list[str] = []
    progress_printer(lines.append)({"model": "gmf_logistic", "epoch": 2, "epochs": 20, "train_loss": 0.5,
                                    "val_rmse": 0.9, "seconds": 1.5})
    match = EPOCH_LINE.match(lines[0])
    assert match and match["model"] == "gmf_logistic" and match["epoch"] == "2" and match["epochs"] == "20"
