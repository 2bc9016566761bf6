"""recsys-guardrails: keep a recommender's suggestions out of flagged neighbourhoods.

Import as ``guardrails``. The public API is listed in ``__all__``; every other module is
private and may change. Subpackages: :mod:`guardrails.filters` (the Filter protocol and
built-in filters), :mod:`guardrails.signals` (labels, the durable store, report intake,
snapshots), :mod:`guardrails.expand` (risk propagation around flagged seeds),
:mod:`guardrails.text` (obfuscation-proof term and link matching),
:mod:`guardrails.testing` (Hypothesis strategies and a conformance suite for filters),
:mod:`guardrails.audit` (the test-account experiment) and :mod:`guardrails.distributed`
(batch scoring on Dask, optional extra ``dask``); the last two load on first access.

Note: the unrelated package ``guardrails-ai`` installs the same import name; do not
install both into one environment.
"""

from . import expand, filters, signals, testing, text
from .exceptions import (
    ConvergenceWarning,
    CorruptStoreError,
    FailClosedError,
    FailClosedWarning,
    GuardrailsError,
    GuardrailsWarning,
    LeaseLostError,
    MissingDependencyError,
    NotAGuardrailsStoreError,
    PluginError,
    PolicyFileError,
    SchemaVersionError,
    StoreError,
    UnsupportedModelError,
    ValidationError,
)
from .expand import propagate as propagate_risk
from .filters import register_filter
from .guard import Guard, GuardResult
from .models import FactorModel, ItemItemModel
from .policy import (
    Decision,
    DecisionCounters,
    Explanation,
    Holdback,
    Policy,
    default_policy,
    load_policy,
    save_policy,
)
from .retrieval import ANNRetrieval
from .signals import IdMap, LabelStore, ReportQueue, ServingGuard, Snapshot
from .text import TextGuard

__version__ = "0.1.0"

_LAZY = ("audit", "distributed")

__all__ = [
    "__version__",
    # serving
    "Guard",
    "GuardResult",
    "ServingGuard",
    "FactorModel",
    "ItemItemModel",
    "ANNRetrieval",
    # policy
    "Policy",
    "Holdback",
    "Decision",
    "DecisionCounters",
    "Explanation",
    "default_policy",
    "load_policy",
    "save_policy",
    "register_filter",
    # signals
    "LabelStore",
    "ReportQueue",
    "Snapshot",
    "IdMap",
    # expansion and text
    "propagate_risk",
    "TextGuard",
    # subpackages
    "filters",
    "signals",
    "expand",
    "text",
    "testing",
    "audit",
    "distributed",
    # errors and warnings
    "GuardrailsError",
    "ValidationError",
    "PolicyFileError",
    "UnsupportedModelError",
    "FailClosedError",
    "PluginError",
    "StoreError",
    "NotAGuardrailsStoreError",
    "SchemaVersionError",
    "CorruptStoreError",
    "LeaseLostError",
    "MissingDependencyError",
    "GuardrailsWarning",
    "FailClosedWarning",
    "ConvergenceWarning",
]


def __getattr__(name: str):
    # audit (matplotlib, implicit training) and distributed (dask) load on first access
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'guardrails' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
