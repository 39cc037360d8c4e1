"""sasrec, the learnt sequence model: on a crafted data set where each user's next item is the one that
follows their latest item, it learns the rule and follows the time order it is given; beyond the contract that
tests/test_model_contract.py runs for every registered model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from musicrec import registry
from musicrec.implicit.base import Interactions, Skipped
from musicrec.implicit.export import export_tables, verify_retrieval, write_retrieval
from musicrec.metrics.full import evaluate_static
from musicrec.metrics.topn import interaction_matrix

CYCLE, LENGTH = 24, 6  # items 1..CYCLE in a ring; each user has LENGTH consecutive items, then the next one
SMALL = {"factors": 16, "last": 5, "epochs": 40, "patience": 5, "dropout": 0.1, "lr": 0.01}


def _ring(k: int) -> int:
    """The k-th item of the ring (1-based items, index 0 is the unknown item)."""
    return 1 + k % CYCLE


def _chain(n_users: int = 240) -> Interactions:
    """Users 1..n_users (index 0 is the unknown user) each hold LENGTH consecutive ring items from a start of
    their own, in time order; the item after their latest validates. Each item is held about equally often,
    so popularity cannot tell the next one."""
    starts = np.random.default_rng(0).integers(0, CYCLE, n_users)
    users = np.repeat(np.arange(1, n_users + 1), LENGTH)
    items = np.array([_ring(s + k) for s in starts for k in range(LENGTH)])
    order = np.tile(np.arange(LENGTH), n_users)
    following = np.array([_ring(s + LENGTH) for s in starts])
    val = interaction_matrix(np.arange(1, n_users + 1), following, n_users + 1, CYCLE + 1)
    seen = interaction_matrix(users, items, n_users + 1, CYCLE + 1)
    return Interactions(users, items, n_users + 1, CYCLE + 1, val, seen, order=order)


def _top_unseen(model, data: Interactions) -> np.ndarray:
    """Each user's best item among those they do not hold (item 0 never)."""
    with torch.no_grad():
        scores = (model.query(torch.arange(data.n_users)) @ model.item_vectors().T + model.item_bias).numpy()
    scores[data.users, data.items] = -np.inf
    scores[:, 0] = -np.inf
    return scores.argmax(1)[1:]  # the known users 1..


def _kind_and_config(**overrides: object):
    return registry.model_class("sasrec"), registry.parse_config("sasrec", {**SMALL, **overrides})


@pytest.fixture(scope="module")
def chain() -> Interactions:
    return _chain()


def test_sasrec_learns_the_item_that_follows_the_latest_far_above_popularity(chain):
    kind, cfg = _kind_and_config(negatives=8)  # a sampled softmax: fewer negatives than items
    result = kind.fit("sasrec", cfg, chain)
    counts = np.bincount(chain.items, minlength=chain.n_items).astype(np.float32)
    popular = evaluate_static(counts, None, chain.validation, chain.exclude)["ndcg@10"]
    ndcg = [row["ndcg@10"] for row in result.history]
    assert result.best_epoch >= 1 and ndcg[result.best_epoch] == max(ndcg)
    assert ndcg[result.best_epoch] > 0.8 > popular + 0.5
    wanted = chain.validation.indices  # one validation item per user, users in order
    assert np.mean(_top_unseen(result.model, chain) == wanted) > 0.9


def test_sasrec_follows_the_time_order_it_is_given(chain):
    kind, cfg = _kind_and_config()
    forward = _top_unseen(kind.refit("sasrec", cfg, chain, 15), chain)
    backward_data = Interactions(chain.users, chain.items, chain.n_users, chain.n_items, order=-chain.order)
    backward = _top_unseen(kind.refit("sasrec", cfg, backward_data, 15), chain)
    first = chain.items[::LENGTH]  # each user's earliest item: the latest when time runs backward
    after = chain.validation.indices
    before = np.array([_ring(i - 2) for i in first])  # the ring item preceding the user's first
    assert np.mean(forward == after) > 0.9
    assert np.mean(backward == before) > 0.9


def test_sasrec_is_skipped_without_times(chain):
    kind, cfg = _kind_and_config()
    unordered = Interactions(
        chain.users, chain.items, chain.n_users, chain.n_items, chain.validation, chain.exclude
    )
    with pytest.raises(Skipped, match="no times"):
        kind.fit("sasrec", cfg, unordered)


