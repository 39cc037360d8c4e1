"""sasrec: a learnt sequence model (SASRec, Kang & McAuley 2018). Each user's latest `last` items in time
order (Interactions.order) pass through item embeddings plus learnt position embeddings and a few causal
self-attention blocks; the output at the latest position is the user's query, and score(u, i) =
<query(u), e_i> + b_i with e_i the same item embedding the input reads. Trained on every user's training
sequence cut into windows of last + 1 items to predict each next item from the items before it (a sampled
softmax over uniform negatives that a batch shares, or the full softmax on a small catalogue), with Adam
(sparse on the item tables: a step updates the rows it touched, so its cost does not grow with the
catalogue; an epoch is a seeded sample of at most epoch_windows windows, so its cost does not grow with the
users); early stopping per epoch on validation NDCG@10 (musicrec.fit.loop), a refit trains the best epoch
count.

Served as every retrieval kind is: after fitting the encoder's output on each known user's latest items is
computed once (once per distinct window) and kept as the user table, so the export's user tower is a table
lookup and scoring reads each user's latest items through it; before each validation, only the rows of its
sample of users. The shuffles and negatives come from a numpy
generator and the initial weights from torch's, both seeded by cfg.seed. Without times there is no order to
read: fit raises Skipped (a leaderboard note)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from musicrec import registry
from musicrec.fit.loop import EpochCallback, Stopping, early_stopping
from musicrec.fit.threads import cpu_threads
from musicrec.implicit.base import ImplicitResult, Interactions, RetrievalModel, Skipped
from musicrec.implicit.configs import SASRecConfig, max_epochs, patience_for
from musicrec.implicit.model import InnerProductTables
from musicrec.implicit.train import validate
from musicrec.metrics.full import sample_users

SERVE_BATCH = 4096  # users encoded at once when the user table is computed


class UniformDropout(nn.Module):
    """nn.Dropout's transform (zero each entry with probability p in training, scale the rest by 1 / (1 - p))
    from a uniform draw, which is cheaper on the CPU than the Bernoulli draw of torch's own dropout
    (benchmarks/RESULTS.md)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * torch.rand(x.shape).ge_(self.p).mul_(1.0 / (1.0 - self.p))


