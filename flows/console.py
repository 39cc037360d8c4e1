"""Terminal output for flows started from the musicrec CLI."""

from __future__ import annotations

import logging

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
