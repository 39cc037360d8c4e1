"""The one reader of the champion pointer (models/champion.json): its content checked for shape, so a
truncated, zero-filled or wrong-shaped pointer is reported as damaged instead of failing where it is used."""

from __future__ import annotations

import json
from typing import Any

from musicrec.errors import StoreError
from musicrec.store import layout
from musicrec.store.base import Store

HINT = (
    "score or recommend a published version with --version (musicrec runs lists them); the next "
    "`musicrec train` replaces the damaged pointer with its verified champion"
)


HISTORY = ("version", "sha256")  # a pointer's optional "history": the bundle whose user_history it serves


class PointerDamaged(StoreError):
    """The pointer exists but cannot be used. `token` is its version token, for a conditional rewrite."""

    def __init__(self, message: str, *, hint: str = HINT, token: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.token = token


def parse_pointer(data: bytes, where: str) -> dict[str, Any]:
    """The pointer's content as a dict with a non-empty str version and a str sha256, else PointerDamaged."""
    try:
        pointer = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise PointerDamaged(f"the champion pointer {where} is damaged: not valid JSON ({e})") from None
    if not isinstance(pointer, dict):
        raise PointerDamaged(
            f"the champion pointer {where} is damaged: a JSON {type(pointer).__name__}, "
            "not an object with version and sha256"
        )
    bad = [k for k in ("version", "sha256") if not isinstance(pointer.get(k), str) or not pointer[k]]
    if bad:
        raise PointerDamaged(f"the champion pointer {where} is damaged: no valid {' or '.join(bad)}")
    history = pointer.get("history")  # optional: the serving history of a later, not promoted run
    if history is not None and not (
        isinstance(history, dict) and all(isinstance(history.get(k), str) and history[k] for k in HISTORY)
    ):
        raise PointerDamaged(
            f"the champion pointer {where} is damaged: its history is not an object with version and sha256"
        )
    return pointer


def read_pointer(store: Store) -> tuple[dict[str, Any] | None, str | None]:
    """(pointer, version token) or (None, None) when nothing was promoted yet; PointerDamaged (carrying the
    token) when the pointer exists but is unusable."""
    got = store.read_versioned(layout.CHAMPION)
    if got is None:
        return None, None
    try:
        return parse_pointer(got[0], store.url_for(layout.CHAMPION)), got[1]
    except PointerDamaged as e:
        e.token = got[1]
        raise
