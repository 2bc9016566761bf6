"""Protected accounts reach a viewer only through an existing tie in the follow graph.

Platforms have moved from "keep risky viewers away from teenagers" to a rule that needs
no judgement about the viewer: a minor's account is not suggested to an adult who has no
existing tie to it. :class:`RequireTie` is that rule for any protected set of candidates
(``targets``): a viewer outside ``exempt_viewers`` gets a target only when they already
follow it, or when they follow at least ``min_shared`` accounts that the target follows
(``through="followees"``: shared contacts, the people a parent, a coach or a classmate
has in common with the child), that follow the target (``"followers"``), or either
(``"both"``). Intermediaries followed by more than ``max_followers`` accounts do not
count: following the same celebrity is no tie.

The filter needs no risk score and no recognition of the viewer as risky: a buyer who
follows no minor and no flagged account still gets no minors' accounts that the model
carries to him from his co-buyers' follows, because he has nothing in common with those
children.

The tie counts are one sparse product per batch, ``viewer_follows @ B`` with ``B`` the
follow graph restricted to the targets' columns (and to the intermediaries that count),
computed once (with anchored ties a second, over the followed targets the viewer is tied
to: :func:`shared_contacts`): only the protected columns are ever touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._validation import (
    canonical_csr,
    check_bool,
    check_choice,
    check_csr,
    check_float,
    check_int,
    fail,
    is_int_vector,
)
from ..core.plan import PlanPart
from ._actions import check_action
from .base import Catalog, Filter, ViewerBatch
from .primitive import followed_cells, row_ordered_cells, stored_cells, viewer_values

__all__ = ["RequireTie", "THROUGH_TARGETS", "TIE_DIRECTIONS", "TieBridges", "shared_contacts"]

#: How an intermediary account ties a viewer to a target: the viewer follows an account
#: that the target follows (``"followees"``), that follows the target (``"followers"``),
#: or either (``"both"``).
TIE_DIRECTIONS = ("followees", "followers", "both")


class RequireTie(Filter):
    """Protected candidates are suggested only to viewers with an existing tie to them.

    Parameters
    ----------
    targets : array-like of bool, shape (n_candidates,), or of int
        The protected candidates (for example minors' accounts).
    graph : sparse matrix, shape (n_candidates, n_candidates), keyword-only
        The follow graph between candidates: non-zero ``(a, b)`` when ``a`` follows ``b``.
    follows : sparse matrix, shape (n_users, n_candidates), optional, keyword-only
        The viewers' stored follows (for example the model's interaction matrix). Viewers
        beyond its rows have only the call's interactions.
    use_call_interactions : bool, keyword-only
        Also count the interactions passed in the call (``user_items``) as follows.
    min_shared : int, keyword-only
        Intermediaries needed for a tie (at least 1). Following the target itself is
        always a tie.
    through : {"followees", "followers", "both"}, keyword-only
        Which intermediaries tie a viewer to a target: accounts the viewer follows that
        the target follows, that follow the target, or either (each counted once).
    max_followers : int, optional, keyword-only
        Intermediaries followed by more than this many accounts (in ``graph``) do not
        count: a celebrity that a viewer and a child both follow is no tie. ``None``:
        every intermediary counts.
    through_targets : bool or "anchored", keyword-only
        Whether a target's own account can be the intermediary: ``False`` and a viewer
        who follows one child is not tied to the children that child follows (or that
        follow it); only accounts outside ``targets`` tie. ``"anchored"``: a followed
        target ties the viewer to other targets only when the viewer is tied to that
        target itself through accounts outside ``targets`` (a parent who shares a
        contact with their child reaches the child's friends; a stranger who follows
        a child does not).
    exempt_viewers : array-like of bool, shape (n_users,), or of int, optional, keyword-only
        Viewers the rule does not apply to (for minors' accounts: viewers who are minors
        themselves). Ids beyond a bool mask are not exempt.
    action : {"drop", "demote"}, keyword-only
        Drop the targets a viewer has no tie to, or demote them by ``weight``.
    weight : float, keyword-only
        The demotion, in score units (``action="demote"``).
    protected : bool, keyword-only
        A child-safety rule (:attr:`Filter.protected <guardrails.filters.Filter.protected>`).
    reason, mode, failure, surfaces, name : keyword-only

    Notes
    -----
    Per batch of ``m`` viewers with ``k`` targets this costs one sparse product of the
    viewers' follows with an ``(n_candidates, k)`` matrix (anchored: one more, with a
    ``(k, k)`` one) and an ``(m, k)`` mask;
    nothing outside the targets' columns is touched. New viewers (ids beyond
    ``follows``, a call with no interactions) have no tie, so they get no targets: the
    strict reading for an account nothing is known about.
    """

    name = "require_tie"
    _transient = ("_memo",)

    #: Policy-file kind of every constructor argument (the common settings aside).
    config_spec = {
        "targets": "indices",
        "graph": "csr",
        "follows": "csr",
        "use_call_interactions": "bool",
        "min_shared": "int",
        "through": "str",
        "max_followers": "int",
        "through_targets": "bool_or_str",
        "exempt_viewers": "indices",
        "action": "str",
        "weight": "float",
        "protected": "bool",
    }

    def __init__(
        self,
        targets,
        *,
        graph,
        follows=None,
        use_call_interactions: bool = True,
        min_shared: int = 1,
        through: str = "followees",
        max_followers: int | None = None,
        through_targets: bool | str = True,
        exempt_viewers=None,
        action: str = "drop",
        weight: float = 1.0,
        protected: bool = False,
        reason: str = "no_tie",
        mode: str = "enforce",
        failure: str = "fail_closed",
        surfaces=None,
        name: str | None = None,
    ):
        # Arguments as given (sklearn style); validated state ends in '_'.
        self._keep_arguments(locals())
        where = "RequireTie"
        g = check_csr(graph, "graph", where)
        if g.shape[0] != g.shape[1]:
            raise fail("graph", where, "a square sparse matrix (n_candidates, n_candidates)", g)
        n = int(g.shape[0])
        self.graph_ = stored_cells(g)
        self.targets_ = _indices(targets, "targets", where, n)
        self.follows_ = None
        if follows is not None:
            self.follows_ = stored_cells(check_csr(follows, "follows", where, shape=(None, n)))
        self.use_call_interactions_ = check_bool(
            use_call_interactions, "use_call_interactions", where
        )
        self.min_shared_ = check_int(min_shared, "min_shared", where, low=1)
        self.through_ = check_choice(through, "through", where, TIE_DIRECTIONS)
        self.max_followers_ = (
            -1 if max_followers is None else check_int(max_followers, "max_followers", where, low=0)
        )
        self.through_targets_ = check_through_targets(through_targets, "through_targets", where)
        self.exempt_viewers_ = _exempt(exempt_viewers, where)
        self.action_ = check_action(action, where)
        self.weight_ = check_float(weight, "weight", where, low=0.0)
        self._protect(protected, where)
        self._apply_settings(locals(), where)

    def params(self) -> tuple:
        return self._fitted()

    # ------------------------------------------------------------------ the tie counts
    def _bridges(self) -> TieBridges:
        """:func:`tie_bridges` of the rule's graph and targets (computed once)."""
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] is self.graph_:
            return memo[1]
        cap = None if self.max_followers_ < 0 else self.max_followers_
        b = tie_bridges(
            self.graph_,
            self.targets_,
            through=self.through_,
            max_followers=cap,
            through_targets=self.through_targets_,
        )
        self._memo = (self.graph_, b)
        return b

    def viewer_follows(self, catalog: Catalog, viewers: ViewerBatch) -> sp.csr_matrix:
        """Ones at the cells ``(row, candidate)`` the batch's viewers follow (stored and,
        with ``use_call_interactions``, in the call), shape ``(m, n_candidates)``."""
        out = followed_cells(self.follows_, viewers, catalog.n, self.use_call_interactions_)
        out.data[:] = 1.0
        return out

    def exempt(self, viewers: ViewerBatch) -> np.ndarray:
        """Bool mask of the batch's viewers the rule does not apply to."""
        ex = self.exempt_viewers_
        if ex is None or viewers.userids is None:
            return np.zeros(viewers.size, dtype=bool)
        return viewer_values(ex, viewers.userids, False)

    def tied(self, catalog: Catalog, viewers: ViewerBatch) -> np.ndarray:
        """Bool ``(m, k)``: viewer row ``r`` has a tie to target ``targets_[j]``."""
        self._check(catalog)
        fol = self.viewer_follows(catalog, viewers)
        k = self.targets_.size
        out = np.zeros((viewers.size, k), dtype=bool)
        if not k or not fol.nnz:
            return out
        direct = sp.csr_matrix(fol[:, self.targets_])
        counts = shared_contacts(fol, self._bridges(), self.min_shared_, direct).toarray()
        out |= counts >= self.min_shared_
        out |= direct.toarray() > 0
        return out

    # ------------------------------------------------------------------ compile
    def _check(self, catalog: Catalog) -> None:
        catalog.check_sized("RequireTie", "graph", self.graph_.shape[0])

    def compile_viewers(self, catalog: Catalog, viewers: ViewerBatch) -> PlanPart | None:
        self._check(catalog)
        m, k = viewers.size, self.targets_.size
        if m == 0 or k == 0:
            return None
        if self.action_ == "demote" and self.weight_ == 0:
            return None
        untied = ~self.tied(catalog, viewers)
        untied[self.exempt(viewers)] = False
        rows, cols = np.nonzero(untied)
        if not rows.size:
            return None
        value = np.float32(1.0 if self.action_ == "drop" else self.weight_)
        cells = row_ordered_cells(
            rows,
            self.targets_[cols],
            np.full(rows.size, value, dtype=np.float32),
            (m, catalog.n),
        )
        if self.action_ == "drop":
            return PlanPart(self.name, self.reason, viewer_mask=cells)
        return PlanPart(self.name, self.reason, viewer_penalty=cells)

    @classmethod
    def example(cls) -> tuple:
        """A small instance and its catalogue, for the conformance checks."""
        rng = np.random.default_rng(0)
        n = 40
        g = sp.random(n, n, density=0.1, format="csr", random_state=rng, dtype=np.float32)
        f = cls(np.arange(0, n, 5), graph=g, follows=g, max_followers=6)
        return f, Catalog("items", n)


