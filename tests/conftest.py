"""Test-wide settings.

Under CI (``CI`` set in the environment) Hypothesis runs derandomized, so a submission is
judged on a reproducible set of examples; locally every run draws new ones.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="module")
def client():
    """A Dask LocalCluster of 2 single-threaded worker processes, one per test module
    (the batch tests kill workers; a module's cluster never leaks into another's)."""
    import distributed  # the test extra installs it: a missing install fails loudly
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=50,
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as c,
    ):
        yield c
