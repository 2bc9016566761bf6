"""Policy: an ordered set of filters compiled into one scoring plan.

A :class:`Policy` is immutable. Its version is a content hash of its settings and its
filters' fingerprints, so two policies with the same filters, parameters and data have
the same version, and every result and decision records the version it was computed
with.

Semantics
---------
- **Precedence.** The strictest action wins, whatever the order: a drop (mask) beats a
  demote (penalty) beats allow. Decisions name the first filter, in policy order, that
  took the strictest action on an item.
- **Modes**, per filter and for the whole policy: ``"enforce"``; ``"shadow"`` (the filter
  is computed and what it would change is recorded, but the served slate is the one
  without it: with the whole policy in shadow, slates are byte-identical to an unguarded
  Guard's); ``"off"`` (ignored; the policy-wide ``"off"`` is a kill switch).
- **Surfaces.** A filter with ``surfaces`` set applies only to calls on those surfaces;
  a call without a surface gets every filter (the strictest reading).
- **Holdback.** A :class:`Holdback` exempts a deterministic, salted fraction of viewers
  from named filters for experiments; child-safety (``protected``) filters can never be
  held back.
- **Failure modes.** A filter that cannot compile (missing labels, a missing snapshot)
  raises :class:`~guardrails.exceptions.FailClosedError` when its failure mode is
  ``"fail_closed"`` (the default, and the only choice for protected filters); with
  ``"fail_open"`` it is skipped with a :class:`~guardrails.exceptions.GuardrailsWarning`
  and counted, never silently.
"""

from ._compiled import CompiledPolicy
from ._decisions import Decision, DecisionCounters, Explanation, FilterVerdict
from ._defaults import (
    DEFAULT_AUDIENCE_LIFT as DEFAULT_AUDIENCE_LIFT,
)
from ._defaults import (
    DEFAULT_DEMOTE_LIFT as DEFAULT_DEMOTE_LIFT,
)
from ._defaults import (
    DEFAULT_DROP_FLOOR as DEFAULT_DROP_FLOOR,
)
from ._defaults import (
    DEFAULT_DROP_LIFT as DEFAULT_DROP_LIFT,
)
from ._defaults import (
    DEFAULT_NEW_VIEWER as DEFAULT_NEW_VIEWER,
)
from ._defaults import (
    DEFAULT_NEW_VIEWER_SHARE as DEFAULT_NEW_VIEWER_SHARE,
)
from ._defaults import (
    DEFAULT_POOL_LIFT as DEFAULT_POOL_LIFT,
)
from ._defaults import (
    DEFAULT_SUCCESSOR_FOLLOWERS as DEFAULT_SUCCESSOR_FOLLOWERS,
)
from ._defaults import (
    DEFAULT_SUCCESSOR_JACCARD as DEFAULT_SUCCESSOR_JACCARD,
)
from ._defaults import (
    DEFAULT_TERM_WEIGHT as DEFAULT_TERM_WEIGHT,
)
from ._defaults import (
    DEFAULT_TRIP as DEFAULT_TRIP,
)
from ._defaults import (
    default_policy,
)
from ._file import load_policy, policy_from_dict, policy_to_dict, save_policy
from ._policy import SCHEMA_VERSION, Holdback, Policy, as_policy
from ._policy import FilterSettings as FilterSettings
from ._run import CallCache as CallCache

#: Former name of :class:`CallCache`, kept for code that imported it from here.
_CallCache = CallCache

__all__ = [
    "Policy",
    "Holdback",
    "Decision",
    "Explanation",
    "FilterVerdict",
    "DecisionCounters",
    "CompiledPolicy",
    "as_policy",
    "default_policy",
    "load_policy",
    "save_policy",
    "policy_from_dict",
    "policy_to_dict",
    "SCHEMA_VERSION",
]
