"""The threads task runner trains several models at once in one process: results must not depend on it."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from musicrec.data.split import split_ratings
from musicrec.dataset import prepare_data
from musicrec.training import fit_model

NAMES = ["gmf", "nnmf", "mlp", "gmf_logistic"]


@pytest.fixture(scope="module")
def data(tiny):
    return prepare_data(split_ratings(tiny[0], seed=0))


def test_concurrent_training_equals_sequential(data):
    overrides = {"epochs": 3, "patience": 3}
    alone = {n: fit_model(n, data, overrides).history for n in NAMES}
    with ThreadPoolExecutor(len(NAMES)) as pool:
        together = dict(zip(NAMES, pool.map(lambda n: fit_model(n, data, overrides).history, NAMES)))
    for name in NAMES:
        assert [h["val_rmse"] for h in together[name]] == [h["val_rmse"] for h in alone[name]], name
