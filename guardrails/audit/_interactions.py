"""The shape every audit dataset shares: a user-by-item interaction matrix."""

from __future__ import annotations

from typing import ClassVar


class UsersByItems:
    """``n_users`` and ``n_items`` of a dataset, read off the user-item matrix in the
    field that ``interactions_field`` names (own data, MovieLens)."""

    interactions_field: ClassVar[str]

    @property
    def n_users(self) -> int:
        return int(getattr(self, self.interactions_field).shape[0])

    @property
    def n_items(self) -> int:
        return int(getattr(self, self.interactions_field).shape[1])
