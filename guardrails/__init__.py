"""recsys-guardrails: keep a recommender's suggestions out of flagged neighbourhoods.

Import as ``guardrails``. The public API is listed in ``__all__``; every other module is
private and may change. Subpackages: :mod:`guardrails.filters` (the Filter protocol and
built-in filters), :mod:`guardrails.signals` (labels, the durable store, report intake,
snapshots), :mod:`guardrails.expand` (risk propagation around flagged seeds),
:mod:`guardrails.text` (obfuscation-proof term and link matching),
:mod:`guardrails.testing` (Hypothesis strategies and a conformance suite for filters),
:mod:`guardrails.audit` (the test-account experiment) and :mod:`guardrails.distributed`
(batch scoring on Dask, optional extra ``dask``). Every name loads on first access.

Note: the unrelated package ``guardrails-ai`` installs the same import name; do not
install both into one environment.
"""

import typing as _typing

from .exceptions import __all__ as _ERRORS  # the exception tree: standard library only

# Names load on first access (PEP 562), so that ``import guardrails`` -- and the command
# line's ``--version`` and ``--help`` -- do not pay for numpy, scipy and implicit.
_EXPORTS = {
    # serving
    "Guard": ".guard",
    "GuardResult": ".guard",
    "ServingGuard": ".serving",
    "FactorModel": ".models",
    "ItemItemModel": ".models",
    "ANNRetrieval": ".retrieval",
    # policy
    "Policy": ".policy",
    "Holdback": ".policy",
    "Decision": ".policy",
    "DecisionCounters": ".policy",
    "Explanation": ".policy",
    "default_policy": ".policy",
    "load_policy": ".policy",
    "save_policy": ".policy",
    "register_filter": ".filters",
    # signals
    "LabelStore": ".signals",
    "ReportQueue": ".signals",
    "Snapshot": ".signals",
    "IdMap": ".signals",
    # text
    "TextGuard": ".text",
    # errors and warnings: the exception tree's own list
    **dict.fromkeys(_ERRORS, ".exceptions"),
}
# Public names whose object lives under another name.
_RENAMED = {"propagate_risk": (".expand", "propagate")}
_SUBPACKAGES = ("expand", "filters", "signals", "testing", "text", "audit", "distributed")

if _typing.TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import audit, distributed, expand, filters, signals, testing, text
    from .exceptions import *  # noqa: F403
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
    from .serving import ServingGuard
    from .signals import IdMap, LabelStore, ReportQueue, Snapshot
    from .text import TextGuard

__version__ = "0.1.0"

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
]
# errors and warnings: the exception tree's own list. Type checkers read the names from
# the star import above; mypy does not follow this extension for ``from guardrails
# import *`` (import the names themselves, as the examples do).
__all__ += _ERRORS


def __getattr__(name: str):
    import importlib

    if name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _RENAMED:
        module, attr = _RENAMED[name]
        value = getattr(importlib.import_module(module, __name__), attr)
    else:
        raise AttributeError(f"module 'guardrails' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
