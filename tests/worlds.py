"""Random problems shared by several test modules (imported by name: pytest puts this
folder on ``sys.path``).

- :data:`KERNEL_BACKENDS` and :func:`draw_factors`: the kernel's selection backends, and
  query and item factors for its tests, with exact ties or spread scales, and at times
  popularity-skewed item norms;
- :func:`every_filter_case`: a factor model under a policy with every built-in filter
  that compiles a plan part (blocks, pairs, risk, cohorts, breaker, share cap,
  relationships), for the policy run's tests.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st

import guardrails as gr
from guardrails.core.kernel import HAS_COMPILED_TILE
from guardrails.filters import (
    BlockItems,
    CohortRule,
    DemoteRisk,
    ExcludePairs,
    RelationshipRule,
    ShareCap,
    SuppressRisk,
    ViewerCircuitBreaker,
)
from guardrails.policy import Holdback, Policy

#: The fused path's selection backends to test: numpy always, C where it was built.
KERNEL_BACKENDS = ["numpy", "compiled"] if HAS_COMPILED_TILE else ["numpy"]


def draw_factors(draw, rng, m: int, n: int, d: int):
    """``(Q, V, ties)``: float32 query rows ``(m, d)`` and item rows ``(n, d)``.

    With ``ties``, small integers (exact score ties everywhere); otherwise normal factors
    at a scale of 1e-3, 1 or 1e3. Half the time the item norms are popularity-skewed, as
    trained factors are: the fused path's norm bound then skips tiles.
    """
    ties = draw(st.booleans())
    if ties:
        Q = rng.integers(-2, 3, (m, d)).astype(np.float32)
        V = rng.integers(-2, 3, (n, d)).astype(np.float32)
    else:
        scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
        Q = (rng.standard_normal((m, d)) * scale).astype(np.float32)
        V = (rng.standard_normal((n, d)) * scale).astype(np.float32)
    if draw(st.booleans()):
        V = (V * (rng.pareto(1.0, n) + 0.05)[:, None]).astype(np.float32)
    return Q, V, ties


#: Positions in :func:`every_filter_case`'s policy of the filters tests look into.
COHORTS, BREAKER = 4, 5


def every_filter_case(
    seed: int,
    *,
    n_users: int,
    n_items: int,
    n_factors: int,
    cap_groups: int = 1,
    holdback: bool = False,
):
    """A model, a policy with every built-in filter, the viewers' interactions, what is
    never served to anybody and the excluded pairs.

    Parameters
    ----------
    cap_groups : int
        1: the share cap counts risky items; more: it counts that many communities.
    holdback : bool
        Hold the risk demotion back for 30% of the viewers.

    Returns
    -------
    model : FactorModel
        Half the time with popularity-skewed item norms (the fused path skips tiles).
    policy : Policy
        Cohorts at :data:`COHORTS` (viewer cohorts -1 to 2), the breaker at :data:`BREAKER`.
    user_items : csr_matrix of float32, shape (n_users, n_items)
    suppressed : ndarray of bool, shape (n_items,)
        Blocked or at risk 0.7 or more.
    pairs : csr_matrix, shape (n_users, n_items)
        The excluded (viewer, item) pairs.
    """
    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(n_users, n_factors)), rng.normal(size=(n_items, n_factors))
    if rng.random() < 0.5:
        V = V * (rng.pareto(1.0, n_items) + 0.05)[:, None]
    risk = (rng.random(n_items) ** 3).astype(np.float32)
    blocked = rng.choice(n_items, size=3, replace=False)
    pairs = sp.random(n_users, n_items, density=0.05, format="csr", random_state=seed)
    follows = sp.random(n_users, n_items, density=0.1, format="csr", random_state=seed + 1)
    if cap_groups == 1:
        cap = ShareCap(max_share=0.3, risk=risk, threshold=0.2)
    else:
        cap = ShareCap(max_share=0.4, communities=rng.integers(-1, cap_groups, n_items))
    filters = [
        BlockItems(blocked),
        ExcludePairs(pairs),
        SuppressRisk(risk, threshold=0.7),
        DemoteRisk(risk, weight=1.5),
        CohortRule(
            rng.integers(-1, 3, n_users),
            rng.integers(-1, 3, n_items),
            [["allow", "demote", "allow"], ["drop", "allow", "demote"], ["allow", "drop", "drop"]],
            weight=0.8,
        ),
        ViewerCircuitBreaker(risk, item_threshold=0.2, trip=0.3),
        cap,
        RelationshipRule(rng.random(n_items) < 0.1, follows=follows, action="demote", weight=0.5),
    ]
    hb = Holdback(0.3, salt="s", filters=["demote_risk"]) if holdback else None
    ui = sp.random(
        n_users, n_items, density=0.12, format="csr", random_state=seed + 2, dtype=np.float32
    )
    suppressed = np.zeros(n_items, bool)
    suppressed[blocked] = True
    suppressed |= risk >= 0.7
    return gr.FactorModel(U, V), Policy(filters, holdback=hb), ui, suppressed, pairs


def youth_world(seed, adult_also_follows=()):
    """Ten minors who follow each other and a coach; a parent who follows the coach and
    two minors; an adult who follows only ordinary accounts; a celebrity everyone follows.

    ``adult_also_follows``: more accounts the adult follows (e.g. a flagged seed).
    Returns ``(graph, minors, model, (coach, parent, adult, celeb))``."""
    rng = np.random.default_rng(seed)
    n = 80
    minors = np.zeros(n, bool)
    minors[:10] = True
    coach, parent, adult, celeb = 10, 11, 12, 13
    edges = []
    for m in range(10):
        edges += [(m, int(x)) for x in rng.choice(10, 3, replace=False) if x != m]
        edges += [(m, coach), (m, celeb)]
    edges += [(parent, coach), (parent, 0), (parent, 1), (parent, celeb)]
    edges += [(adult, int(x)) for x in rng.choice(np.arange(20, n), 6, replace=False)]
    edges += [(adult, celeb)] + [(adult, int(x)) for x in adult_also_follows]
    for a in range(20, n):
        edges += [(a, int(x)) for x in rng.choice(np.arange(20, n), 4, replace=False)]
        edges += [(a, celeb)]
    r, c = np.array(edges).T
    g = sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(n, n))
    g.data[:] = 1.0
    model = gr.FactorModel(rng.normal(size=(n, 8)), rng.normal(size=(n, 8)))
    return g, minors, model, (coach, parent, adult, celeb)