def test_sasrec_exports_with_parity_and_rebuilds_from_npz_with_the_same_scores(chain, tmp_path: Path):
    kind, cfg = _kind_and_config()
    model = kind.refit("sasrec", cfg, chain, 3)
    users, items = export_tables(model, chain.n_users)
    user_ids, item_ids = (
        [f"u{k}" for k in range(1, chain.n_users)],
        [f"i{k}" for k in range(1, chain.n_items)],
    )
    write_retrieval(tmp_path, user_ids, users, item_ids, items[1:])
    check = verify_retrieval(tmp_path, user_ids, users, [*user_ids[:40], "UNKNOWN-USER"])
    assert check["max_abs_diff"] <= 1e-6 and check["unknown_users"] == 1
    np.savez(tmp_path / "weights.npz", **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as npz:
        state = {k: torch.from_numpy(npz[k]) for k in npz.files}
    again = kind.rebuild(cfg, chain.n_users, chain.n_items, state, None)
    u, i = torch.from_numpy(chain.users), torch.from_numpy(chain.items)
    with torch.no_grad():
        expected = model(u, i).numpy()
        np.testing.assert_array_equal(again(u, i).numpy(), expected)
    np.testing.assert_allclose((users[chain.users] * items[chain.items]).sum(1), expected, atol=1e-5)
    assert not users[0, :-1].any()  # the unknown user: the item bias alone


def test_sasrec_is_deterministic_for_a_seed_and_differs_across_seeds(chain):
    kind, cfg = _kind_and_config()
    one, two = (kind.refit("sasrec", cfg, chain, 2) for _ in range(2))
    other = kind.refit("sasrec", cfg.model_copy(update={"seed": 1}), chain, 2)
    for key, value in one.state_dict().items():
        torch.testing.assert_close(two.state_dict()[key], value, rtol=0, atol=0)
    assert not torch.equal(other.user_query, one.user_query)
    fits = [kind.fit("sasrec", cfg.model_copy(update={"epochs": 3}), chain) for _ in range(2)]
    assert [r["ndcg@10"] for r in fits[0].history] == [r["ndcg@10"] for r in fits[1].history]


@pytest.mark.parametrize("blocks", [1, 2])
def test_serving_encodes_the_latest_position_alone_with_the_same_result(blocks):
    """serve() computes the last block for the latest position only: the queries equal the full encoder's
    output there, for windows with padding, a full window and an empty one."""
    from musicrec.implicit.configs import SASRecConfig
    from musicrec.implicit.sasrec import SequenceTables

    cfg = SASRecConfig(factors=16, last=6, blocks=blocks, heads=2)
    model = SequenceTables(cfg, n_users=5, n_items=30).eval()
    latest = np.array(
        [[0, 0, 0, 3, 7, 9], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 8], [4] * 6]
    )
    with torch.no_grad():
        full = model.encode(torch.as_tensor(latest))[:, -1]
        last = model.encode(torch.as_tensor(latest), last_only=True)
        model.serve(latest)
    assert last.shape == (5, 1, 16)
    torch.testing.assert_close(last[:, -1], full, atol=1e-5, rtol=1e-5)
    expected = full * torch.as_tensor(latest[:, -1:] > 0)
    torch.testing.assert_close(model.user_query, expected, atol=1e-5, rtol=1e-5)
    assert not model.user_query[2].any()  # no items: no query


def test_distinct_rows_groups_equal_windows_as_np_unique_does_even_when_two_rows_share_a_hash():
    from musicrec.implicit.sasrec import distinct_rows

    rng = np.random.default_rng(0)
    a = np.zeros((5000, 6), np.int64)
    a[:, -1] = rng.integers(1, 300, len(a))
    a[::2, -2] = rng.integers(0, 4, len(a) // 2)
    rows, inverse = distinct_rows(a)
    np.testing.assert_array_equal(rows[inverse], a)
    assert len(rows) == len(np.unique(a, axis=0)) == len({tuple(r) for r in a})
    # [1, 0] and [0, M] hash alike (h = c0 * M + c1 with M the multiplier, wrapping at 2^64)
    m = np.array([0x9E3779B97F4A7C15], np.uint64).view(np.int64)[0]
    clash = np.array([[1, 0], [0, m], [1, 0], [0, m], [2, 2]], np.int64)
    rows, inverse = distinct_rows(clash)
    np.testing.assert_array_equal(rows[inverse], clash)
    assert len(rows) == 3


def test_dropout_zeroes_about_p_of_the_entries_in_training_keeps_the_mean_and_is_the_identity_in_eval():
    from musicrec.implicit.sasrec import UniformDropout

    torch.manual_seed(0)
    drop, x = UniformDropout(0.3), torch.ones(200, 500)
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.3) < 0.01
    assert abs(float(y.mean()) - 1.0) < 0.02
    assert torch.allclose(torch.unique(y), torch.tensor([0.0, 1.0 / 0.7]))
    drop.eval()
    assert drop(x) is x