def follower_counts(graph: sp.csr_matrix) -> np.ndarray:
    """How many accounts follow each account: the stored cells in each column of the
    follow graph ``graph`` (canonical CSR)."""
    return np.diff(sp.csc_matrix(graph).indptr)


#: ``through_targets`` settings: a target's own account ties its followers to other
#: targets always (True), never (False), or only where they are tied to it through
#: accounts outside the targets ("anchored").
THROUGH_TARGETS = (True, False, "anchored")


def check_through_targets(value, name: str, where: str) -> bool | str:
    """``value`` as one of :data:`THROUGH_TARGETS`, or a ``ValidationError``."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str) and value == "anchored":
        return "anchored"  # a plain str (np.str_ too): one policy version
    raise fail(name, where, 'True, False or "anchored"', value)


@dataclass(frozen=True)
class TieBridges:
    """The tie rule's intermediaries (:func:`tie_bridges`).

    ``outside``: float32 CSR (n, k), 1 where account ``a`` ties its followers to target
    ``j`` (the targets' own rows left out unless ``through_targets`` is True). ``anchored``:
    with ``through_targets="anchored"``, float32 CSR (k, k), 1 where target ``i`` ties its
    anchored followers to target ``j``; ``None`` otherwise.
    """

    outside: sp.csr_matrix
    targets: np.ndarray
    anchored: sp.csr_matrix | None = None


def shared_contacts(
    follows: sp.csr_matrix,
    bridges: TieBridges,
    min_shared: int,
    direct: sp.csr_matrix | None = None,
) -> sp.csr_matrix:
    """Each viewer's shared intermediaries with every target: sparse (m, k) counts.

    ``follows`` (m, n) holds 1 at every followed account; ``direct`` is its targets'
    columns, when the caller has them. With anchored bridges, a followed target to which
    the viewer has ``min_shared`` intermediaries outside the targets adds its own ties
    (:class:`TieBridges`).
    """
    min_shared = check_int(min_shared, "min_shared", "shared_contacts", low=1)
    counts = sp.csr_matrix(follows @ bridges.outside)
    if bridges.anchored is None or not counts.nnz:
        return counts
    if direct is None:
        direct = sp.csr_matrix(follows[:, bridges.targets])
    anchor = sp.csr_matrix(direct.multiply(counts >= min_shared), dtype=np.float32)
    if not anchor.nnz:
        return counts
    return sp.csr_matrix(counts + anchor @ bridges.anchored)


def tie_bridges(
    graph: sp.csr_matrix,
    targets: np.ndarray,
    *,
    through: str = "followees",
    max_followers: float | None = None,
    followers: np.ndarray | None = None,
    through_targets: bool | str = True,
) -> TieBridges:
    """The tie rule's intermediaries (:class:`TieBridges`): ``shared_contacts(follows,
    tie_bridges(...), min_shared)`` counts each viewer's shared accounts with every
    target, the one definition of a tie, read by :class:`RequireTie` and by the attention
    to unrelated minors (:mod:`guardrails.policy._attention`).

    Parameters
    ----------
    graph : csr_matrix, shape (n, n)
        The follow graph, canonical, with 1 at every stored cell (:func:`stored_cells`).
    targets : ndarray of int64, shape (k,)
    through : {"followees", "followers", "both"}, keyword-only
        ``a`` followed by the target, following it, or either (counted once).
    max_followers : int or float, optional, keyword-only
        Accounts with more followers than this (hubs) tie nobody; ``None``: no cap.
    followers : ndarray, shape (n,), optional, keyword-only
        :func:`follower_counts` of ``graph``, when the caller has it.
    through_targets : bool or "anchored", keyword-only
        Whether a target's own account ties its followers to other targets. ``False``:
        following one child is no tie to that child's friends; ``"anchored"``: only for
        followers tied to that child through accounts outside the targets.
    """
    through_targets = check_through_targets(through_targets, "through_targets", "tie_bridges")
    parts = []
    if through in ("followees", "both"):
        parts.append(sp.csr_matrix(graph[targets].T))  # a followed by target j
    if through in ("followers", "both"):
        parts.append(sp.csr_matrix(graph[:, targets]))  # a follows target j
    b = parts[0] if len(parts) == 1 else sp.csr_matrix(parts[0] + parts[1])
    b = stored_cells(canonical_csr(b))
    # Intermediaries that tie nobody: hubs, and (unless always) the targets.
    keep = np.ones(graph.shape[0], dtype=bool)
    if max_followers is not None:
        if followers is None:
            followers = follower_counts(graph)
        keep &= followers <= max_followers
    anchored = None
    if through_targets == "anchored":
        # The targets' own rows (hubs still excluded), read only for anchored followers.
        anchored = _rows_kept(sp.csr_matrix(b[targets]), keep[targets])
    if through_targets is not True:
        keep[targets] = False
    return TieBridges(_rows_kept(b, keep), np.asarray(targets, dtype=np.int64), anchored)


def _rows_kept(b: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """``b`` with the rows outside ``keep`` emptied, float32 CSR."""
    if not keep.all():
        b = sp.csr_matrix(sp.diags(keep.astype(np.float32)) @ b)
        b.eliminate_zeros()
    return sp.csr_matrix(b, dtype=np.float32)


def _indices(value, name: str, where: str, n: int) -> np.ndarray:
    """Sorted unique int64 candidate indices from a bool mask of length ``n`` or indices."""
    arr = np.asarray(value)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise fail(name, where, f"a bool mask of length {n} or indices in [0, {n})", value)
        return np.flatnonzero(arr).astype(np.int64)
    if not is_int_vector(arr, low=0, high=n):
        raise fail(name, where, f"a bool mask of length {n} or indices in [0, {n})", value)
    return np.unique(arr.astype(np.int64))


def _exempt(value, where: str) -> np.ndarray | None:
    """Exempt viewers as a bool mask (indices become a mask up to the largest one)."""
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype == bool:
        if arr.ndim != 1:
            raise fail("exempt_viewers", where, "a 1-d bool mask or viewer indices", value)
        return arr.copy()
    if not is_int_vector(arr, low=0):
        raise fail("exempt_viewers", where, "a 1-d bool mask or non-negative viewer indices", value)
    out = np.zeros(int(arr.max(initial=-1)) + 1, dtype=bool)
    out[arr.astype(np.int64)] = True
    return out
