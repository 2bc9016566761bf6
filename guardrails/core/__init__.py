"""The vectorized kernel: numpy and scipy only; knows arrays, never policy objects."""

from .kernel import PAD_ID, FactorSpace, SimilaritySpace, default_num_threads, guarded_topk
from .plan import Plan, PlanPart

__all__ = [
    "PAD_ID",
    "FactorSpace",
    "SimilaritySpace",
    "Plan",
    "PlanPart",
    "default_num_threads",
    "guarded_topk",
]
