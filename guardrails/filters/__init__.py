"""Filters: the Filter protocol and built-in filters.

Third-party filters implement :class:`FilterProtocol` (or subclass :class:`Filter`).
"""

from .base import Catalog, Filter, FilterProtocol, ViewerBatch, array_fingerprint
from .primitive import BlockItems, DemoteRisk, ExcludePairs, SuppressRisk

__all__ = [
    "Catalog",
    "ViewerBatch",
    "Filter",
    "FilterProtocol",
    "array_fingerprint",
    "BlockItems",
    "ExcludePairs",
    "SuppressRisk",
    "DemoteRisk",
]
