"""Terminal output for flows started from the musicrec CLI."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO

from tqdm import tqdm

_MARK = "\nTraceback (most recent call last)"


class _NoTraceback(logging.Filter):
    """Keep the log line, drop its traceback: the CLI prints one clear message instead (--debug keeps it).
    Only console handlers get this filter; the API handler still sends full tracebacks to the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        if isinstance(record.msg, str) and _MARK in record.msg:
            record.msg = record.msg.split(_MARK)[0]
        return True


def quiet_console_tracebacks() -> None:
    """Configure Prefect's logging now and filter tracebacks out of its terminal handlers."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    for name in ["", *[n for n in logging.root.manager.loggerDict if n.startswith("prefect")]]:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.addFilter(_NoTraceback())


EPOCH_LINE = re.compile(r"^(?P<model>[\w-]+): epoch (?P<epoch>\d+)/(?P<epochs>\d+) ")
DONE_LINE = re.compile(r"^(?P<model>[\w-]+): val_rmse \S+ test_rmse \S+ in ")


class EpochBars(logging.Handler):
    """One progress bar per model on a terminal, fed by the training tasks' epoch log lines
    ("gmf: epoch 3/20 ..."). The console stops printing those lines while bars are shown; the UI and
    non-terminal logs keep every line. A model that stops early ends its bar at the last epoch it ran."""

    def __init__(self, stream: TextIO, owns_stream: bool = False) -> None:
        super().__init__()
        self.stream = stream
        self.owns_stream = owns_stream
        self.bars: dict[str, tqdm] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        done = DONE_LINE.match(message)
        if done and done["model"] in self.bars:
            bar = self.bars[done["model"]]
            bar.total = bar.n
            bar.refresh()
            return
        match = EPOCH_LINE.match(message)
        if not match:
            return
        model, epoch = match["model"], int(match["epoch"])
        if model not in self.bars:
            self.bars[model] = tqdm(total=int(match["epochs"]), desc=f"{model:<15}", unit="epoch",
                                    position=len(self.bars), file=self.stream, leave=True)
        bar = self.bars[model]
        bar.update(epoch - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        if self.owns_stream:
            self.stream.close()
        super().close()


class _NoEpochLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not EPOCH_LINE.match(record.getMessage())


def show_epoch_bars() -> EpochBars:
    """Draw epoch bars on the terminal instead of epoch log lines; remove the handler and close it when done.

    The bars get their own handle on the terminal: Prefect's temporary server shares stderr and can leave
    it non-blocking, and tqdm silently stops drawing after the first EAGAIN on a shared handle."""
    bars = EpochBars(open(os.ttyname(sys.stderr.fileno()), "w", buffering=1), owns_stream=True)  # noqa: SIM115
    root = logging.getLogger("")
    root.addHandler(bars)  # task-run records propagate to the root logger
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.addFilter(_NoEpochLines())
    return bars
