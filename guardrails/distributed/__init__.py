"""Batch scoring and risk propagation on a Dask cluster (the ``dask`` extra).

- :func:`recommend_all`: guarded top-``N`` items for every user of a platform, block by
  block on the workers, written to Parquet or returned as a Dask DataFrame; identical to
  :meth:`guardrails.Guard.recommend` in one process, every user exactly once even when
  workers die.
- :func:`personalized_pagerank`: personalised PageRank (risk propagation from flagged
  accounts) over a graph stored as row blocks on the workers, for graphs that do not fit
  one machine.

Importing this module needs nothing beyond the core dependencies; calling its functions
needs Dask, pandas and pyarrow (``pip install 'recsys-guardrails[dask]'``), and raises
:class:`~guardrails.exceptions.MissingDependencyError` naming that extra when they are
missing.
"""

from ._batch import COLUMNS, MANIFEST_NAME, BatchResult, recommend_all
from ._pagerank import personalized_pagerank

__all__ = ["recommend_all", "BatchResult", "COLUMNS", "MANIFEST_NAME", "personalized_pagerank"]
