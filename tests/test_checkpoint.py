"""musicrec.fit.checkpoint.BestState: the best epoch's weights come back exactly, from memory or from disk."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from musicrec.fit.checkpoint import BestState


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(50, 4)
        self.lin = nn.Linear(4, 1)
        self.register_buffer("mean", torch.tensor(3.5))
        self.register_buffer("count", torch.tensor([7], dtype=torch.int64))


def _state(m: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().clone().numpy() for k, v in m.state_dict().items()}


@torch.no_grad()
def _scramble(m: nn.Module) -> None:
    for v in m.state_dict().values():
        v.add_(torch.ones_like(v))


@pytest.mark.parametrize("spill_bytes", [0, 1 << 30], ids=["disk", "memory"])
def test_restore_gives_back_the_kept_state_not_the_last(spill_bytes: int) -> None:
    torch.manual_seed(0)
    m = Tiny()
    with BestState(m, spill_bytes=spill_bytes) as kept:
        assert kept.on_disk == (spill_bytes == 0)
        _scramble(m)
        kept.keep()
        best = _state(m)
        _scramble(m)
        assert not np.array_equal(_state(m)["table.weight"], best["table.weight"])
        kept.restore()
        after = _state(m)
    assert after.keys() == best.keys()
    for k in best:
        assert after[k].dtype == best[k].dtype
        np.testing.assert_array_equal(after[k], best[k])


def test_disk_copy_is_in_private_files_deleted_on_exit_and_nothing_stays_in_memory() -> None:
    m = Tiny()
    with BestState(m, spill_bytes=0) as kept:
        kept.keep()
        folder = kept._folder
        assert folder is not None and folder.is_dir()
        assert Path(tempfile.gettempdir()) in folder.parents
        files = sorted(folder.glob("*.npy"))
        assert len(files) == len(m.state_dict())
        assert kept._memory == {}
        for f in files:  # plain .npy, loadable without pickles
            np.load(f, allow_pickle=False)
    assert not folder.exists()


def test_folder_is_deleted_when_training_fails() -> None:
    m = Tiny()
    with pytest.raises(ValueError), BestState(m, spill_bytes=0) as kept:
        kept.keep()
        folder = kept._folder
        raise ValueError("epoch failed")
    assert folder is not None and not folder.exists()


@pytest.mark.parametrize("spill_bytes", [0, 1 << 30])
def test_restore_before_keep_is_an_error(spill_bytes: int) -> None:
    with BestState(Tiny(), spill_bytes=spill_bytes) as kept, pytest.raises(RuntimeError, match="before keep"):
        kept.restore()


def test_the_size_threshold_decides_where_the_copy_lives() -> None:
    m = Tiny()
    size = sum(t.numel() * t.element_size() for t in m.state_dict().values())
    with BestState(m, spill_bytes=size) as at, BestState(m, spill_bytes=size + 1) as above:
        assert at.on_disk and not above.on_disk
