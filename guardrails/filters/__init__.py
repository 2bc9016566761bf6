"""Filters: the Filter protocol, built-in filters and the plug-in registry.

Third-party filters implement :class:`FilterProtocol` (or subclass :class:`Filter`),
register with :func:`register_filter` or the ``guardrails.filters`` entry-point group
(:func:`load_plugins`), and check themselves with :mod:`guardrails.testing`.
"""

from . import base
from .base import *  # noqa: F403 (base.__all__: the protocol and its helpers)
from .context import ContextRisk
from .primitive import BlockItems, DemoteRisk, ExcludePairs, SuppressRisk
from .registry import ENTRY_POINT_GROUP, load_plugins, register_filter, registered_filters
from .safety import (
    ACTIONS,
    CHILD_SAFETY_CATEGORIES,
    BlockLabeled,
    CohortRule,
    SuppressNeighborhood,
    is_child_safety,
)
from .ties import TIE_DIRECTIONS, RequireTie
from .viewers import RelationshipRule, ShareCap, ViewerCircuitBreaker

__all__ = [
    "BlockItems",
    "ExcludePairs",
    "SuppressRisk",
    "DemoteRisk",
    "BlockLabeled",
    "SuppressNeighborhood",
    "CohortRule",
    "ViewerCircuitBreaker",
    "ContextRisk",
    "ShareCap",
    "RelationshipRule",
    "RequireTie",
    "TIE_DIRECTIONS",
    "ACTIONS",
    "CHILD_SAFETY_CATEGORIES",
    "is_child_safety",
    "ENTRY_POINT_GROUP",
    "register_filter",
    "registered_filters",
    "load_plugins",
]
# base's own list (mypy does not follow this for a star import of the package:
# import the names themselves).
__all__ += base.__all__
