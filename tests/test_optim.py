import torch

from musicrec.optim import RowWiseAdagrad


def test_rowwise_adagrad_updates_only_touched_rows_and_matches_formula():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    with torch.no_grad():
        emb.weight.fill_(1.0)
    opt = RowWiseAdagrad(emb.parameters(), lr=0.5)
    idx = torch.tensor([1, 3, 3])
    emb(idx).sum().backward()  # row 1 gets grad 1, row 3 gets grad 1 twice (uncoalesced)
    opt.step()
    w = emb.weight.detach()
    assert torch.equal(w[[0, 2, 4]], torch.ones(3, 3))
    # row 1: G = 1, step 0.5 * 1 / 1 = 0.5
    torch.testing.assert_close(w[1], torch.full((3,), 0.5))
    # row 3: two occurrences, G = 2, each applies 0.5 / sqrt(2)
    torch.testing.assert_close(w[3], torch.full((3,), 1 - 2 * 0.5 / 2**0.5))


def test_rowwise_adagrad_minimises_a_quadratic():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    target = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    opt = RowWiseAdagrad(emb.parameters(), lr=0.5)
    idx = torch.arange(10)
    first = None
    for _ in range(200):
        opt.zero_grad()
        loss = ((emb(idx) - target) ** 2).sum()
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first
