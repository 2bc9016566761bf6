"""Neighbourhood expansion: from a small, stale sample of flagged accounts to a risk score
for every account, with the reason why.

Known bad accounts are few and go stale fast, so the guard suppresses the neighbourhood
around them, where the recommender itself would lead a viewer. Every function here
returns float32 risk in [0, 1] on one documented scale (see
:mod:`guardrails.expand.propagate`): a seed of weight ``w`` has risk at least ``w``, and
risk decays with distance. The arrays feed :class:`guardrails.filters.SuppressRisk`
(with :data:`DEFAULT_THRESHOLD`) and :class:`guardrails.filters.DemoteRisk` directly.

- :func:`propagate` / :class:`RiskGraph`: risk over an account graph, by the scorer the
  seeds themselves pick (``method="auto"``: personalised PageRank variants, a one-hop
  count, a heat kernel; the choice and its validation scores in :class:`Selection`);
- :func:`coengagement_risk`: over the recommender's user x item matrix;
- :func:`embedding_risk`: proximity in the model's item-factor space (the Guard's kernel);
- :func:`term_risk`: account x hashtag / term / link-domain co-use;
- :func:`combine_risk`: one risk per account from several sources;
- :class:`RiskExpansion`: all of the above with provenance (:meth:`RiskExpansion.explain`);
- :func:`neighbourhood`: a risk array to a set of accounts (threshold, top-k, quantile).
"""

from ._auto import Selection
from ._engine import ConvergenceWarning
from .bipartite import BipartiteRiskGraph, coengagement_risk, term_risk
from .combine import combine_risk
from .propagate import DEFAULT_DAMPING, DEFAULT_THRESHOLD, RiskGraph, neighbourhood, propagate
from .provenance import Contribution, Explanation, RiskExpansion
from .proximity import DEFAULT_RADIUS, embedding_risk, nearest_seeds

__all__ = [
    "propagate",
    "RiskGraph",
    "BipartiteRiskGraph",
    "coengagement_risk",
    "term_risk",
    "embedding_risk",
    "nearest_seeds",
    "combine_risk",
    "neighbourhood",
    "RiskExpansion",
    "Explanation",
    "Contribution",
    "ConvergenceWarning",
    "Selection",
    "DEFAULT_THRESHOLD",
    "DEFAULT_DAMPING",
    "DEFAULT_RADIUS",
]
