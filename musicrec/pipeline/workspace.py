"""Where one run keeps its intermediate files (local) and what it publishes (the store)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from musicrec.store import atomic_write


def new_run_id() -> str:
    """Sortable and unique: UTC time plus random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class Workspace:
    """Paths of one run's local working files."""

    root: Path

    @classmethod
    def create(cls, work_dir: str | Path, run_id: str) -> Workspace:
        ws = cls(Path(work_dir).resolve() / run_id)
        ws.root.mkdir(parents=True, exist_ok=True)
        return ws

    @property
    def run_id(self) -> str:
        return self.root.name

    ratings = property(lambda self: self.root / "ratings.parquet")
    items = property(lambda self: self.root / "items.parquet")
    splits = property(lambda self: self.root / "splits")
    item_vectors = property(lambda self: self.root / "item_vectors.parquet")
    word_vectors = property(lambda self: self.root / "word2vec.txt")
    bundle = property(lambda self: self.root / "bundle")

    def model_dir(self, name: str) -> Path:
        path = self.root / "models" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, relpath: str, data: Any) -> Path:
        path = self.root / relpath
        atomic_write(path, lambda fh: fh.write(json.dumps(data, indent=2, default=str).encode()))
        return path

    def read_json(self, relpath: str) -> Any:
        return json.loads((self.root / relpath).read_text())
