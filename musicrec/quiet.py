"""Keep third-party noise out of a normal run's log: each filter sits on the exact logger that emits the line.

- torch's ONNX exporter logs four "torchvision is not installed. Skipping torchvision::nms" (roi_align,
  roi_pool, deform_conv2d) warnings at torch.onnx._internal.exporter._registration on every export; musicrec
  never uses torchvision operators.
- Great Expectations logs "Created temporary directory '/tmp/…' for ephemeral docs site" at INFO for every
  ephemeral context, at great_expectations.data_context.types.base, a logger that sets its own level to INFO
  (so raising the level of "great_expectations" does not silence it).

Filters on a logger object survive the module's later import (logging.getLogger returns the same object), so
quiet_third_party() can run before torch or great_expectations are imported. It is idempotent.
"""

from __future__ import annotations

import logging
import re

NOISE: dict[str, re.Pattern[str]] = {
    "torch.onnx._internal.exporter._registration": re.compile(r"^torchvision is not installed\. Skipping "),
    "great_expectations.data_context.types.base": re.compile(r"for ephemeral docs site$"),
}


class DropMatching(logging.Filter):
    """Drop the records whose formatted message matches a pattern; keep every other record."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_third_party() -> None:
    """Install the NOISE filters on their loggers (once per process; call it from the CLI and each flow)."""
    for name, pattern in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMatching) and f.pattern is pattern for f in logger.filters):
            logger.addFilter(DropMatching(pattern))
