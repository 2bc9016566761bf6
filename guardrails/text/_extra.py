"""The ``text`` extra's optional dependencies, imported on first use."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..exceptions import missing_extra

__all__ = ["import_text_extra"]


def import_text_extra(module: str, feature: str) -> ModuleType:
    """Import ``module`` from the ``text`` extra, or raise ``MissingDependencyError``.

    Imported when a feature first needs it, so ``import guardrails`` works without the
    extra and the error names the feature and the install command.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise missing_extra(module, "text", feature) from exc
