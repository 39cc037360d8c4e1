"""The seed's Word2Vec MLP: user (8), item (5) and the item's Word2Vec text vector (50) into an MLP.

The text table is a buffer indexed by item index, so a new item with text but no ratings still
gets a text-informed prediction (item cold start), inside the exported ONNX graph too.
"""

from __future__ import annotations

import numpy as np
import torch

from musicrec.models.base import ModelConfig
from musicrec.models.mlp import MLP


class W2VMLP(MLP):
    name = "w2v_mlp"

    def __init__(self, n_users: int, n_items: int, global_mean: float, cfg: ModelConfig,
                 item_text: np.ndarray | None = None) -> None:
        if item_text is None or item_text.shape[0] != n_items:
            raise ValueError(f"w2v_mlp needs an item text table with {n_items} rows")
        super().__init__(n_users, n_items, global_mean, cfg, item_text)
        self.register_buffer("item_text", torch.as_tensor(item_text, dtype=torch.float32))

    def extra_dim(self, item_text: np.ndarray | None) -> int:
        return 0 if item_text is None else int(item_text.shape[1])

    def features(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        text = self.item_text.index_select(0, item_idx)
        return torch.cat([super().features(user_idx, item_idx), text], dim=-1)
