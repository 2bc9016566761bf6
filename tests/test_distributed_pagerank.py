"""Personalised PageRank over a row-partitioned graph on Dask, against networkx."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("distributed")
nx = pytest.importorskip("networkx")
import dask  # noqa: E402
import dask.array as da  # noqa: E402

from guardrails.distributed import personalized_pagerank  # noqa: E402
from guardrails.exceptions import GuardrailsWarning, ValidationError  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _graph(n=120, seed=0):
    A = sp.random(n, n, density=0.04, format="csr", random_state=seed)
    A.data[:] = np.random.default_rng(seed).integers(1, 4, A.nnz)
    A = A.tolil()
    A[5, :] = 0  # a dangling node
    return A.tocsr()


def _networkx(A, seeds, damping):
    G = nx.from_scipy_sparse_array(A, create_using=nx.DiGraph)
    ref = nx.pagerank(
        G, alpha=damping, personalization=dict(enumerate(seeds.tolist())), tol=1e-13, max_iter=2000
    )
    return np.array([ref[i] for i in range(A.shape[0])])


def test_matches_networkx(client):
    A = _graph()
    seeds = np.zeros(120)
    seeds[[3, 17, 40]] = [1.0, 2.0, 1.0]
    r = personalized_pagerank(A, seeds, damping=0.5, tol=1e-9, block_rows=25, client=client)
    assert r.shape == (120,) and r.dtype == np.float64
    assert abs(r.sum() - 1.0) < 1e-9 and (r >= 0).all()
    np.testing.assert_allclose(r, _networkx(A, seeds, 0.5), atol=1e-8)


def test_dask_array_of_row_blocks_loaded_on_workers(client):
    """The client never holds the graph: each block is built by a task on a worker."""
    n, step = 120, 40

    def load(lo, hi):
        return _graph()[lo:hi]

    blocks = [
        da.from_delayed(
            dask.delayed(load)(lo, lo + step),
            shape=(step, n),
            dtype=np.float64,
            meta=sp.csr_matrix((0, n)),
        )
        for lo in range(0, n, step)
    ]
    A = da.concatenate(blocks, axis=0)
    seeds = np.zeros(n)
    seeds[7] = 1.0
    r = personalized_pagerank(A, seeds, damping=0.5, tol=1e-9, client=client)
    np.testing.assert_allclose(r, _networkx(_graph(), seeds, 0.5), atol=1e-8)


def test_seeds_only_graph_and_iteration_cap(client):
    A = sp.csr_matrix((4, 4))
    r = personalized_pagerank(A, np.array([0, 1.0, 0, 0]), client=client)
    np.testing.assert_allclose(r, [0, 1, 0, 0])
    with pytest.warns(GuardrailsWarning, match="max_iter=2"):
        personalized_pagerank(_graph(), np.ones(120), max_iter=2, tol=1e-12, client=client)


def test_validation(client):
    A = _graph()
    with pytest.raises(ValidationError, match="'seeds' parameter"):
        personalized_pagerank(A, np.ones(3), client=client)
    with pytest.raises(ValidationError, match="'seeds' parameter"):
        personalized_pagerank(A, np.zeros(120), client=client)
    with pytest.raises(ValidationError, match="'damping' parameter"):
        personalized_pagerank(A, np.ones(120), damping=1.0, client=client)
    with pytest.raises(ValidationError, match="'adjacency' parameter"):
        personalized_pagerank(sp.csr_matrix((3, 4)), np.ones(3), client=client)
    with (
        pytest.raises(ValidationError, match="non-negative edge weights"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        personalized_pagerank(-A, np.ones(120), client=client)
    with pytest.raises(ValidationError, match="'adjacency' parameter"):
        personalized_pagerank(da.zeros((4, 4), chunks=(2, 2)), np.ones(4), client=client)
