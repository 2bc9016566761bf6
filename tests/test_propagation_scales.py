"""One propagation implementation: the other risk scales are stated against it.

``guardrails.expand`` propagates risk; the audit's seed risk calls it on the graph with
walks stopping at the seeds, and the distributed PageRank (a probability distribution
for graphs that do not fit one process) is the unnormalised propagation times
``1 - damping``, as its docstring says.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from guardrails.audit.guards import seed_risk
from guardrails.expand import RiskGraph


def _graph(n=60, seed=1):
    A = sp.random(n, n, density=0.1, format="csr", random_state=seed)
    # A ring through every node: no dangling nodes, one component.
    ring = sp.csr_matrix((np.ones(n), (np.arange(n), (np.arange(n) + 1) % n)), shape=(n, n))
    A = sp.csr_matrix(A + ring)
    A.data[:] = 1.0
    return A


def test_distributed_scale_is_unnormalised_propagation_times_one_minus_damping():
    nx = __import__("pytest").importorskip("networkx")
    A, d, seeds = _graph(), 0.85, [3, 7]
    G = nx.from_scipy_sparse_array(A, create_using=nx.DiGraph)
    pr = nx.pagerank(G, alpha=d, personalization={3: 0.5, 7: 0.5}, tol=1e-13, max_iter=5000)
    pr = np.array([pr[i] for i in range(A.shape[0])])
    g = RiskGraph(A, direction="out", normalization="none", damping=d)
    r = np.asarray(
        g.propagate(seeds, weights=np.full(2, 0.5), method="ppr", raw=True, tol=1e-9, max_iter=5000)
    )
    np.testing.assert_allclose(r.ravel(), pr / (1 - d), atol=1e-6)


def test_seed_risk_solves_the_absorbing_walk():
    A, damping = _graph(80, 4), 0.5
    seeds = np.array([0, 5, 9])
    r = seed_risk(A, seeds, damping=damping, n_iter=200).astype(np.float64)
    sym = ((A + A.T) > 0).astype(np.float64)
    deg = np.asarray(sym.sum(axis=1)).ravel()
    mean = sp.diags(1.0 / deg) @ sym
    expected = damping * (mean @ r)
    expected[seeds] = 1.0
    np.testing.assert_allclose(r, expected, atol=1e-5)
    assert (r[seeds] == 1.0).all() and 0 < r.min()
