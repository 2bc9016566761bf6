"""Test-wide settings.

Under CI (``CI`` set in the environment) Hypothesis runs derandomized, so a submission is
judged on a reproducible set of examples; locally every run draws new ones.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
