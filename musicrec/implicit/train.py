"""Training of the implicit models: sampled negatives, row-wise sparse AdaGrad on the touched rows only, early
stopping on validation NDCG@10 (full ranking over a fixed seeded sample of users), best epoch restored."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from musicrec import registry
from musicrec.fit.adagrad import ACC_START, RowAdagrad
from musicrec.fit.history import history_norm, user_histories
from musicrec.fit.loop import EpochCallback, Stopping, early_stopping
from musicrec.fit.threads import cpu_threads
from musicrec.implicit.base import ImplicitResult, Interactions, RetrievalModel
from musicrec.implicit.configs import ImplicitConfig, max_epochs, patience_for
from musicrec.implicit.losses import LOSSES, batch_loss
from musicrec.implicit.model import ImplicitEnsemble, ImplicitMF
from musicrec.implicit.sampling import NegativeSampler
from musicrec.metrics.bounded import evaluate_inner_product
from musicrec.metrics.full import evaluate_static, sample_users
from musicrec.metrics.topn import interaction_matrix

_EMPTY = np.zeros(
    (0, 0), np.float32
)  # the fused step's text, projection and accumulator of a model without text
_NO_WEIGHTS = np.zeros(0, np.float32)  # the fused step's weights when every positive weighs 1


class Trainer:
    """One model, its optimiser state and its negative sampler; train_epoch runs one shuffled pass."""

    def __init__(
        self,
        cfg: ImplicitConfig,
        model: ImplicitMF,
        users: np.ndarray,
        items: np.ndarray,
        n_items: int,
        threads: int = 1,
        weights: np.ndarray | None = None,
    ) -> None:
        self.cfg, self.model, self.loss = cfg, model, LOSSES[cfg.loss]
        self.threads = max(1, threads)  # of the fused step (the flow's side-by-side fits use one each)
        self.users = torch.as_tensor(np.asarray(users, np.int64))
        self.items = torch.as_tensor(np.asarray(items, np.int64))
        # each positive's share of the loss (implicit feedback's confidence); None: 1 each, no product taken
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, np.float32))
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        counts = np.bincount(items, minlength=n_items) if cfg.neg_sampling == "popularity" else None
        self.sampler = NegativeSampler(
            n_items, self.gen, counts, cfg.neg_exponent, (users, items) if cfg.resample_positives else None
        )
        self.opt = RowAdagrad(model.tables(), cfg.lr)
        self.proj_acc = None if model.text_proj is None else torch.full_like(model.text_proj, ACC_START)
        self.fused = cfg.fused and model.context is not None and not model.free_user
        self.pool: ThreadPoolExecutor | None = None
        if self.fused:  # numba: imported only when a model trains with it
            from musicrec.implicit import fused

            self.kernels, self.loss_code = fused, fused.LOSS_CODES[cfg.loss]
            if self.threads > 1:
                self.pool = ThreadPoolExecutor(self.threads - 1, "musicrec-fism")
        # the fused step's scratch maps of user / item / context row id -> batch position, -1 between steps
        self.scratch = (
            [np.full(n, -1, np.int64) for n in (model.history_ptr.shape[0] - 1, n_items, n_items)]
            if self.fused
            else []
        )

    def fused_step(
        self,
        u: torch.Tensor,
        i: torch.Tensor,
        neg: torch.Tensor,
        w: torch.Tensor | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> float:
        """Trainer.step as compiled kernels (musicrec.implicit.fused) on self.threads threads: the same
        update, histories longer than history_limit drawn from this trainer's generator. The queries, the
        hardest negatives and each row's loss and gradients are split by row; the sums over the rows and the
        updates by distinct row (each thread reads every row in row order and adds only to its own rows). The
        same arithmetic in the same order whatever the thread count. meanwhile (no generator use; the next
        batch's negatives): on the pool beside this step's history sums when there is a pool, else after the
        step; done when the step returns."""
        k, cfg, m = self.kernels, self.cfg, self.model
        draws = torch.rand(len(u) * max(cfg.history_limit, 0), generator=self.gen).numpy()
        beside = self.pool.submit(meanwhile) if self.pool is not None and meanwhile is not None else None
        text, proj, proj_acc = (
            (m.text.numpy(), m.text_proj.detach().numpy(), self.proj_acc.numpy())
            if m.text_proj is not None and self.proj_acc is not None
            else (_EMPTY,) * 3
        )
        context, item, bias = (
            m.context.detach().numpy(),
            m.item.detach().numpy(),
            m.item_bias.detach().numpy(),
        )
        users, pos, negs = u.numpy(), i.numpy(), neg.numpy()
        hptr, pick, f = m.history_ptr.numpy(), cfg.negative_pick == "max", item.shape[1]
        dt = text.shape[1] if len(text) else 0
        inv, distinct, h_start, h_seg, h_row, h_w = k.batch_histories(
            users, draws, hptr, m.history_items.numpy(), cfg.history_limit, self.scratch[0]
        )
        query, norm, z, used = k.step_buffers(len(users), f, dt, negs.shape[1], pick)
        summed = np.zeros((len(distinct), f), np.float32)
        if beside is not None:  # the pool is drawing the next batch: the history sums on this thread alone
            k.sum_histories(0, 1, context, h_start, h_row, h_w, summed)
            beside.result()
        else:
            self._each_thread(k.sum_histories, context, h_start, h_row, h_w, summed)
        self._each_thread(
            k.queries_and_negatives,
            context,
            item,
            bias,
            text,
            proj,
            users,
            pos,
            negs,
            hptr,
            m.history_alpha,
            inv,
            summed,
            pick,
            query,
            norm,
            z,
            used,
        )
        per_row = k.row_buffers(len(users), f, dt, used.shape[1])
        weight = _NO_WEIGHTS if w is None else w.numpy()
        self._each_thread(
            k.row_gradients,
            item,
            bias,
            text,
            proj,
            pos,
            used,
            query,
            norm,
            z,
            self.loss_code,
            cfg.margin,
            weight,
            per_row,
        )
        loss, where, items, c_where, c_rows = k.gradient_slots(
            per_row[2], pos, used, h_row, *self.scratch[1:]
        )
        sums = k.gradient_buffers(len(items), len(distinct), len(c_rows), f)
        self._each_thread(k.row_sums, query, where, c_where, per_row, inv, sums)
        a = self.opt.acc
        self._each_thread(
            k.apply_updates,
            context,
            item,
            bias,
            a["context"].numpy(),
            a["item"].numpy(),
            a["item_bias"].numpy(),
            proj,
            proj_acc,
            query,
            per_row[4],
            c_where,
            c_rows,
            items,
            h_seg,
            h_w,
            sums,
            cfg.lr,
            cfg.weight_decay,
            cfg.text_lr,
        )
        k.reset_slots(items, self.scratch[1], c_rows, self.scratch[2])
        if meanwhile is not None and beside is None:
            meanwhile()
        return float(loss)

    def close(self) -> None:
        """Stop the fused step's worker threads; further steps run on one thread."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def _each_thread(self, kernel: Callable[..., None], *args: Any) -> None:
        """kernel(t, threads, *args) for every thread t: t =
        0 here, the others on the pool (nogil kernels)."""
        n = self.threads if self.pool is not None else 1
        others = [self.pool.submit(kernel, t, n, *args) for t in range(1, n)] if self.pool is not None else []
        kernel(0, n, *args)
        for f in others:
            f.result()

    def train_epoch(self) -> float:
        """Mean loss per positive over one pass in a seeded random order. With a fused step on more than one
        thread, each batch's negatives are drawn on the pool's thread while the step before computes its
        gradients on this one (the generator is used in the same order, so the draws are the same)."""
        order = torch.randperm(len(self.users), generator=self.gen)
        size = self.cfg.batch_size or min(4096, max(64, len(order) // 100))
        starts = range(0, len(order), size)
        ready: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

        def batch(start: int) -> None:
            idx = order[start : start + size]
            u = self.users.index_select(0, idx)
            w = None if self.weights is None else self.weights.index_select(0, idx)
            ready.append((u, self.items.index_select(0, idx), self.sampler.sample(u, self.cfg.negatives), w))

        total = 0.0
        if len(starts):
            batch(starts[0])
        for n in range(len(starts)):
            u, i, neg, w = ready.pop()
            ahead = partial(batch, starts[n + 1]) if n + 1 < len(starts) else None
            if self.fused:
                total += self.fused_step(u, i, neg, w, meanwhile=ahead)
            else:
                total += self.step(u, i, neg, w)
                if ahead is not None:
                    ahead()
        return total / max(1, len(order))

    def hardest(self, query: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The highest-scoring of each row's negatives for the users' query vectors (b, f), (b, 1)."""
        with torch.no_grad():
            m = self.model
            flat = neg.reshape(-1)
            rows = m.item_rows(flat, m.item.index_select(0, flat)).view(*neg.shape, -1)
            s = torch.bmm(rows, query.unsqueeze(2)).squeeze(2)
            s += m.item_bias.index_select(0, flat).view(neg.shape)
        return neg.gather(1, s.argmax(1, keepdim=True))

    def queries(
        self, u: torch.Tensor, i: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """(query, p, context): each row's user vector p_u + h_u with the positive i left out of the history
        (it is the item being predicted), the gathered p rows (None without free rows), and (rows, gathered y)
        of the context table (None without history)."""
        m = self.model
        p = m.user.index_select(0, u).requires_grad_() if m.free_user else None  # a row copy: faster than []
        if m.context is None:
            return p, p, None
        # each distinct user's history is summed once per batch: a heavy user's positives share one sum
        # (per row it cost the sum of squared history lengths, 6.7 s an epoch at the seed's shape)
        distinct, inverse = torch.unique(u, return_inverse=True)
        segment, hist, weight, count = m.history_of(distinct, self.cfg.history_limit, self.gen)
        rows = torch.cat([hist, i])
        y = m.context.index_select(0, rows).requires_grad_()
        summed = torch.zeros(len(distinct), y.shape[1]).index_add(
            0, segment, y[: len(hist)] * weight[:, None]
        )
        context = summed.index_select(0, inverse) - y[len(hist) :]
        h = context * history_norm(count.index_select(0, inverse) - 1, m.history_alpha)[:, None]
        return (h if p is None else p + h), p, (rows, y)

    def step(
        self, u: torch.Tensor, i: torch.Tensor, neg: torch.Tensor, w: torch.Tensor | None = None
    ) -> float:
        """One AdaGrad step on the summed batch loss (each positive's loss times its weight w, when given);
        returns that sum."""
        cfg, m = self.cfg, self.model
        query, p, context = self.queries(u, i)
        if cfg.negative_pick == "max" and neg.shape[1] > 1:
            neg = self.hardest(query.detach(), neg)
        items = torch.cat([i, neg.T.reshape(-1)])  # block k holds every row's k-th negative
        q = m.item.index_select(0, items).requires_grad_()
        b = m.item_bias.index_select(0, items).requires_grad_()
        proj = None if m.text_proj is None else m.text_proj.detach().clone().requires_grad_()
        s = (m.item_rows(items, q, proj).view(-1, len(u), q.shape[1]) * query).sum(-1) + b.view(-1, len(u))
        per_row = batch_loss(self.loss, s[0], s[1:].T, "mean", cfg.margin)
        loss = (per_row if w is None else per_row * w).sum()
        loss.backward()
        wd = cfg.weight_decay
        if p is not None:
            self.opt.update("user", m.user, u, p.grad + wd * p.detach())
        if context is not None:
            rows, y = context
            self.opt.update("context", m.context, rows, y.grad + wd * y.detach())
        same = torch.unique(items, return_inverse=True)  # the item table and its bias share the rows
        self.opt.update("item", m.item, items, q.grad + wd * q.detach(), same)
        self.opt.update("item_bias", m.item_bias, items, b.grad + wd * b.detach(), same)
        if proj is not None and self.proj_acc is not None:
            self.proj_acc.add_(proj.grad.pow(2))
            m.text_proj.sub_(cfg.text_lr * proj.grad / self.proj_acc.sqrt())
        return float(loss.detach())


def score_fn(model: ImplicitMF | ImplicitEnsemble) -> Callable[[np.ndarray], np.ndarray]:
    """Full-catalogue scores for a batch of users (for ranking.metrics.evaluate_scorer).

    The returned array is a buffer that the next call of the same function overwrites (a fresh 64 MB score
    matrix per batch spent about a third of the matmul's time on page faults): use it before calling again.
    The item rows are read in place (at seed size the [q_i, b_i] table was a 119 MB copy per evaluation)."""
    rows = (
        model.item_vectors()
    )  # the stored table itself for one model without text: no (items x factors) copy
    bias = model.item_bias.detach()
    buffer: list[torch.Tensor] = []

    def scores(users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            query = model.query(torch.as_tensor(users, dtype=torch.int64))
            if not buffer or buffer[0].shape[0] != len(query):
                buffer[:] = [torch.empty(len(query), rows.shape[0])]
            return torch.addmm(bias, query, rows.T, out=buffer[0]).numpy()  # <u, q_i> + b_i

    return scores


def validate(
    model: ImplicitMF | ImplicitEnsemble, users: np.ndarray, validation: sp.csr_matrix, exclude: sp.csr_matrix
) -> dict[str, float]:
    """HR@10, NDCG@10 and Recall@50 on the fixed validation users, full ranking over non-excluded items.

    A model whose users are their items, with every context row still zero (the untrained start), scores
    every user's items by the item bias alone: that is measured exactly as one global order, without the
    users x items product (about 2 s an epoch-0 validation at the seed's size). A trained one is measured by
    musicrec.metrics.bounded: the same numbers, each user's scores computed only until their held-out item's
    rank is known to be past 50."""
    if isinstance(model, ImplicitMF) and bias_only(model):
        return evaluate_static(model.item_bias.detach().numpy(), users, validation, exclude, coverage=False)
    return evaluate_model(model, users, validation, exclude)


def evaluate_model(
    model: ImplicitMF | ImplicitEnsemble,
    users: np.ndarray | None,
    heldout: sp.csr_matrix,
    exclude: sp.csr_matrix,
    **options: Any,
) -> dict[str, float]:
    """musicrec.metrics.bounded.evaluate_inner_product of the model's scores (options: max_users, seed,
    coverage, k, recall_k): evaluate_scorer's numbers, each user ranked over the items that can matter to
    them."""
    with torch.no_grad():
        return evaluate_inner_product(
            lambda rows: model.query(torch.as_tensor(rows)).numpy(),
            model.item_vectors().numpy(),
            model.item_bias.numpy(),
            users,
            heldout,
            exclude,
            **options,
        )


def bias_only(model: ImplicitMF) -> bool:
    """True if every user's vector is zero (no free user rows, all context rows zero): scores are the bias."""
    return model.context is not None and not model.free_user and not bool(model.context.detach().any())


def new_model(
    cfg: ImplicitConfig,
    n_users: int,
    n_items: int,
    users: np.ndarray,
    items: np.ndarray,
    text: torch.Tensor | None = None,
) -> ImplicitMF:
    """An untrained model for cfg; with user_history, its history is the given (user, item) interactions."""
    history = user_histories(users, items, n_users, n_items) if cfg.user_history else None
    return ImplicitMF(
        n_users, n_items, cfg.factors, cfg.init_std, cfg.seed, text, history, cfg.history_alpha, cfg.free_user
    )


def fit_implicit(
    name: str,
    interactions: tuple[np.ndarray, np.ndarray],
    n_users: int,
    n_items: int,
    validation: sp.csr_matrix,
    exclude: sp.csr_matrix | None = None,
    overrides: dict[str, Any] | None = None,
    threads: int = 1,
    on_epoch: EpochCallback | None = None,
    text: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> ImplicitResult:
    """Fit the registered retrieval model `name` on (user
    index, item index) pairs, judged on validation NDCG@10.

    validation: CSR (n_users x n_items) of each user's validation item(s); exclude: items not ranked for
    validation (default: the training interactions); text: (n_items, d) item vectors, used when use_text;
    weights: each pair's share of the loss (implicit feedback's confidence), None for 1 each; order: each
    pair's place in its user's time order (musicrec.implicit.base.Interactions), None without times."""
    cfg = registry.parse_config(name, overrides)
    users, items = (np.asarray(a, np.int64) for a in interactions)
    exclude = interaction_matrix(users, items, n_users, n_items) if exclude is None else exclude
    data = Interactions(users, items, n_users, n_items, validation, exclude, text, weights, order)
    return registry.model_class(name).fit(name, cfg, data, threads=threads, on_epoch=on_epoch)


class SGDRetrieval(RetrievalModel):
    """The seed's losses (pointwise, BPR, hinge; the config names it): a user is their history (FISM), sampled
    negatives, row-wise AdaGrad on the touched rows, early stopping on validation NDCG@10."""

    @classmethod
    def fit(
        cls,
        name: str,
        cfg: ImplicitConfig,
        data: Interactions,
        *,
        threads: int = 1,
        on_epoch: EpochCallback | None = None,
    ) -> ImplicitResult:
        with cpu_threads(threads):
            torch.manual_seed(cfg.seed)
            model = cls._start(cfg, data)
            trainer = Trainer(cfg, model, data.users, data.items, data.n_items, threads, data.weights)
            val_users = sample_users(np.flatnonzero(np.diff(data.validation.indptr)), cfg.val_users, cfg.seed)
            try:
                rule = Stopping.of(
                    registry.FAMILIES["retrieval"], patience=patience_for(cfg, len(data.users))
                )
                fitted = early_stopping(
                    name,
                    model,
                    trainer.train_epoch,
                    lambda: validate(model, val_users, data.validation, data.exclude),
                    max_epochs(cfg, len(data.users)),
                    rule,
                    on_epoch,
                )
            finally:
                trainer.close()
        return ImplicitResult(
            name, cfg, model, fitted.best_epoch, fitted.best, fitted.history, fitted.seconds
        )

    @classmethod
    def refit(
        cls, name: str, cfg: ImplicitConfig, data: Interactions, epochs: int, *, threads: int = 1
    ) -> ImplicitMF:
        with cpu_threads(threads):
            model = cls._start(cfg, data)
            trainer = Trainer(cfg, model, data.users, data.items, data.n_items, threads, data.weights)
            try:
                for _ in range(epochs):
                    trainer.train_epoch()
            finally:
                trainer.close()
        return model

    @classmethod
    def rebuild(
        cls,
        cfg: ImplicitConfig,
        n_users: int,
        n_items: int,
        state: dict[str, torch.Tensor],
        text: torch.Tensor | None,
    ) -> ImplicitMF:
        history = (state["history_ptr"], state["history_items"]) if "history_ptr" in state else None
        model = ImplicitMF(
            n_users,
            n_items,
            cfg.factors,
            cfg.init_std,
            cfg.seed,
            text if "text_proj" in state else None,
            history,
            cfg.history_alpha,
            cfg.free_user,
        )
        model.load_state_dict(state)
        return model

    @staticmethod
    def _start(cfg: ImplicitConfig, data: Interactions) -> ImplicitMF:
        vector = torch.as_tensor(data.text) if cfg.use_text and data.text is not None else None
        return new_model(cfg, data.n_users, data.n_items, data.users, data.items, vector)
