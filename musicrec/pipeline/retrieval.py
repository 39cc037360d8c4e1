"""Stage 3b: the implicit (retrieval) models of a run. Their own split is the temporal leave-last-out of the
run's ratings (musicrec.metrics.protocol): every rating is an interaction, per user the latest is test and
the one before validation; full ranking over every item the user has not interacted with. Weights are .npz.
What happens to the retrieval champion after training is in musicrec.pipeline.champion_retrieval."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from musicrec import registry
from musicrec.data.feedback import confidence_weights
from musicrec.data.ids import IdIndex
from musicrec.fit.threads import cpu_threads
from musicrec.implicit.base import Skipped
from musicrec.implicit.model import ImplicitEnsemble, ImplicitMF
from musicrec.implicit.train import EpochCallback, evaluate_model, fit_implicit
from musicrec.metrics.full import evaluate_random, evaluate_static
from musicrec.metrics.protocol import has_times, recency_rank
from musicrec.metrics.topn import interaction_matrix
from musicrec.pipeline.prepare import feedback, ranking_split
from musicrec.pipeline.workspace import Workspace, model_file
from musicrec.text import load_item_vectors

TEST_USERS = 20_000  # a fixed seeded sample of test users at large sizes (standard error of HR@10 ~0.0015)


@dataclass
class RankingData:
    """Indexed leave-last-out parts: index 0 of users and items is the unknown row, never ranked."""

    users: IdIndex
    items: IdIndex
    train: tuple[np.ndarray, np.ndarray]
    validation: sp.csr_matrix
    test: sp.csr_matrix
    seen_train: sp.csr_matrix  # excluded when ranking for validation (+ the unknown item column)
    seen_val: sp.csr_matrix  # excluded when ranking for test: train + validation
    single_users: int
    popularity: np.ndarray  # training interactions per item index
    weights: sp.csr_matrix | None = None  # implicit feedback: each interaction's confidence (None: all 1)
    # each training pair's place in its user's time order (1 = earliest), None when the input has no times
    train_order: np.ndarray | None = None
    # (users x items) the place of each interaction of every part in its user's time order: the training
    # part's, then validation, then test (a repeated pair: its latest); None without times
    positions: sp.csr_matrix | None = None

    def weights_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray | None:
        """The confidence weight of each (user, item) interaction, None when every weight is 1."""
        if self.weights is None:
            return None
        return np.asarray(self.weights[users, items], np.float32).ravel()

    def order_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray | None:
        """Each (user, item) interaction's place in its user's time order, None without times."""
        if self.positions is None:
            return None
        return np.asarray(self.positions[users, items], np.int64).ravel()


def ranking_data(ws: Workspace) -> RankingData:
    """The run's leave-last-out split, indexed once per process (shared by the three models, read-only)."""
    with _LOCK:
        return _cached(str(ws.root), ws.ratings.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _cached(root: str, _stamp: int) -> RankingData:
    ws = Workspace(Path(root))
    split = ranking_split(ws)
    write_ranking_splits(ws, split)
    users = IdIndex(pd.concat([split.train["user_id"], split.test["user_id"]]).unique())
    items = IdIndex(
        pd.concat([split.train["item_id"], split.validation["item_id"], split.test["item_id"]]).unique()
    )
    nu, ni = users.size, items.size

    def matrix(df: pd.DataFrame) -> sp.csr_matrix:
        return interaction_matrix(users.lookup(df["user_id"]), items.lookup(df["item_id"]), nu, ni)

    unknown_item = sp.csr_matrix(
        (np.ones(nu, np.float32), (np.arange(nu), np.zeros(nu, np.int64))), shape=(nu, ni)
    )
    train = matrix(split.train)
    seen_train = ((train + unknown_item) > 0).astype(np.float32).tocsr()
    seen_val = ((seen_train + matrix(split.validation)) > 0).astype(np.float32).tocsr()
    u, i = users.lookup(split.train["user_id"]), items.lookup(split.train["item_id"])
    return RankingData(
        users,
        items,
        (u, i),
        matrix(split.validation),
        matrix(split.test),
        seen_train,
        seen_val,
        len(split.single_users),
        np.bincount(i, minlength=ni),
        _weights(ws, split, users, items),
        *_orders(split, users, items),
    )


def _orders(split: Any, users: IdIndex, items: IdIndex) -> tuple[np.ndarray | None, sp.csr_matrix | None]:
    """(train_order, positions) of RankingData: the training pairs' places in their users' time order
    (musicrec.metrics.protocol's order: timestamp, then file order) and every interaction's, validation and
    test after the training part; (None, None) when the input has no times (the hold-out was random)."""
    if not has_times(pd.concat([split.train, split.validation, split.test], ignore_index=True)):
        return None, None
    rank, count = recency_rank(split.train["user_id"].to_numpy(), split.train["timestamp"])
    train_order = (count - rank).astype(np.int64)
    u = users.lookup(split.train["user_id"])
    last = np.zeros(users.size, np.int64)
    np.maximum.at(last, u, train_order)
    parts = [(u, items.lookup(split.train["item_id"]), train_order)]
    for offset, part in ((1, split.validation), (2, split.test)):
        pu = users.lookup(part["user_id"])
        parts.append((pu, items.lookup(part["item_id"]), last[pu] + offset))
    pu, pi, po = (np.concatenate(a) for a in zip(*parts, strict=True))
    frame = pd.DataFrame({"u": pu, "i": pi, "o": po}).groupby(["u", "i"], sort=False)["o"].max()
    coords = frame.index.to_frame(index=False)
    positions = sp.csr_matrix(
        (frame.to_numpy(np.float64), (coords["u"].to_numpy(), coords["i"].to_numpy())),
        shape=(users.size, items.size),
    )
    return train_order, positions


def _weights(ws: Workspace, split: Any, users: IdIndex, items: IdIndex) -> sp.csr_matrix | None:
    """Implicit feedback: (users x items) confidence weights of every interaction (musicrec.data.feedback),
    None for ratings or when every count is the same."""
    kind = feedback(ws)
    if not kind.implicit:
        return None
    every = pd.concat([split.train, split.validation, split.test], ignore_index=True)
    w = confidence_weights(every["rating"].to_numpy(np.float64), kind.alpha)
    if w is None:
        return None
    u, i = users.lookup(every["user_id"]), items.lookup(every["item_id"])
    return sp.csr_matrix((w, (u, i)), shape=(users.size, items.size), dtype=np.float32)


def model_text(ws: Workspace, cfg: Any) -> np.ndarray | None:
    """The run's ranking text vectors when the model uses them (use_text) and the run has text, else None."""
    return ranking_text(ws) if cfg.use_text else None


def ranking_text(ws: Workspace) -> np.ndarray | None:
    """(n_items, d) text vectors of the ranking items (retrieval_item_vectors.parquet, written by Word2Vec;
    zeros for the unknown row and for items without text), one array per process that the run's implicit
    models share; None when the run has no text (a ratings-only file without metadata)."""
    path = ws.retrieval_vectors
    if not path.exists():
        return None
    with _TEXT_LOCK:  # not _LOCK: the text needs ranking_data(), which takes that one
        return _cached_text(str(ws.root), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _cached_text(root: str, _stamp: int) -> np.ndarray | None:
    ws = Workspace(Path(root))
    ids, vectors = load_item_vectors(ws.retrieval_vectors)
    if not np.abs(vectors).sum():
        return None
    items = ranking_data(ws).items
    out = np.zeros((items.size, vectors.shape[1]), np.float32)
    out[items.lookup(pd.Series(ids))] = vectors  # an id outside the ranking items lands on the unknown row
    out[0] = 0.0
    return out


RANKING_SPLITS = "ranking_splits"  # the leave-last-out parts, published beside the rating splits


def write_ranking_splits(ws: Workspace, split: Any) -> None:
    """(user_id, item_id) of each leave-last-out part: evaluation reads these rather than re-deriving them
    (ties in time are broken by file order, which the rating splits do not keep)."""
    folder = ws.root / RANKING_SPLITS
    folder.mkdir(exist_ok=True)
    for name in ("train", "validation", "test"):
        path = folder / f"{name}.parquet"
        if not path.exists():
            getattr(split, name)[["user_id", "item_id"]].astype(str).to_parquet(path, index=False)


def train_implicit(
    ws: Workspace,
    name: str,
    overrides: dict[str, Any] | None = None,
    threads: int = 1,
    on_epoch: EpochCallback | None = None,
    test_threads: int | None = None,
) -> dict[str, Any]:
    """Fit one implicit model (early stopping on validation NDCG@10), evaluate it on test, save it.

    test_threads (default: threads): the test evaluation's threads. It is mostly one matrix product, 20K users
    x every item at the seed's size (35 s on one thread), and the last model to finish runs it alone."""
    data = ranking_data(ws)
    overrides = {"val_users": validation_users(data.items.size), **(overrides or {})}
    cfg = registry.parse_config(name, overrides)
    try:
        result = fit_implicit(
            name,
            data.train,
            data.users.size,
            data.items.size,
            data.validation,
            data.seen_train,
            overrides,
            threads=threads,
            on_epoch=on_epoch,
            text=model_text(ws, cfg),
            weights=data.weights_of(*data.train),
            order=data.train_order,
        )
    except Skipped as e:
        row = skipped_row(name, str(e), cfg)
        ws.write_json(model_file(name, "metrics.json"), row)
        return row
    with cpu_threads(test_threads or threads):
        test = test_metrics(result.model, data)
    row = {
        "name": name,
        "kind": "retrieval",
        **prefixed("val", result.best),
        **test,
        "best_epoch": result.best_epoch,
        "epochs": len(result.history) - 1,
        "fit_seconds": round(result.fit_seconds, 2),
        "hyperparameters": result.config.model_dump(),
        **({"note": result.note} if result.note else {}),
    }
    save_implicit(ws, name, result.model, result.config)
    ws.write_json(model_file(name, "history.json"), result.history)
    ws.write_json(model_file(name, "metrics.json"), row)
    return row


def skipped_row(name: str, note: str, cfg: Any) -> dict[str, Any]:
    """The leaderboard row of a model whose kind does not apply to the run's data (musicrec.implicit.base.
    Skipped): its note and no metrics, so it is never a champion nor an ensemble member."""
    return {"name": name, "kind": "retrieval", "skipped": note, "hyperparameters": cfg.model_dump()}


def save_implicit(ws: Workspace, folder: str, model: Any, cfg: Any) -> None:
    """A retrieval model's state as weights.npz and its config as config.json under models/<folder>/."""
    d = ws.model_dir(folder)
    np.savez(d / "weights.npz", **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    (d / "config.json").write_text(cfg.model_dump_json())


VALIDATION_CELLS = 500_000_000  # users x items scored per epoch's validation (about 1.5 s on 2 cores)


def validation_users(n_items: int) -> int:
    """Users in each epoch's validation sample: the config's 5,000 on small catalogues, fewer on large ones
    (full ranking costs users x items: 5,000 x 457K items took about 13 s an epoch), never under 1,000."""
    return int(min(5000, max(1000, VALIDATION_CELLS // max(1, n_items))))


def test_metrics(model: ImplicitMF | ImplicitEnsemble, data: RankingData, seed: int = 0) -> dict[str, float]:
    """HR@10, NDCG@10, Recall@50, coverage@10 on test (train + validation excluded), sampled users at scale
    (each user ranked over the items that can reach their list, musicrec.metrics.bounded)."""
    out = evaluate_model(
        model, None, data.test, data.seen_val, max_users=TEST_USERS, seed=seed, coverage=True
    )
    return prefixed("test", out)


HISTORY_KEYS = (
    "epoch",
    "epochs",
    "loss",
    "seconds",
    "eval_seconds",
)  # a history row's keys that are not metrics


def prefixed(split: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{split}_{k.replace('@', '_at_')}": v for k, v in metrics.items() if k not in HISTORY_KEYS}


def ranking_baselines(ws: Workspace, seed: int = 0) -> list[dict[str, Any]]:
    """Most-popular (training interactions) and random, on the same users and exclusions as the models.

    Neither scores users x items: most-popular ranks by one global order (exact, metrics.full.evaluate_static)
    and random draws each user's random ranking directly (metrics.full.evaluate_random)."""
    data = ranking_data(ws)
    pop = data.popularity.astype(np.float32)
    pop[0] = -1.0
    fns = {"most_popular": functools.partial(evaluate_static, pop), "random": evaluate_random}
    rows = []
    for name, fn in fns.items():
        val = fn(None, data.validation, data.seen_train, max_users=TEST_USERS, seed=seed)
        test = fn(None, data.test, data.seen_val, max_users=TEST_USERS, seed=seed)
        rows.append({"name": name, "kind": "baseline", **prefixed("val", val), **prefixed("test", test)})
    return rows


def summarize(rows: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> dict[str, Any]:
    """The retrieval models' rows, their baselines and the
    retrieval champion (None if none beat most-popular)."""
    if not rows:
        return {"models": [], "baselines": [], "champion": None}
    return {
        "models": rows,
        "baselines": baselines,
        "champion": registry.choose_champion(rows, "retrieval", popular_val_ndcg(baselines)),
    }


def popular_val_ndcg(baselines: list[dict[str, Any]]) -> float:
    """Most-popular's validation NDCG@10: the bar a retrieval model must clear."""
    return next(b["val_ndcg_at_10"] for b in baselines if b["name"] == "most_popular")


_LOCK, _TEXT_LOCK = threading.Lock(), threading.Lock()