def distinct_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct rows of the 2-D integer array a, each row's index among them), as np.unique(a, axis=0,
    return_inverse=True) but grouped by a 64-bit hash of each row instead of sorting the rows as byte strings
    (the slow part of serving every user at the seed's size), checked row by row, with np.unique as the
    fallback should two distinct rows share a hash."""
    h = np.zeros(len(a), np.uint64)
    with np.errstate(over="ignore"):
        for column in a.T:
            h = h * np.uint64(0x9E3779B97F4A7C15) + column.astype(np.uint64)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    step = 1 << 16
    if all(
        np.array_equal(a[first[inverse[lo : lo + step]]], a[lo : lo + step]) for lo in range(0, len(a), step)
    ):
        return a[first], inverse
    rows, inverse = np.unique(a, axis=0, return_inverse=True)
    return rows, inverse.reshape(-1)


class Block(nn.Module):
    """Pre-norm causal self-attention then a position-wise feed-forward layer, each with a residual."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ff = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.drop = UniformDropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x (b, L, d); mask (b, 1, L, L): True where a position may attend to a key. last_only: the output
        at the latest position alone, (b, 1, d) (every position is still a key and a value)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if last_only:
            q, mask, x = q[:, :, -1:], mask[:, :, -1:], x[:, -1:]
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        att = self.drop(att.masked_fill(~mask, float("-inf")).softmax(-1))
        x = x + self.drop(self.out((att @ v).transpose(1, 2).reshape(b, x.shape[1], d)))
        return x + self.drop(self.ff(self.norm2(x)))


class SequenceTables(InnerProductTables, nn.Module):
    """The encoder (item and position embeddings, blocks, item bias) and the served user table computed from
    it: query(u) = user_query[u], the encoder's output at each user's latest item (zero without items)."""

    def __init__(self, cfg: SASRecConfig, n_users: int, n_items: int) -> None:
        super().__init__()
        # sparse: a step's gradient (and its Adam update) touches only the items of its batch and negatives,
        # so a step costs the same on a catalogue of 457K items as on one of 5K
        self.item = nn.Embedding(n_items, cfg.factors, padding_idx=0, sparse=True)
        nn.init.normal_(self.item.weight, std=cfg.factors**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.position = nn.Embedding(cfg.last, cfg.factors)
        nn.init.normal_(self.position.weight, std=0.02)
        self.blocks = nn.ModuleList([Block(cfg.factors, cfg.heads, cfg.dropout) for _ in range(cfg.blocks)])
        self.norm, self.drop = nn.LayerNorm(cfg.factors), UniformDropout(cfg.dropout)
        self.item_bias_table = nn.Embedding(n_items, 1, sparse=True)
        nn.init.zeros_(self.item_bias_table.weight)
        self.register_buffer("user_query", torch.zeros(n_users, cfg.factors))

    def encode(self, seqs: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(b, L) right-aligned item windows (0 = padding) -> (b, L, d): each position's output reads only
        itself and the items before it (a padding position reads itself alone, and nobody reads it).
        last_only: (b, 1, d), the latest position's output alone, which is all serving reads; the last block
        then computes its attention and feed-forward layer for that position only."""
        n = seqs.shape[1]
        real = seqs > 0
        x = self.drop(self.item(seqs) * math.sqrt(self.item.embedding_dim) + self.position.weight[-n:])
        x = x * real[..., None]
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        mask = (causal & real[:, None, :]) | torch.eye(n, dtype=torch.bool)
        for depth, block in enumerate(self.blocks, 1):
            if last_only and depth == len(self.blocks):
                x = block(x, mask[:, None], last_only=True) * real[:, -1:, None]
            else:
                x = block(x, mask[:, None]) * real[..., None]
        return self.norm(x)

    @torch.no_grad()
    def serve(self, latest: np.ndarray, users: np.ndarray | None = None) -> None:
        """Recompute the user table from each user's latest items (n_users, L), in eval mode; only the rows
        of `users` when given (a validation reads its sample of users only)."""
        was = self.training
        self.eval()
        rows = np.arange(len(latest)) if users is None else np.asarray(users, np.int64)
        # users with the same latest items get the same query: each distinct window is encoded once
        windows, which = distinct_rows(latest[rows])
        queries = torch.empty(len(windows), self.user_query.shape[1])
        for lo in range(0, len(windows), SERVE_BATCH):
            seqs = torch.as_tensor(windows[lo : lo + SERVE_BATCH])
            queries[lo : lo + len(seqs)] = self.encode(seqs, last_only=True)[:, -1] * (seqs[:, -1:] > 0)
        self.user_query[torch.as_tensor(rows)] = queries[torch.as_tensor(which)]
        self.train(was)

    def bias(self, items: torch.Tensor) -> torch.Tensor:
        """b_i of each item in `items` (any shape)."""
        return self.item_bias_table(items).squeeze(-1)

    @property
    def item_bias(self) -> torch.Tensor:  # type: ignore[override]
        return self.item_bias_table.weight.detach()[:, 0]

    def query(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_query.index_select(0, users)

    def item_vectors(self) -> torch.Tensor:
        return self.item.weight.detach()

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.query(user_idx) * self.item_vectors()[item_idx]).sum(-1) + self.item_bias[item_idx]


class Sequences:
    """Every user's items in time order: each user's latest `last` (served) and the training windows."""

    def __init__(self, data: Interactions, last: int) -> None:
        if data.order is None:
            raise Skipped("skipped: the input has no times, so there is no order to follow")
        sort = np.lexsort((np.asarray(data.order), np.asarray(data.users)))  # stable: ties keep pair order
        users, self.items = np.asarray(data.users, np.int64)[sort], np.asarray(data.items, np.int64)[sort]
        self.starts = np.searchsorted(users, np.arange(data.n_users + 1))
        self.last, self.n_users = last, data.n_users

    def latest(self) -> np.ndarray:
        """(n_users, last): each user's latest items right-aligned, oldest first, 0-padded on the left."""
        out = np.zeros((self.n_users, self.last), np.int64)
        for u in np.flatnonzero(np.diff(self.starts)):
            seq = self.items[max(self.starts[u], self.starts[u + 1] - self.last) : self.starts[u + 1]]
            out[u, self.last - len(seq) :] = seq
        return out

    def windows(self) -> np.ndarray:
        """(n, last + 1): every user's sequence of >= 2 items cut from its end into windows of last + 1 items
        overlapping by one, so every item but a user's first is a target once; right-aligned, 0-padded."""
        width, rows = self.last + 1, []
        for u in np.flatnonzero(np.diff(self.starts) >= 2):
            lo, end = self.starts[u], self.starts[u + 1]
            while end - lo >= 2:
                seq = self.items[max(lo, end - width) : end]
                rows.append(np.pad(seq, (width - len(seq), 0)))
                end -= width - 1
        return np.array(rows, np.int64).reshape(-1, width)


class Trainer:
    """The model, its Adam state and a seeded numpy generator; train_epoch runs one shuffled pass."""

    def __init__(self, cfg: SASRecConfig, model: SequenceTables, windows: np.ndarray) -> None:
        self.cfg, self.model, self.windows = cfg, model, windows
        self.rng = np.random.default_rng(cfg.seed)
        tables = [model.item.weight, model.item_bias_table.weight]
        dense = [p for p in model.parameters() if all(p is not t for t in tables)]
        # Adam on the tables' touched rows only (their gradients are sparse); AdamW on the encoder. The
        # tables have no weight decay: decaying every row each step is the dense cost avoided here.
        self.opt = torch.optim.AdamW(dense, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sparse_opt = torch.optim.SparseAdam(tables, lr=cfg.lr)

    def train_epoch(self) -> float:
        """Mean cross-entropy per predicted position over one pass in a seeded random order."""
        self.model.train()
        order = self.rng.permutation(len(self.windows))
        if 0 < self.cfg.epoch_windows < len(order):
            order = order[: self.cfg.epoch_windows]
        total, count = 0.0, 0
        for lo in range(0, len(order), self.cfg.batch_size):
            batch = torch.as_tensor(self.windows[order[lo : lo + self.cfg.batch_size]])
            loss, n = self.step(batch[:, :-1], batch[:, 1:])
            total, count = total + loss * n, count + n
        return total / max(1, count)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
        """One Adam step on the mean cross-entropy of each real position's next item."""
        m, n_items = self.model, self.model.item.num_embeddings
        keep = (inputs > 0) & (targets > 0)
        h = m.encode(inputs)[keep]
        y = targets[keep]
        if self.cfg.negatives >= n_items - 1:  # the full softmax, the unknown item never a candidate
            every = torch.arange(n_items)
            logits = h @ m.item(every).T + m.bias(every)
            logits[:, 0] = float("-inf")
            loss = nn.functional.cross_entropy(logits, y)
        else:
            neg = torch.as_tensor(self.rng.integers(1, n_items, self.cfg.negatives))
            pos = (h * m.item(y)).sum(-1, keepdim=True) + m.bias(y)[:, None]
            other = (h @ m.item(neg).T + m.bias(neg)).masked_fill(neg[None, :] == y[:, None], float("-inf"))
            logits = torch.cat([pos, other], 1)
            loss = nn.functional.cross_entropy(logits, torch.zeros(len(y), dtype=torch.int64))
        self.opt.zero_grad()
        self.sparse_opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sparse_opt.step()
        return float(loss.detach()), len(y)


def start(cfg: SASRecConfig, data: Interactions) -> tuple[SequenceTables, Sequences]:
    """The untrained model (seeded) and the data's sequences; the user table is the start's."""
    seqs = Sequences(data, cfg.last)
    torch.manual_seed(cfg.seed)
    return SequenceTables(cfg, data.n_users, data.n_items), seqs


class SASRec(RetrievalModel):
    """The contract's three class methods for sasrec."""

    @classmethod
    def fit(
        cls,
        name: str,
        cfg: SASRecConfig,
        data: Interactions,
        *,
        threads: int = 1,
        on_epoch: EpochCallback | None = None,
    ) -> ImplicitResult:
        with cpu_threads(threads):
            model, seqs = start(cfg, data)
            latest, trainer = seqs.latest(), Trainer(cfg, model, seqs.windows())
            users = sample_users(np.flatnonzero(np.diff(data.validation.indptr)), cfg.val_users, cfg.seed)

            def evaluate() -> dict[str, float]:
                model.serve(latest, users)
                return validate(model, users, data.validation, data.exclude)

            fitted = early_stopping(
                name,
                model,
                trainer.train_epoch,
                evaluate,
                max_epochs(cfg, len(data.users)),
                Stopping.of(registry.FAMILIES["retrieval"], patience=patience_for(cfg, len(data.users))),
                on_epoch,
            )
            model.serve(latest)  # every user's row (the validations computed their sample's only)
        model.eval()
        return ImplicitResult(
            name, cfg, model, fitted.best_epoch, fitted.best, fitted.history, fitted.seconds
        )

    @classmethod
    def refit(
        cls, name: str, cfg: SASRecConfig, data: Interactions, epochs: int, *, threads: int = 1
    ) -> SequenceTables:
        """`epochs` epochs on every interaction; the user table from each user's latest items of them all."""
        with cpu_threads(threads):
            model, seqs = start(cfg, data)
            trainer = Trainer(cfg, model, seqs.windows())
            for _ in range(epochs):
                trainer.train_epoch()
            model.serve(seqs.latest())
        return model.eval()

    @classmethod
    def rebuild(
        cls,
        cfg: SASRecConfig,
        n_users: int,
        n_items: int,
        state: dict[str, torch.Tensor],
        text: torch.Tensor | None,
    ) -> SequenceTables:
        model = SequenceTables(cfg, n_users, n_items)
        model.load_state_dict(state)
        return model.eval()
