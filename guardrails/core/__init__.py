"""The vectorized kernel: numpy and scipy only; knows arrays, never policy objects."""

from .kernel import PAD_ID, FactorSpace, SimilaritySpace, guarded_topk
from .plan import Action, Plan, PlanPart
from .threads import default_num_threads

__all__ = [
    "PAD_ID",
    "FactorSpace",
    "SimilaritySpace",
    "Plan",
    "PlanPart",
    "Action",
    "default_num_threads",
    "guarded_topk",
]
