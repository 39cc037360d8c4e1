"""Terminal output for flows started from the musicrec CLI: tracebacks kept out of the console, and one
progress bar per model with the log lines printed above the bars (never on the same line)."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, TextIO

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


def console_handlers() -> list[logging.StreamHandler]:
    """The terminal handlers of Prefect's logging setup (root and prefect.* loggers), each once."""
    found: list[logging.StreamHandler] = []
    for name in ["", *[n for n in logging.root.manager.loggerDict if n.startswith("prefect")]]:
        for handler in logging.getLogger(name).handlers:
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and handler not in found
            ):
                found.append(handler)
    return found


def quiet_console_tracebacks() -> None:
    """Configure Prefect's logging now and filter tracebacks out of its terminal handlers."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    for handler in console_handlers():
        handler.addFilter(_NoTraceback())


EPOCH_LINE = re.compile(
    r"^(?P<model>[\w-]+): epoch (?P<epoch>\d+)/(?P<epochs>\d+) .*?(?:\((?P<seconds>[\d.]+)s\))?$"
)
DONE_LINE = re.compile(r"^(?P<model>[\w-]+): val_rmse \S+ test_rmse \S+ in (?P<seconds>[\d.]+)s")


class _Bar(tqdm):
    """A bar whose elapsed time stops when its model is done: later redraws (log lines above, close) keep
    the true fit time instead of the time since the bar appeared."""

    frozen: float | None = None

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        if self.frozen is not None:
            d.update(elapsed=self.frozen, rate=self.n / self.frozen if self.frozen > 0 else None)
        return d


class EpochBars(logging.Handler):
    """One progress bar per model on a terminal, fed by the training tasks' epoch log lines
    ("gmf: epoch 3/20 ... (1.2s)"). The console stops printing those lines while bars are shown; the UI and
    non-terminal logs keep every line. A model that stops early ends its bar at the last epoch it ran, and its
    elapsed time is the fit time from its done line ("gmf: val_rmse ... in 12.3s")."""

    def __init__(self, stream: TextIO, owns_stream: bool = False) -> None:
        super().__init__()
        self.stream = stream
        self.owns_stream = owns_stream
        self.bars: dict[str, _Bar] = {}
        self._redirected: list[tuple[logging.StreamHandler, TextIO]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        done = DONE_LINE.match(message)
        if done and done["model"] in self.bars:
            with _Bar.get_lock():
                bar = self.bars[done["model"]]
                bar.total, bar.frozen = bar.n, float(done["seconds"])
                bar.refresh()
            return
        match = EPOCH_LINE.match(message)
        if match:
            self._advance(match, record.created)

    def _advance(self, match: re.Match[str], created: float) -> None:
        model, epoch = match["model"], int(match["epoch"])
        with _Bar.get_lock():
            if model not in self.bars:
                bar = _Bar(
                    total=int(match["epochs"]),
                    desc=f"{model:<15}",
                    unit="epoch",
                    position=len(self.bars),
                    file=self.stream,
                    leave=True,
                )
                bar.start_t = created - float(
                    match["seconds"] or 0.0
                )  # the first epoch began before its line
                self.bars[model] = bar
            bar = self.bars[model]
            bar.update(epoch - bar.n)

    def write_above(self, text: str) -> None:
        """Write text (whole lines) on the terminal above the bars: clear them, write, draw them again."""
        with _Bar.get_lock():
            for bar in self.bars.values():
                bar.clear(nolock=True)
            self.stream.write(text)
            self.stream.flush()
            for bar in self.bars.values():
                bar.refresh(nolock=True)

    def redirect(self, handler: logging.StreamHandler) -> None:
        """Send a console handler's output through write_above until close()."""
        above = _AboveBars(self, handler.stream)
        self._redirected.append((handler, handler.setStream(above)))
        if hasattr(handler, "console"):  # Prefect's rich-based console handler keeps its own reference
            handler.console.file = above

    def close(self) -> None:
        for handler, original in self._redirected:
            handler.setStream(original)
            if hasattr(handler, "console"):
                handler.console.file = original
        self._redirected.clear()
        with _Bar.get_lock():
            for bar in self.bars.values():
                bar.close()
        if self.owns_stream:
            self.stream.close()
        super().close()


class _AboveBars:
    """A text stream for a logging handler: complete lines go to EpochBars.write_above."""

    def __init__(self, bars: EpochBars, original: TextIO) -> None:
        self.bars, self.original, self.pending = bars, original, ""

    def write(self, text: str) -> int:
        self.pending += text
        if "\n" in self.pending:
            head, _, self.pending = self.pending.rpartition("\n")
            self.bars.write_above(head + "\n")
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()


class _NoEpochLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not EPOCH_LINE.match(record.getMessage())


def show_epoch_bars() -> EpochBars:
    """Draw epoch bars on the terminal instead of epoch log lines, with every other console log line printed
    above them; remove the handler from the root logger and close it when done.

    The bars and the lines above them share their own handle on the terminal: Prefect's temporary server
    shares stderr and can leave it non-blocking, and tqdm silently stops drawing after the first EAGAIN on
    a shared handle."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # the console handlers must exist before they can be redirected
    bars = EpochBars(open(os.ttyname(sys.stderr.fileno()), "w", buffering=1), owns_stream=True)  # noqa: SIM115
    logging.getLogger("").addHandler(bars)  # task-run records propagate to the root logger
    for handler in console_handlers():
        handler.addFilter(_NoEpochLines())
        bars.redirect(handler)
    return bars
