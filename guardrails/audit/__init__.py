"""Audit: reproduce the test-account experiment on a synthetic platform and measure the guard.

- :func:`make_platform`: a synthetic follow graph with benign communities, an abusive
  network of sellers and buyers, and a vulnerable youth-sports community;
- :mod:`~guardrails.audit.walks`: test-account walks (view one, follow a handful, search
  start) and their per-step exposure;
- :mod:`~guardrails.audit.metrics`: recall@k, NDCG@k, suppressed benign accounts, reach;
- :mod:`~guardrails.audit.sweep`: the exposure/quality trade-off and its Pareto front;
- :func:`run_audit` and :mod:`~guardrails.audit.report`: the whole audit, its table, JSON
  and plots (``recsys-guardrails audit`` on the command line);
- :func:`audit_platform` and :mod:`~guardrails.audit.data`: the same audit on your own
  platform's exported files (``recsys-guardrails audit --data DIR``).
"""

from .data import DataPlatform, OwnData, load_data
from .platform import BENIGN, BUYER, CELEBRITY, MINOR, ROLE_NAMES, SELLER, Platform, make_platform
from .run import audit_platform, run_audit
from .sweep import SweepPoint, pareto_front, run_sweep
from .walks import WalkResult, follow_handful, risky_viewers, search_start, view_one

__all__ = [
    "Platform",
    "make_platform",
    "run_audit",
    "audit_platform",
    "OwnData",
    "DataPlatform",
    "load_data",
    "WalkResult",
    "view_one",
    "follow_handful",
    "search_start",
    "risky_viewers",
    "SweepPoint",
    "run_sweep",
    "pareto_front",
    "BENIGN",
    "CELEBRITY",
    "MINOR",
    "SELLER",
    "BUYER",
    "ROLE_NAMES",
]
