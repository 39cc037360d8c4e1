"""The one epoch loop every family's SGD models train in: validation after each epoch, early stopping on the
family's metric, the best epoch's weights kept (musicrec.fit.checkpoint) and restored at the end.

Every history row has the same keys whatever the family: epoch (0 = the untrained start), epochs (the most
this fit runs), loss (NaN at epoch 0), the validation metrics, seconds (training) and eval_seconds. The
epoch callback gets the row with the model's name, the deciding metric's name and its value, so one line
format (format_epoch) serves every model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from musicrec.fit.checkpoint import BestState

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Stopping:
    """What decides: the validation metric, its direction, and how long to wait for a better epoch.

    An epoch is better when it beats the best so far by more than min_delta in the metric's direction; the
    fit stops after `patience` epochs in a row that are not."""

    metric: str
    bigger_is_better: bool
    patience: int
    min_delta: float = 0.0

    @classmethod
    def of(cls, judge: Any, patience: int, min_delta: float = 0.0) -> Stopping:
        """A family's rule from how the registry judges it (musicrec.registry.FAMILIES[family]): the epoch
        history's metric and its direction."""
        return cls(judge.epoch_metric, judge.bigger_is_better, patience, min_delta)

    def better(self, value: float, best: float) -> bool:
        if self.bigger_is_better:
            return value > best + self.min_delta
        return value < best - self.min_delta


@dataclass
class Fitted:
    """How a fit went: the best epoch (0: none beat the start), its history row, every row."""

    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> dict[str, Any]:
        return self.history[self.best_epoch] if self.history else {}

    @property
    def epochs(self) -> int:
        """Epochs trained (the start is not one)."""
        return max(0, len(self.history) - 1)


def early_stopping(
    name: str,
    model: nn.Module,
    train_epoch: Callable[[], float],
    evaluate: Callable[[], dict[str, float]],
    epochs: int,
    rule: Stopping,
    on_epoch: EpochCallback | None = None,
) -> Fitted:
    """Train up to `epochs` epochs, evaluating after each; keep the best by `rule`, restored at the end."""
    t0 = time.perf_counter()
    out = Fitted(history=[_row(0, epochs, math.nan, evaluate(), 0.0, 0.0)])
    best = out.history[0][rule.metric]
    with BestState(model) as kept:  # large states go to disk: the tables are held once, not twice
        kept.keep()
        for epoch in range(1, epochs + 1):
            t = time.perf_counter()
            loss = train_epoch()
            train_s = time.perf_counter() - t
            row = _row(epoch, epochs, loss, evaluate(), train_s, time.perf_counter() - t - train_s)
            out.history.append(row)
            if on_epoch is not None:
                on_epoch({"model": name, **row, "metric": rule.metric, "value": row[rule.metric]})
            if rule.better(row[rule.metric], best):
                best, out.best_epoch = row[rule.metric], epoch
                kept.keep()
            elif epoch - out.best_epoch >= rule.patience:
                break
        kept.restore()
    out.seconds = time.perf_counter() - t0
    return out


def fixed_epochs(
    name: str, train_epoch: Callable[[], float], epochs: int, on_epoch: EpochCallback | None = None
) -> Fitted:
    """Exactly `epochs` epochs without validation (a refit on every row): the last epoch is kept."""
    t0 = time.perf_counter()
    out = Fitted(best_epoch=epochs, history=[_row(0, epochs, math.nan, {}, 0.0, 0.0)])
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        row = _row(epoch, epochs, train_epoch(), {}, time.perf_counter() - t, 0.0)
        out.history.append(row)
        if on_epoch is not None:
            on_epoch({"model": name, **row, "metric": None, "value": math.nan})
    out.seconds = time.perf_counter() - t0
    return out


def _row(
    epoch: int, epochs: int, loss: float, metrics: dict[str, float], seconds: float, eval_seconds: float
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "epochs": epochs,
        "loss": loss,
        **metrics,
        "seconds": seconds,
        "eval_seconds": eval_seconds,
    }


def format_epoch(e: dict[str, Any]) -> str:
    """One plain progress line for an epoch callback's row, the same for every family."""
    shown = f" val {e['metric']} {e['value']:.4f}" if e.get("metric") else ""
    return (
        f"{e['model']}: epoch {e['epoch']}/{e['epochs']} loss {e['loss']:.4f}{shown}, "
        f"validation {e['eval_seconds']:.1f}s ({e['seconds']:.1f}s)"
    )
