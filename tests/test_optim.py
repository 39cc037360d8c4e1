import torch

from musicrec.fit.adagrad import RowWiseAdagrad


def test_rowwise_adagrad_updates_only_touched_rows_and_matches_formula():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    with torch.no_grad():
        emb.weight.fill_(1.0)
    opt = RowWiseAdagrad(emb.parameters(), lr=0.5, initial=1.0)
    idx = torch.tensor([1, 3, 3])
    emb(idx).sum().backward()  # row 1 gets grad 1, row 3 gets grad 1 twice (uncoalesced)
    opt.step()
    w = emb.weight.detach()
    assert torch.equal(w[[0, 2, 4]], torch.ones(3, 3))
    # row 1: G = 1 + 1, step 0.5 * 1 / sqrt(2)
    torch.testing.assert_close(w[1], torch.full((3,), 1 - 0.5 / 2**0.5))
    # row 3: the two occurrences are summed first: g = 2, G = 1 + 4, step 0.5 * 2 / sqrt(5)
    torch.testing.assert_close(w[3], torch.full((3,), 1 - 0.5 * 2 / 5**0.5))


def test_rowwise_adagrad_equals_torch_adagrad_on_duplicate_rows():
    """The issue's case: a row seen k times in one batch gets AdaGrad's step for its summed gradient (torch's
    Adagrad coalesces), not a sqrt(k)-times larger one. Row-wise AdaGrad keeps one accumulator per row, so
    compare on one-column rows, where row-wise and element-wise AdaGrad are the same algorithm."""
    gen = torch.Generator().manual_seed(0)
    ours, ref = torch.nn.Embedding(20, 1, sparse=True), torch.nn.Embedding(20, 1, sparse=True)
    with torch.no_grad():
        ours.weight.normal_(generator=gen)
        ref.weight.copy_(ours.weight)
    opt_ours = RowWiseAdagrad(ours.parameters(), lr=0.3, initial=0.5)
    opt_ref = torch.optim.Adagrad(ref.parameters(), lr=0.3, initial_accumulator_value=0.5, eps=1e-12)
    for _ in range(5):
        idx = torch.randint(0, 20, (64,), generator=gen)  # many duplicates
        target = torch.randn(64, 1, generator=gen)
        for emb, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            ((emb(idx) - target) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-5, atol=1e-6)


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
