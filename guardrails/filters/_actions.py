"""Graded actions shared by the built-in filters: names, codes and the parts they compile."""

from __future__ import annotations

import numpy as np

from .._validation import check_choice
from ..core.plan import Action, PlanPart

__all__ = ["ACTIONS", "ACTION_CODE", "check_action", "action_part"]

#: Graded actions, weakest first; "strictest wins" means the largest code wins.
ACTIONS = tuple(a.label for a in Action)
#: Action name -> code (:class:`~guardrails.core.plan.Action`).
ACTION_CODE = {a.label: int(a) for a in Action}


def check_action(value, where: str, name: str = "action") -> str:
    """A filter's own action: ``"drop"`` or ``"demote"``."""
    return check_choice(value, name, where, ("drop", "demote"))


def action_part(name: str, reason: str, action: str, mask: np.ndarray, weight) -> PlanPart | None:
    """A drop (mask) or demote (penalty) part over ``mask``."""
    if not mask.any():
        return None
    if action == "drop":
        return PlanPart(name, reason, hard_mask=mask)
    if np.isscalar(weight):
        pen = np.where(mask, np.float32(weight), np.float32(0.0)).astype(np.float32)
    else:
        pen = np.where(mask, weight, 0.0).astype(np.float32)
    return PlanPart(name, reason, penalty=pen)
