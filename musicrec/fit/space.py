"""Search spaces as data: each family's config declares the hyperparameters tuning may search and their
ranges; musicrec.tuning turns them into Optuna suggestions. No Optuna import here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Dim:
    """One tuned hyperparameter: a float or int range (log-uniform when log) or a list of choices. Declared
    as data beside each family's config; musicrec.tuning turns it into Optuna suggestions."""

    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = True
    choices: tuple[Any, ...] = ()


def real(low: float, high: float, log: bool = True) -> Dim:
    return Dim("float", low, high, log)


def integer(low: int, high: int, log: bool = True) -> Dim:
    return Dim("int", low, high, log)


def choice(*options: Any) -> Dim:
    return Dim("choice", choices=tuple(options))
