"""Every error and warning raised by recsys-guardrails.

The tree::

    GuardrailsError                      root of everything this library raises
    ├── ValidationError (ValueError)     bad input at the public boundary
    │   └── PolicyFileError              a policy file with unknown keys or bad values
    ├── UnsupportedModelError (TypeError)
    │                                    a model the Guard cannot adapt, or an operation
    │                                    the wrapped model does not support
    ├── FailClosedError                  the guard could not read its safety signals and
    │                                    refused to serve unguarded results
    ├── PluginError                      a third-party filter failed registration checks
    ├── ConformanceError (AssertionError)
    │                                    a filter broke the filter contract (raised by
    │                                    guardrails.testing and at plug-in registration)
    ├── StoreError                       the durable signal store cannot be used
    │   ├── NotAGuardrailsStoreError     the file is not one of ours
    │   ├── SchemaVersionError           the file comes from a newer schema
    │   ├── CorruptStoreError            the file fails SQLite's integrity check
    │   └── LeaseLostError               a reviewer acted on a report lease that expired
    │                                    and was taken over; nothing was applied
    └── MissingDependencyError (ImportError)
                                         an optional extra is not installed

    GuardrailsWarning (UserWarning)
    ├── FailClosedWarning                a guard served its safe fallback instead of
    │                                    guarded results
    ├── ConvergenceWarning               a risk propagation reached its iteration cap
    │                                    before its tolerance
    └── IsolatedSeedWarning              labelled seeds with no follows and no
                                         interactions: no risk spreads from them

Every error message has one shape: what was wrong, where, and what was received, for
example ``"The 'N' parameter of Guard.recommend must be an int in [1, inf). Got 0
instead."``
"""

from __future__ import annotations

__all__ = [
    "GuardrailsError",
    "ValidationError",
    "PolicyFileError",
    "UnsupportedModelError",
    "FailClosedError",
    "PluginError",
    "ConformanceError",
    "StoreError",
    "NotAGuardrailsStoreError",
    "SchemaVersionError",
    "CorruptStoreError",
    "LeaseLostError",
    "MissingDependencyError",
    "GuardrailsWarning",
    "FailClosedWarning",
    "ConvergenceWarning",
    "IsolatedSeedWarning",
]


class GuardrailsError(Exception):
    """Root of every exception raised by recsys-guardrails."""


class ValidationError(GuardrailsError, ValueError):
    """An argument at the public boundary has the wrong type, shape, dtype or value."""


class PolicyFileError(ValidationError):
    """A policy file is malformed: unknown keys, bad values or a newer schema.

    The message names the file and the key.
    """


class UnsupportedModelError(GuardrailsError, TypeError):
    """The Guard cannot adapt this model, or the model cannot do what was asked."""


class FailClosedError(GuardrailsError):
    """The guard could not read its safety signals and refused to serve.

    Raised instead of returning unguarded recommendations: a missing, unreadable or
    stale snapshot, or a filter that failed while its failure mode is ``fail_closed``.
    """


class PluginError(GuardrailsError):
    """A third-party filter failed to load or failed the registration checks."""


class ConformanceError(GuardrailsError, AssertionError):
    """A filter broke the filter contract; the message names the filter and the check."""


class StoreError(GuardrailsError):
    """The durable signal store cannot be opened or used."""


class NotAGuardrailsStoreError(StoreError):
    """The file exists but is not a recsys-guardrails store; it is left untouched."""


class SchemaVersionError(StoreError):
    """The store was written by a newer schema than this version understands."""


class CorruptStoreError(StoreError):
    """The store fails SQLite's integrity check; it is left untouched."""


class LeaseLostError(StoreError):
    """The claim's lease is no longer held (it expired and the report was reclaimed,
    resolved or dead-lettered); the action was not applied."""


class MissingDependencyError(GuardrailsError, ImportError):
    """An optional extra is needed for this feature and is not installed."""


class GuardrailsWarning(UserWarning):
    """Root of every warning issued by recsys-guardrails."""


class FailClosedWarning(GuardrailsWarning):
    """A guard served its configured safe fallback instead of guarded results."""


def missing_extra(module: str, extra: str, feature: str) -> MissingDependencyError:
    """Build the error raised when an optional dependency is not installed."""
    return MissingDependencyError(
        f"{feature} needs the optional dependency {module!r}, which is not installed. "
        f"Install it with: pip install 'recsys-guardrails[{extra}]'"
    )


class ConvergenceWarning(GuardrailsWarning):
    """A risk propagation reached its iteration cap before its tolerance."""


class IsolatedSeedWarning(GuardrailsWarning):
    """Labelled seeds that have no follows in the graph and no interactions, so no risk
    spreads from them: typically banned or deleted accounts, whose edges the platform
    removed. Their neighbourhood (the buyers who follow a re-created account) is found
    only if their follows at the ban are passed in the graph."""
