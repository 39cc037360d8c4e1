"""The two scoring jobs on one chunk: (user, item) pairs, and top-N lists ranked by the champion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from musicrec.data.detect import table_layout
from musicrec.errors import DataError
from musicrec.scoring.bundle import Bundle
from musicrec.scoring.candidates import (
    CandidateIndex,
    arrow_ids,
    batch_candidates,
    diverse_popular,
    id_positions,
    nearest_items,
)
from musicrec.scoring.retrieve import retrieve_and_rank
from musicrec.scoring.runtime import has_flags, predict_flagged, predict_ratings
from musicrec.scoring.sources import FALLBACK, SOURCES

TOPN_COLUMNS = ["user_id", "rank", "item_id", "score", "source"]


def read_table(path: str | Path, columns: list[str]) -> pd.DataFrame:
    """A delimited (comma, tab, semicolon, pipe or spaces; header line) or Parquet input with at least these
    columns; ids are read as strings."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            _, sep = table_layout(path)
            df = pd.read_csv(path, sep=sep, dtype={c: str for c in columns}, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise DataError(
            path, f"cannot read: {e}", hint="give a delimited file with a header line, or Parquet"
        ) from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            path,
            f"missing column(s) {missing}; found {list(df.columns)}",
            hint=f"the input needs the columns {columns}",
        )
    return df.assign(**{c: df[c].astype(str) for c in columns})


def score_pairs(bundle: Bundle, pairs: pd.DataFrame, batch_size: int = 65536) -> pd.DataFrame:
    """The input rows, in order, plus predicted_rating (relevance_score for a retrieval-only bundle, whose
    model scores relevance, not stars), unknown_user and unknown_item.

    The graph flags unknown ids from its own lookup; for bundles exported before it did, a hash join does."""
    u = pairs["user_id"].to_numpy(object)
    i = pairs["item_id"].to_numpy(object)
    if has_flags(bundle.session):
        rating, unknown_user, unknown_item = predict_flagged(bundle.session, u, i, batch_size)
    else:
        rating = predict_ratings(bundle.session, u, i, batch_size)
        unknown_user = id_positions(arrow_ids(bundle.users), pairs["user_id"]) < 0
        unknown_item = id_positions(arrow_ids(bundle.items), pairs["item_id"]) < 0
    return pairs.assign(
        **{score_column(bundle.meta): rating}, unknown_user=unknown_user, unknown_item=unknown_item
    )


RELEVANCE = "relevance_score"


def score_column(meta: dict) -> str:
    """The pair job's score column: predicted_rating, or relevance_score for a retrieval-only bundle."""
    return RELEVANCE if meta.get("kind") == "retrieval" else "predicted_rating"


def rank_users(
    bundle: Bundle,
    index: CandidateIndex,
    users: list[str],
    n: int,
    n_popular: int = 20,
    k_nearest: int = 10,
    batch_size: int = 65536,
) -> pd.DataFrame:
    """Top-n unrated items per user, in the users' order; unknown users get the diverse popular fallback."""
    known = [u for u in users if u in index.history]
    rated = {u: index.history[u] for u in known}
    touched = np.unique(np.concatenate(list(rated.values()))) if rated else np.empty(0, np.int64)
    neighbours = nearest_items(index, touched, k_nearest)
    frames = [_rank_known(bundle, index, rated, neighbours, n, n_popular, batch_size)]
    unknown = [u for u in users if u not in index.history]
    if unknown:
        frames.append(_fallback(bundle, index, unknown, n))
    out = pd.concat(frames, ignore_index=True)
    order = pd.Index(users).get_indexer(out["user_id"])
    return out.iloc[np.lexsort((out["rank"].to_numpy(), order))].reset_index(drop=True)[TOPN_COLUMNS]


def _rank_known(
    bundle: Bundle,
    index: CandidateIndex,
    rated: dict[str, np.ndarray],
    neighbours: dict[int, np.ndarray],
    n: int,
    n_popular: int,
    batch_size: int,
) -> pd.DataFrame:
    if not rated:
        return pd.DataFrame(columns=TOPN_COLUMNS)
    owner, pos, src = batch_candidates(index, list(rated.values()), neighbours, n, n_popular)
    if (
        index.retriever is not None
    ):  # retrieve-then-rank: the retrieval champion's inner product orders the list
        return retrieve_and_rank(
            index.retriever, index.item_ids, list(rated), list(rated.values()), owner, pos, src, SOURCES, n
        )
    cand = pd.DataFrame(
        {
            "user_id": np.asarray(list(rated), dtype=object)[owner],
            "item_id": index.item_ids[pos],
            "source": np.asarray(SOURCES, dtype=object)[src],
        }
    )
    cand["score"] = predict_ratings(
        bundle.session, cand["user_id"].to_numpy(object), cand["item_id"].to_numpy(object), batch_size
    )
    # ties broken by item id so lists are deterministic
    cand = cand.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
    top = cand.groupby("user_id", sort=False).head(n)
    return top.assign(rank=top.groupby("user_id", sort=False).cumcount() + 1)


def _fallback(bundle: Bundle, index: CandidateIndex, users: list[str], n: int) -> pd.DataFrame:
    """The diverse popular list, ranked by the model's score for an unknown user (the same for all of them;
    ties by item id)."""
    items = index.item_ids[diverse_popular(index, n)]
    one = predict_ratings(bundle.session, np.full(len(items), users[0], dtype=object), items)
    order = np.lexsort((items.astype(str), -one))
    items, one = items[order], one[order]
    u = np.repeat(np.asarray(users, dtype=object), len(items))
    return pd.DataFrame(
        {
            "user_id": u,
            "rank": np.tile(np.arange(1, len(items) + 1), len(users)),
            "item_id": np.tile(items, len(users)),
            "score": np.tile(one, len(users)),
            "source": FALLBACK,
        }
    )
