"""recsys-guardrails: keep a recommender's suggestions out of flagged neighbourhoods.

Import as ``guardrails``. The public API is listed in ``__all__``; everything else is
private and may change.

Note: the unrelated package ``guardrails-ai`` installs the same import name; do not
install both into one environment.
"""

from . import filters
from .exceptions import (
    FailClosedError,
    FailClosedWarning,
    GuardrailsError,
    GuardrailsWarning,
    MissingDependencyError,
    PluginError,
    PolicyFileError,
    UnsupportedModelError,
    ValidationError,
)
from .guard import Guard, GuardResult
from .models import FactorModel, ItemItemModel
from .policy import Policy

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Guard",
    "GuardResult",
    "FactorModel",
    "ItemItemModel",
    "Policy",
    "filters",
    "GuardrailsError",
    "ValidationError",
    "PolicyFileError",
    "UnsupportedModelError",
    "FailClosedError",
    "PluginError",
    "MissingDependencyError",
    "GuardrailsWarning",
    "FailClosedWarning",
]
