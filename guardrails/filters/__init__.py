"""Filters: the Filter protocol, built-in filters and the plug-in registry.

Third-party filters implement :class:`FilterProtocol` (or subclass :class:`Filter`),
register with :func:`register_filter` or the ``guardrails.filters`` entry-point group
(:func:`load_plugins`), and check themselves with :mod:`guardrails.testing`.
"""

from . import context, primitive, safety
from .base import (
    CapFilter,
    CapSpec,
    Catalog,
    CohortFilter,
    CohortTable,
    Filter,
    FilterProtocol,
    QueryFilter,
    ViewerBatch,
    array_fingerprint,
)
from .context import *  # noqa: F403
from .primitive import *  # noqa: F403
from .registry import ENTRY_POINT_GROUP, load_plugins, register_filter, registered_filters
from .safety import *  # noqa: F403

# Every name of the built-in filter modules; of .base and .registry, all but their tables
# (base.MODES, base.FAILURE_MODES, registry.KINDS, registry.BUILTINS and
# registry.filter_class), which stay in those modules.
__all__ = [
    "Catalog",
    "ViewerBatch",
    "Filter",
    "FilterProtocol",
    "CohortFilter",
    "CapFilter",
    "QueryFilter",
    "CohortTable",
    "CapSpec",
    "array_fingerprint",
    "ENTRY_POINT_GROUP",
    "register_filter",
    "registered_filters",
    "load_plugins",
]
__all__ += primitive.__all__
__all__ += safety.__all__
__all__ += context.__all__
