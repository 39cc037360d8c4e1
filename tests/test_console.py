"""Terminal progress for `musicrec train`: one bar per model fed by the epoch log lines, log lines printed above
the bars (never on a bar's line), and elapsed times that stay true after a model is done."""

from __future__ import annotations

import io
import logging
import re
import time

from flows.console import EPOCH_LINE, EpochBars


def _record(message: str, created: float | None = None) -> logging.LogRecord:
    record = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, message, None, None)
    if created is not None:
        record.created = created
    return record


def _screen(output: str) -> list[str]:
    """What a terminal shows after `output`: \\r, \\n (onlcr: also back to column 0), cursor-up, text."""
    rows: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[A|\r|\n|[^\x1b\r\n]", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            rows.extend([] for _ in range(row + 1 - len(rows)))
        elif token == "\x1b[A":
            row = max(row - 1, 0)
        else:
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col], col = token, col + 1
    return ["".join(r).rstrip() for r in rows]


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
    screen = _screen(stream.getvalue())
    assert any(line.startswith("gmf") and "3/3" in line for line in screen)
    assert any(line.startswith("w2v_mlp") and "1/10" in line for line in screen)


def test_bars_show_the_true_elapsed_time_even_when_redrawn_later():
    stream = io.StringIO()
    bars = EpochBars(stream)
    now = time.time()
    bars.emit(
        _record("gmf: epoch 1/5 loss 0.5 val_rmse 0.9 (4.0s)", created=now)
    )  # began 4 s before its line
    assert 3.5 < bars.bars["gmf"].format_dict["elapsed"] < 10
    bars.emit(_record("gmf: epoch 2/5 loss 0.5 val_rmse 0.9 (4.0s)", created=now))
    bars.emit(_record("gmf: val_rmse 0.9000 test_rmse 0.9100 in 8.4s", created=now))
    time.sleep(1.1)  # the final redraw comes later: it must still say 8 s, at 2 epochs per 8.4 s
    bars.close()
    (line,) = [ln for ln in _screen(stream.getvalue()) if ln.startswith("gmf")]
    assert "2/2 [00:08<00:00" in line and "4.20s/epoch" in line, line


def test_log_lines_are_printed_above_the_bars_never_on_a_bar_line():
    from prefect.logging.handlers import PrefectConsoleHandler

    stream, console_out = io.StringIO(), io.StringIO()
    bars = EpochBars(stream)
    console = PrefectConsoleHandler(stream=console_out)
    logger = logging.getLogger("test_console.above_bars")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(console)
    bars.redirect(console)
    try:
        bars.emit(_record("gmf: epoch 1/4 loss 0.5 val_rmse 0.9 (1.0s)"))
        bars.emit(_record("mlp: epoch 1/4 loss 0.5 val_rmse 0.9 (1.0s)"))
        logger.info("Task run 'train-nnmf' - Finished in state Completed()")
        bars.emit(_record("gmf: epoch 2/4 loss 0.5 val_rmse 0.9 (1.0s)"))
        logger.info("second line")
    finally:
        bars.close()
        logger.removeHandler(console)
    assert console.stream is console_out and console.console.file is console_out  # restored at close
    assert console_out.getvalue() == ""  # everything went through the bars' stream while they were shown
    screen = [line for line in _screen(stream.getvalue()) if line]
    assert screen[:2] == ["Task run 'train-nnmf' - Finished in state Completed()", "second line"], screen
    assert [line.split()[0] for line in screen[2:]] == ["gmf", "mlp"], screen


def test_epoch_line_pattern_matches_what_training_logs():
    from musicrec.pipeline.train import progress_printer

    lines: list[str] = []
    progress_printer(lines.append)(
        {
            "model": "gmf_logistic",
            "epoch": 2,
            "epochs": 20,
            "loss": 0.5,
            "val_rmse": 0.9,
            "metric": "val_rmse",
            "value": 0.9,
            "seconds": 1.5,
            "eval_seconds": 0.2,
        }
    )
    match = EPOCH_LINE.match(lines[0])
    assert match and match["model"] == "gmf_logistic" and match["epoch"] == "2" and match["epochs"] == "20"
    assert match["seconds"] == "1.5"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _emitted_by(logger_name: str, make_noise, quiet: bool) -> list[str]:
    """What logger_name emits while make_noise() runs, with or without musicrec.quiet's filters."""
    from musicrec.quiet import DropMatching, quiet_third_party

    logger, collect = logging.getLogger(logger_name), _Collect()
    for f in [f for f in logger.filters if isinstance(f, DropMatching)]:
        logger.removeFilter(f)  # another test in this process may have quietened it already
    if quiet:
        quiet_third_party()
        quiet_third_party()  # idempotent: one filter per logger
        assert sum(isinstance(f, DropMatching) for f in logger.filters) == 1
    logger.addHandler(collect)
    try:
        make_noise()
    finally:
        logger.removeHandler(collect)
    return collect.messages


def test_quiet_third_party_drops_torchvision_warnings_of_the_onnx_exporter():
    from torch.onnx._internal.exporter import _registration

    name = "torch.onnx._internal.exporter._registration"

    def noise() -> None:
        for op in ("nms", "roi_align"):
            _registration._get_overload(f"torchvision::{op}")
        logging.getLogger(name).warning("another warning")  # the logger's other records still pass

    assert _emitted_by(name, noise, quiet=False) == [
        "torchvision is not installed. Skipping torchvision::nms",
        "torchvision is not installed. Skipping torchvision::roi_align",
        "another warning",
    ]
    assert _emitted_by(name, noise, quiet=True) == ["another warning"]


def test_quiet_third_party_drops_great_expectations_ephemeral_docs_site_lines():
    from great_expectations.data_context.types.base import InMemoryStoreBackendDefaults

    name = "great_expectations.data_context.types.base"
    noise = lambda: InMemoryStoreBackendDefaults(init_temp_docs_sites=True)
    (line,) = _emitted_by(name, noise, quiet=False)
    assert line.endswith("for ephemeral docs site")
    assert _emitted_by(name, noise, quiet=True) == []
