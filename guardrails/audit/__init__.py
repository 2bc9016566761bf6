"""Audit: reproduce the test-account experiment on a synthetic platform and measure the guard.

- :func:`make_platform`: a synthetic follow graph with benign communities, an abusive
  network of sellers and buyers, and a vulnerable youth-sports community;
- :mod:`~guardrails.audit.walks`: test-account walks (view one, follow a handful, search
  start) and their per-step exposure;
- :mod:`~guardrails.audit.metrics`: recall@k, NDCG@k, suppressed benign accounts, reach;
- :mod:`~guardrails.audit.sweep`: the exposure/quality trade-off and its Pareto front;
- :func:`run_audit` and :mod:`~guardrails.audit.report`: the whole audit, its table, JSON
  and plots (``recsys-guardrails audit`` on the command line);
- :mod:`~guardrails.audit.family` and :func:`run_family`: a randomised family of platforms
  (tuning and evaluation seeds) and the worst case of a policy over it
  (``recsys-guardrails audit --family N``).
- :func:`audit_platform` and :mod:`~guardrails.audit.data`: the same audit on your own
  platform's exported files (``recsys-guardrails audit --data DIR``).
"""

from . import platform
from .data import DataPlatform, OwnData, load_data
from .family import FamilyConfig, FamilyPlatform, draw_config, family_seeds, make_family_platform
from .family_run import run_family
from .platform import *  # noqa: F403 (platform.__all__: the platform and its role codes)
from .run import audit_platform, run_audit
from .sweep import SweepPoint, pareto_front, run_sweep
from .walks import WalkResult, follow_handful, risky_viewers, search_start, view_one

__all__ = [
    "run_audit",
    "FamilyConfig",
    "FamilyPlatform",
    "draw_config",
    "family_seeds",
    "make_family_platform",
    "run_family",
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
]
# platform's own list (mypy does not follow this for a star import of the package:
# import the names themselves).
__all__ += platform.__all__
