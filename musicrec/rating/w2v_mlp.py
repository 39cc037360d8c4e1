"""The seed's Word2Vec MLP: user (8), item (5) and the item's Word2Vec text vector (50) into an MLP.

The text table is a buffer indexed by item index, so a new item with text but no ratings still gets a
text-informed prediction (item cold start), inside the exported ONNX graph too. A run without any text
gives an all-zero table: the model then learns what the plain MLP learns (the report says so).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from musicrec.rating.configs import W2VMLPConfig
from musicrec.rating.mlp import MLP


class W2VMLP(MLP):
    name = "w2v_mlp"
    config_class = W2VMLPConfig
    uses_text = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        global_mean: float,
        cfg: W2VMLPConfig,
        *,
        item_text: np.ndarray | None = None,
        **kw: Any,
    ) -> None:
        if item_text is None or item_text.shape[0] != n_items:
            raise ValueError(f"w2v_mlp needs an item text table with {n_items} rows")
        self._text_dim = int(item_text.shape[1])
        super().__init__(n_users, n_items, global_mean, cfg, **kw)
        self.register_buffer("item_text", torch.as_tensor(item_text, dtype=torch.float32))

    def extra_dim(self) -> int:
        return self._text_dim

    def features(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        text = self.item_text.index_select(0, item_idx)
        return torch.cat([super().features(user_idx, item_idx), text], dim=-1)
