"""``default_policy``: a strong protective policy from what a platform typically has.

The thresholds are lifts over the catalogue's typical risk, so they mean the same thing
whatever the amount of seed evidence; each constant says where its value comes from. The
minors' rules and their defaults (``DEFAULT_MINOR_*``, ``DEFAULT_ATTENTION_*``) are in
:mod:`guardrails.policy._minors`, the flagged-term contexts (``DEFAULT_TERM_NEIGHBOURS``)
in :mod:`guardrails.policy._terms`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from .._validation import check_bool, check_choice, check_csr, check_vector, fail
from ..exceptions import IsolatedSeedWarning
from ..expand import coengagement_risk, propagate, term_risk
from ..filters._risk import nearest_items, neighbour_risk, seed_mask, viewer_share
from ..filters.context import ContextRisk
from ..filters.primitive import DemoteRisk
from ..filters.safety import (
    BlockLabeled,
    CohortRule,
    ShareCap,
    SuppressNeighborhood,
    ViewerCircuitBreaker,
)
from ..filters.ties import check_through_targets
from ._attention import audience_marks
from ._minors import (
    DEFAULT_MINOR_TIE_THROUGH_MINORS,
    attention_context,
    minor_accounts,
    minor_filters,
    tie_graph,
    tie_weight,
)
from ._policy import Policy
from ._terms import checked_terms, flagged_term_context

__all__ = [
    "DEFAULT_AUDIENCE_LIFT",
    "DEFAULT_DEMOTE_LIFT",
    "DEFAULT_DROP_FLOOR",
    "DEFAULT_DROP_LIFT",
    "DEFAULT_HIGH_LIFT",
    "DEFAULT_POOL_LIFT",
    "DEFAULT_SUCCESSOR_FOLLOWERS",
    "DEFAULT_SUCCESSOR_JACCARD",
    "DEFAULT_TERM_WEIGHT",
    "DEFAULT_TRIP",
    "default_policy",
]


#: Lift (risk over the catalogue's typical risk, its median) at or above which an account
#: is in a flagged neighbourhood and dropped: a walk from it meets flagged accounts six
#: times as often as a walk from a typical account (4 dropped up to 2 % of ordinary
#: accounts on the family's tuning platforms; the viewing context, not the drop, now
#: keeps test accounts off the band between). Risk from personalised PageRank has a
#: background level that grows with the amount of seed evidence (more seeds, more visits
#: everywhere), so a lift over the background means the same thing whatever the seeds.
DEFAULT_DROP_LIFT = 6.0
#: Lift at or above which an account is demoted (graded by its risk), not dropped: the
#: moderate band, mostly ordinary accounts near camouflage follows.
DEFAULT_DEMOTE_LIFT = 2.0
#: Lift at or below which an account is "no riskier than typical": the low-risk pool
#: (the less risky half of the catalogue) that tripped viewers and risky profiles are
#: served from.
DEFAULT_POOL_LIFT = 1.0
#: Absolute floor of the drop threshold, so a catalogue with (almost) no risk drops
#: nothing on noise.
DEFAULT_DROP_FLOOR = 0.02
#: Confidence given to an account only because it uses a flagged term (hashtag): the
#: terms have innocent uses too, so term use alone is half the evidence of a label.
DEFAULT_TERM_WEIGHT = 0.5
#: Lift at or above which an account is high-risk (at most the drop threshold): at most
#: 10 % of a slate comes from such accounts.
DEFAULT_HIGH_LIFT = 4.0
#: Share of a viewer's interactions on dropped accounts that trips the breaker.
DEFAULT_TRIP = 0.3
#: Viewers the model does not know with at most this many interactions in the call are
#: new accounts: their follows are their viewing context (:class:`ContextRisk`).
DEFAULT_NEW_VIEWER = 10
#: A new account's follows are a risky context when at least this share of them is
#: risky. On 18 tuning platforms "any one" and this share gave the same safety values
#: on every row, and ordinary accounts served as new accounts kept a median x0.961 of
#: their recall instead of x0.913 (10th percentile x0.745 instead of x0.694).
DEFAULT_NEW_VIEWER_SHARE = 1 / 3
#: Nearest items (in the model's factor space, or by its item-item similarity) whose mean
#: risk is an item's neighbourhood risk.
DEFAULT_NEIGHBOURS = 10
#: Term risk of an account that uses a flagged term itself (one hop on the term graph:
#: at least damping / 5 for an account with five terms, one of them flagged); accounts
#: further away are not soft seeds.
_TERM_DIRECT = 0.1
#: An account whose followers are risky viewing contexts at least this many times as often
#: as the platform's accounts are (and beyond chance, _AUDIENCE_P) is a risky context
#: itself: the same lift as the drop line, "meets flagged accounts six times as often".
#: On six rows of the family's tuning platforms it marked 94-100 % of the active sellers
#: (85-100 % before) at 0-1.6 points more ordinary accounts; without the lift (only
#: beyond chance) one round marked 0.2-3.7 % more.
DEFAULT_AUDIENCE_LIFT = 6.0
#: Chance, at the platform's rate of risky contexts, that an account's followers reach
#: its count of risky contexts (binomial tail), below which the audience mark applies:
#: the same as the flagged-term neighbourhood's.
_AUDIENCE_P = 0.01
#: Jaccard of follower sets at or above which an account is a removed seed's successor
#: (``seed_history``): its followers now are mostly the seed's followers at its removal.
#: On 150 tuning platforms of the family (re-created sellers keep 80 % of their
#: followers) 0.5 marked 231 of 237 re-created accounts and 122 other network accounts
#: that share their buyers, and no benign account (0.3: the same, 336 others).
DEFAULT_SUCCESSOR_JACCARD = 0.5
#: Followers a removed seed needs at its removal for the successor test: with fewer, a
#: handful of shared followers is no evidence.
DEFAULT_SUCCESSOR_FOLLOWERS = 3
#: Largest share of the catalogue neighbourhood suppression may drop (a collateral cap).
_DROP_CAP = {"strict": 0.10, "balanced": 0.05}


# Over 120 lines by its numpydoc docstring (about 175 lines: every default and why it
# holds); the body (about 95 lines) is one linear sequence, inputs, risk, thresholds,
# pool, then the filters in order, with each part that stands alone in a helper
# (_input_risk, _thresholds, _neighbourhood, _viewer_risk, _context_risk, _context_filter;
# flagged_term_context in _terms; attention_context and minor_filters in _minors).
def default_policy(
    *,
    n_items: int | None = None,
    seeds=None,
    graph=None,
    seed_history=None,
    interactions=None,
    account_terms=None,
    seed_terms=None,
    risk=None,
    viewer_risk=None,
    minors=None,
    minor_viewers=None,
    item_factors=None,
    item_similarity=None,
    viewer_cohorts=None,
    candidate_cohorts=None,
    cohort_matrix=None,
    cohort_labels: tuple[Sequence[str], Sequence[str]] | None = None,
    label_categories: Sequence[str] = ("csam",),
    snapshot_labels: bool = False,
    strictness: str = "strict",
    discovery_surfaces: Sequence[str] | None = None,
    minor_ties: bool = True,
    minor_attention: bool = True,
    minor_ties_through_minors: bool | str = DEFAULT_MINOR_TIE_THROUGH_MINORS,
    strip_context: bool = True,
    audience_context: bool = True,
    drop_corroboration: bool = True,
    name: str = "default",
) -> Policy:
    """A strong protective policy from what a platform typically has.

    Parameters
    ----------
    n_items : int, optional, keyword-only
        Catalogue size; checked against the other arrays when given.
    seeds : array-like of bool or int, optional, keyword-only
        Flagged accounts (candidate indices); always dropped. A seed with no follow in
        ``graph`` and no interaction spreads no risk (a banned account whose edges were
        removed): :class:`~guardrails.exceptions.IsolatedSeedWarning` names them.
    graph : sparse matrix, shape (n_items, n_items), optional, keyword-only
        Follow graph between candidates (accounts following accounts); risk propagates
        over it both ways (:func:`guardrails.expand.propagate`).
    seed_history : sparse matrix, shape (n_items, n_items), optional, keyword-only
        Follows the graph no longer holds, kept when seeds were banned or deleted (row:
        follower, column: followee): with ``graph``, an account whose followers now are
        mostly a removed seed's followers at its removal (follower sets' Jaccard at
        least :data:`DEFAULT_SUCCESSOR_JACCARD`, the seed with at least
        :data:`DEFAULT_SUCCESSOR_FOLLOWERS` of them) is the seed's successor, a
        re-created account, and counts as a seed. The history itself spreads no risk
        (see the Notes).
    interactions : sparse matrix, shape (n_users, n_items), optional, keyword-only
        The model's user-item interaction matrix: risk spreads along co-engagement
        (:func:`guardrails.expand.coengagement_risk`: accounts followed by the same
        followers as flagged accounts), and every user gets a stored risk (the share of
        their interactions on flagged neighbourhoods) for the circuit breakers.
    account_terms : sparse matrix, shape (n_items, n_terms), optional, keyword-only
        Terms (hashtags, link domains) each account uses; with ``seed_terms``.
    seed_terms : array-like of int, optional, keyword-only
        Flagged terms (columns of ``account_terms``). Accounts using them become soft
        seeds of weight :data:`DEFAULT_TERM_WEIGHT` times their term risk
        (:func:`guardrails.expand.term_risk`) for the graph and co-engagement
        propagation; this is what survives when labelled accounts are banned and come
        back under new ids. An account is never dropped for its own terms alone.
    risk : array-like of float, shape (n_items,), optional, keyword-only
        Precomputed propagated risk, instead of propagation from seeds and terms.
    viewer_risk : array-like of float, shape (n_users,), optional, keyword-only
        Precomputed stored viewer risk on the breaker's scale (share of a viewer's
        interactions on flagged neighbourhoods).
    minors : array-like of bool or int, shape (n_items,), optional, keyword-only
        Candidates that are minors' accounts (a vulnerable cohort, from the platform's
        age signals). They are never suggested to a viewer with an interaction on a
        dropped account (call or stored) or two on risky ones (stored), never to a
        tripped viewer or on a risky profile; they are not dropped for their own neighbourhood risk (buyers following
        them is what makes it high: they are the network's targets, not its members).
    minor_viewers : array-like of bool or int, shape (n_users,), optional, keyword-only
        Viewers who are minors: they never get candidates at or above the demotion
        floor (the flagged band), and new viewers (unknown ids) are treated the same.
        They are exempt from the minors' tie rule (``minor_ties``).
    item_factors : array-like of float, shape (n_items, n_factors), optional, keyword-only
        The model's item factors (for implicit's ALS or BPR: ``model.item_factors``).
        Every candidate gets a *neighbourhood risk*, the mean risk of its ten nearest
        candidates by cosine (:data:`DEFAULT_NEIGHBOURS`): the model places accounts the
        same users engage with side by side, so a network account's neighbours are
        network accounts even when its own follows are camouflaged by ordinary ones.
    item_similarity : sparse matrix, shape (n_items, n_items), optional, keyword-only
        Instead of ``item_factors``, an item-item model's similarity (for implicit's
        Cosine or BM25 recommenders: ``model.similarity``): neighbours are the largest
        entries of each row. Without either, there is no neighbourhood risk.
    viewer_cohorts, candidate_cohorts, cohort_matrix, cohort_labels : optional
        An extra :class:`~guardrails.filters.CohortRule`.
    label_categories : sequence of str, keyword-only
        With ``snapshot_labels=True``, categories that :class:`BlockLabeled` drops,
        reading the Guard's snapshot (failing closed for child-safety categories).
    strictness : {"strict", "balanced"}, keyword-only
        The collateral cap of neighbourhood suppression (at most 10 % or 5 % of the
        catalogue dropped) and the demotion weight (0.5 or 0.25).
    discovery_surfaces : sequence of str, optional, keyword-only
        Surfaces where the share cap applies (default: all).
    minor_ties : bool, keyword-only
        With ``minors`` and a follow graph (``graph``, or square ``interactions``: users
        and candidates in one id space), add the minors' tie rule
        (:class:`~guardrails.filters.RequireTie`, named ``minors_need_tie``): a minor's
        account reaches a viewer who is not a known minor only when the viewer follows
        it or follows an account it follows that is not a hub (followed by more accounts
        than 99 % of accounts); otherwise it is demoted below every other candidate.
        ``False`` leaves the rule out.
    minor_attention : bool, keyword-only
        With ``minors`` and a follow graph between candidates, accounts whose followers
        are adults following unrelated minors far more often than the platform's rate
        (the *attention-to-minors context*, below), and accounts among them in the
        model's space, are risky viewing contexts. ``False`` leaves the signal out.
    minor_ties_through_minors : bool or "anchored", keyword-only
        Whether a minor's own account ties an adult to the minors it follows, in the tie
        rule and in the attention to minors (:data:`DEFAULT_MINOR_TIE_THROUGH_MINORS`).
        ``False``: following one child is no tie to that child's friends (fewer buyers
        tied to children; parents and relatives tied only through their own child lose
        the child's friends). ``"anchored"``: only an adult tied to that child through
        accounts outside the minors (a shared contact) is tied to the child's friends
        through it.
    strip_context : bool, keyword-only
        Leave a risky viewed profile (``similar_items``' item, ``similar_users``'
        queried account) out of its own list's query
        (:class:`~guardrails.filters.ContextRisk` ``strip_context``): its list is the
        low-risk pool ranked by the Guard's ``backfill`` (best eligible first) or,
        without one, for the model's typical user, instead of by similarity to it,
        where the network's camouflaged members lead the pool. An item-item model
        reaches nothing from an empty query: its list is empty without a backfill. Give
        every Guard of this policy a backfill (for example follower counts): ranked for
        the typical user by cosine, the list goes to barely-followed accounts, where
        camouflaged network accounts sit (docs/audit.md). ``False`` ranks the pool by
        similarity to the profile.
    audience_context : bool, keyword-only
        Mark as risky viewing contexts the accounts whose followers are risky contexts
        at least :data:`DEFAULT_AUDIENCE_LIFT` times as often as the platform's accounts
        are, beyond chance (with a follow graph between candidates; see the Notes).
    drop_corroboration : bool, keyword-only
        With ``item_factors`` or ``item_similarity``: drop an account at the drop line
        only when the model's space agrees (its neighbourhood risk is at least the
        demotion line); otherwise demote it (see the Notes). ``False`` drops every
        account at the line.
    name : str, keyword-only

    Returns
    -------
    Policy
        In order: labels (if asked), neighbourhood suppression, graded risk demotion of
        the band below it, the viewer circuit breaker, the viewing context, the
        minors' protection breaker, new-account rule, tie rule and cohort rule (with
        ``minors`` / ``minor_viewers``), a risky-share cap, and the extra cohort rule
        (if given).

    Notes
    -----
    Propagated risk (personalised PageRank, :mod:`guardrails.expand`) has a background
    level that grows with the amount of seed evidence, so the thresholds are *lifts*
    over the catalogue's typical (median) risk ``b``; they mean the same on a platform
    the policy has never seen, with no tuning:

    - drop: ``risk >= max(0.02, 6 * b)`` (:data:`DEFAULT_DROP_LIFT`): a walk from the
      account meets flagged accounts six times as often as a walk from a typical one;
      raised if needed so that at most 10 % (``"balanced"``: 5 %) of the catalogue is
      dropped (a collateral cap); seeds are always dropped. With ``item_factors`` /
      ``item_similarity`` (``drop_corroboration=True``) a drop takes two signals: an
      account at the line whose neighbourhood risk (below) is under the demotion line
      ``2 * b``, the test that keeps candidates out of the low-risk pool, is demoted
      instead (graded by its own risk, as in the band below). The graph puts ordinary
      accounts next to a small network through noise and camouflage follows, while the
      model places them among the ordinary accounts their followers also follow: on 19
      tuning platforms x 3 models this spared 30 % of the ordinary accounts the line
      dropped (ordinary adults' accounts suppressed at most 0.99 % instead of 1.54 %)
      and changed no walk's exposure. Such an account is still at the line for the
      breakers and the viewing context (its profile suggests only the pool);
    - demote: ``2 * b <= risk < drop`` (:data:`DEFAULT_DEMOTE_LIFT`) by
      ``0.5 * sqrt(risk)`` score units: demoted, not dropped, because this band is
      mostly ordinary accounts near camouflage follows;
    - circuit breaker: a viewer with at least 30 % (:data:`DEFAULT_TRIP`) of their
      interactions (in the call, or stored from ``interactions``) on dropped candidates
      is tripped and gets only the low-risk pool (``risk <= b``, the less risky half;
      seeds, minors and, with ``item_factors`` / ``item_similarity``, candidates whose
      neighbourhood risk is in the band excluded); their risky interactions are left
      out of the query.
      For ``similar_items`` (and ``similar_users``) the Guard passes the viewed (queried)
      account as the viewer's context (``ViewerBatch.context_items``, which the breaker
      reads), so the profile of a dropped account suggests only the pool, whoever views
      it (a new account gives the breaker nothing else to read);
    - viewing context (:class:`~guardrails.filters.ContextRisk`), on the larger of a
      candidate's own and its neighbourhood risk (with ``account_terms`` /
      ``seed_terms``, an account that uses a flagged term itself, or has at least
      :data:`DEFAULT_TERM_NEIGHBOURS` of its nearest accounts doing so, more when the
      platform's own rate of use makes that likely by chance, counts as at the
      demotion floor: its profile and a new follow of it are risky contexts, but it is
      not dropped or demoted for its terms): a viewed profile (``similar_items``;
      for ``similar_users`` the queried account) in the demotion band or above
      (``>= 2 * b``), or a new account's first follows there (ids beyond the rows of
      ``interactions``, at most :data:`DEFAULT_NEW_VIEWER` follows, at least
      :data:`DEFAULT_NEW_VIEWER_SHARE` of them there), get only the
      low-risk pool, which excludes the band: an unflagged but risky profile suggests
      neither its neighbourhood nor itself. A new account's follows in the band are
      also left out of its query whatever their number, so it is not steered back to
      them once it stops counting as new. Established viewers are left to the
      share-based breaker, so their recommendations are unchanged; ordinary viewers of
      a band profile see pool accounts in its "suggested accounts";
    - audience (with a follow graph between candidates, ``audience_context=True``): an
      account whose followers are such risky contexts at least six times as often as the
      platform's accounts are (:data:`DEFAULT_AUDIENCE_LIFT`), at least two of them and
      beyond what a binomial draw at that rate reaches with probability 1 %, is a risky
      context too (the test repeated with the accounts it marks counted, until it marks
      no new one), and stays out of the pool; never dropped or demoted for it. The
      sellers of a sub-network that no seed, term or neighbourhood reaches are followed
      by its buyers, some of whom are risky contexts;
    - the viewed profile itself (``similar_items``' item, ``similar_users``' queried
      account) is never in its own list, whatever its risk (reason
      ``"viewed_profile"``): a "similar accounts" list does not show the profile it sits
      on, so an account the policy cannot clear never appears in its own suggestions
      (implicit's ``similar_items`` puts the item itself first; a Guard without a
      policy keeps that);
    - minors (``minors=``): a second breaker, ``protect_minors``, trips on a single
      interaction (in the call, or stored from ``interactions``) on a dropped
      candidate, or (stored) on two follows (:data:`DEFAULT_MINOR_BAND_FOLLOWS`) of
      accounts whose own or neighbourhood risk is ``>= 3 * b``
      (:data:`DEFAULT_MINOR_BAND_LIFT`), or (stored) on a viewer who is not a known
      minor (``minor_viewers``), already follows a minor's account
      (:data:`DEFAULT_MINOR_FOLLOWS`) and follows one flagged-term account (one that
      uses a flagged term or sits among accounts that do; without terms, one at
      ``>= 3 * b``), or (stored, when ``interactions`` is square: users and
      candidates in one id space) on an adult whose own account's own or
      neighbourhood risk is at the drop line (a buyer camouflaged by ordinary follows),
      and then drops minors' accounts; minors' accounts carry no risk
      of their own (it comes from buyers following them), so ordinary viewers keep
      seeing them; ``minor_viewers=`` adds a ``CohortRule`` that keeps the whole
      band at or above ``2 * b`` away from minors and from viewers the policy does not
      know (new accounts might be minors);
    - minors and new accounts (``minors=`` with ``interactions`` or ``viewer_risk``):
      a viewer beyond their rows (a new account) that has followed a risky viewing
      context (as for ``ContextRisk``, at ``>= 2 * b``) gets neither minors' accounts
      nor risky contexts, however many accounts it follows after
      (``protect_minors_new_accounts``, a protected
      :class:`~guardrails.filters.ContextRisk`). The viewing context serves such an
      account the pool only for its first follows; past them, test accounts that had
      followed one seller and then the pool's suggestions were served minors' accounts
      (up to 60 % of a slate on a tuning platform) through the youth community's popular
      accounts;
    - attention to minors (``minors=`` with a follow graph, ``minor_attention=True``): an
      adult (not a minor, not a known minor viewer) who follows at least two minors'
      accounts with none of whom he shares a non-hub contact shows untied attention
      (:data:`DEFAULT_ATTENTION_MINORS`); an account whose followers are such adults at
      least four times as often as the platform's rate, beyond what a binomial draw at
      that rate reaches with probability ``1 / n_items``, and whose followers are at most
      10 % minors, is marked (:data:`DEFAULT_ATTENTION_LIFT`,
      :data:`DEFAULT_ATTENTION_MINOR_SHARE`), and so is an account with more marked
      accounts among its nearest accounts in the model's space than the platform's rate
      makes likely (as for flagged terms). Marked accounts are treated like flagged-term
      contexts: their profile and a new follow of them get the low-risk pool, they stay
      out of the pool, and following one with a minor's account trips the minors'
      breaker; they are never dropped or demoted for it. No seed and no term is needed:
      it is what a network that targets children looks like from its audience;
    - minors' tie rule (``minors=`` with a follow graph, ``minor_ties=True``): a minor's
      account reaches a viewer who is not a known minor only when the viewer follows it
      or follows one account it follows that is not a hub (:class:`RequireTie`,
      :data:`DEFAULT_MINOR_TIE_SHARED`, :data:`DEFAULT_MINOR_TIE_HUB`); otherwise it is
      demoted below every other candidate (:data:`DEFAULT_MINOR_TIE_WEIGHT`). It needs
      no sign of risk: buyers no signal reaches get the children their co-buyers follow
      from the model, and share no contact with them;
    - risky share cap: at most 10 % of a slate from high-risk candidates (``>= 4 * b``).

    The minors' filters (``protect_minors``, ``protect_minors_new_accounts``,
    ``minors_need_tie``, ``minor_viewers``) are
    ``protected`` child-safety rules, like label filters on child-safety categories: a
    :class:`~guardrails.Holdback` naming them or ``failure="fail_open"`` is refused, and
    a failure to read their signals raises
    :class:`~guardrails.exceptions.FailClosedError`.

    Raises
    ------
    ValidationError
        When there is neither risk nor seeds (or flagged terms) with a graph and/or
        interactions.
    """
    # The length of this function is its docstring (what the policy does, filter by
    # filter); the work is in the helpers below.
    where = "default_policy"
    strictness = check_choice(strictness, "strictness", where, ("strict", "balanced"))
    covered = None
    if seed_history is not None:
        seeds, covered = _with_successors(seeds, seed_history, graph, where)
    risk = _input_risk(risk, seeds, graph, interactions, account_terms, seed_terms, where, covered)
    n = risk.shape[0]
    if n_items is not None and n_items != n:
        raise fail("n_items", where, f"equal to the length of the risk ({n})", n_items)
    seed_arg = None if seeds is None else seed_mask(seeds, n, "seeds", where)
    minor_mask = None if minors is None else seed_mask(minors, n, "minors", where)
    if minor_mask is not None and minor_mask.any():
        # Minors' accounts are the network's targets: protected by viewer rules below,
        # not dropped or demoted for the risk that buyers' follows give them.
        risk = np.where(minor_mask & ~(seed_arg if seed_arg is not None else False), 0.0, risk)
        risk = risk.astype(np.float32)
    base, drop_t, demote_t, pool_t, high_t = _thresholds(risk, seed_arg, _DROP_CAP[strictness])
    nbrs, near = _neighbourhood(risk, minor_mask, item_factors, item_similarity, where)
    # Accounts that use a flagged term themselves, and accounts whose nearest accounts in
    # the model's space do so far more often than the platform's own rate: risky contexts
    # that need no seed nearby.
    term_context = flagged_term_context(account_terms, seed_terms, minor_mask, nbrs, n, where)
    ui = None if interactions is None else check_csr(interactions, "interactions", where)
    follow_graph = tie_graph(graph, ui, n, where)
    # Accounts whose audience is made of adults following unrelated minors, and their
    # neighbourhood in the model's space: risky contexts that need no seed and no term.
    through_minors = check_through_targets(
        minor_ties_through_minors, "minor_ties_through_minors", where
    )
    attention = None
    if check_bool(minor_attention, "minor_attention", where):
        attention = attention_context(
            minor_mask, minor_viewers, follow_graph, ui, nbrs, through_minors=through_minors
        )
    risky = risk >= drop_t
    if seed_arg is not None:
        risky |= seed_arg
    viewer_risk = _viewer_risk(viewer_risk, ui, risky, where)
    breaker_risk = np.where(risky, np.float32(1.0), risk).astype(np.float32)
    context_risk = _context_risk(breaker_risk, near, (term_context, attention), demote_t)
    audience = None
    if check_bool(audience_context, "audience_context", where):
        young = minor_accounts(minor_mask, minor_viewers, ui, n)
        audience = _audience_context(context_risk, demote_t, young, follow_graph)
        context_risk = _context_risk(context_risk, None, (audience,), demote_t)
    pool = risk <= pool_t
    if near is not None:
        pool &= near < demote_t
    # Flagged-term contexts stay out of the pool: a tripped viewer is never served them.
    for excluded in (seed_arg, minor_mask, term_context, attention, audience):
        if excluded is not None:
            pool &= ~excluded
    filters: list = []
    if snapshot_labels:
        filters.append(BlockLabeled(tuple(label_categories), name="block_labeled"))
    drop_risk = risk
    if check_bool(drop_corroboration, "drop_corroboration", where) and near is not None:
        drop_risk = _corroborated(risk, near, drop_t, demote_t, seed_arg)
    filters.append(SuppressNeighborhood(drop_risk, threshold=drop_t, seeds=seed_arg))
    demote_weight = {"strict": 0.5, "balanced": 0.25}[strictness]
    filters.append(DemoteRisk(risk, weight=demote_weight, curve="sqrt", floor=demote_t))
    filters.append(
        ViewerCircuitBreaker(
            breaker_risk,
            item_threshold=drop_t,
            trip=DEFAULT_TRIP,
            pool=pool,
            viewer_risk=viewer_risk,
        )
    )
    strip = check_bool(strip_context, "strip_context", where)
    filters.append(_context_filter(context_risk, demote_t, pool, ui, viewer_risk, strip))
    filters.extend(
        minor_filters(
            minor_mask,
            minor_viewers,
            breaker_risk=breaker_risk,
            context_risk=context_risk,
            thresholds=(base, drop_t, demote_t),
            risk=risk,
            seed_arg=seed_arg,
            viewer_risk=viewer_risk,
            ui=ui,
            term_context=term_context,
            attention=attention,
            tie_graph=follow_graph if check_bool(minor_ties, "minor_ties", where) else None,
            tie_through_minors=through_minors,
            tie_weight=tie_weight(item_similarity, where),
        )
    )
    filters.append(
        ShareCap(
            max_share=0.1,
            risk=risk,
            threshold=high_t,
            surfaces=discovery_surfaces,
            name="share_cap_risky",
        )
    )
    if cohort_matrix is not None:
        vl, cl = cohort_labels if cohort_labels is not None else (None, None)
        filters.append(
            CohortRule(
                viewer_cohorts,
                candidate_cohorts,
                cohort_matrix,
                viewer_labels=vl,
                candidate_labels=cl,
            )
        )
    return Policy(filters, name=name)


def _corroborated(risk, near, drop_t: float, demote_t: float, seed_arg) -> np.ndarray:
    """The risk the drop reads: an account at the drop line whose neighbourhood risk in
    the model's space is under the demotion line (the model does not place it among
    risky accounts) is held just under the drop line, so it is demoted, not dropped.
    Seeds keep their risk (they are dropped whatever it is)."""
    uncorroborated = (risk >= drop_t) & (near < demote_t)
    if seed_arg is not None:
        uncorroborated &= ~seed_arg
    if not uncorroborated.any():
        return risk
    below = np.nextafter(np.float32(drop_t), np.float32(0.0))
    return np.where(uncorroborated, np.minimum(risk, below), risk).astype(np.float32)


def _neighbourhood(risk, minor_mask, item_factors, item_similarity, where: str):
    """``(nbrs, near)``: each candidate's DEFAULT_NEIGHBOURS nearest candidates in the
    model's space and their mean risk (minors' accounts: 0), or ``(None, None)`` without
    ``item_factors`` or ``item_similarity``."""
    if item_factors is None and item_similarity is None:
        return None, None
    n = risk.shape[0]
    nbrs = nearest_items(
        item_factors=item_factors,
        item_similarity=item_similarity,
        k=DEFAULT_NEIGHBOURS,
        where=where,
    )
    if nbrs.shape[0] != n:
        raise fail(
            "item_factors" if item_factors is not None else "item_similarity",
            where,
            f"one row per candidate ({n})",
            f"{nbrs.shape[0]} rows",
            describe=False,
        )
    near = neighbour_risk(risk, nbrs)
    if minor_mask is not None:
        near = np.where(minor_mask, 0.0, near).astype(np.float32)
    return nbrs, near


def _viewer_risk(viewer_risk, ui, risky: np.ndarray, where: str):
    """The breakers' stored viewer risk: ``viewer_risk`` checked, or without it the share
    of each user's ``interactions`` on ``risky`` candidates (``None`` without either)."""
    if viewer_risk is not None:
        return check_vector(viewer_risk, "viewer_risk", where, low=0.0, high=1.0)
    if ui is not None and ui.shape[1] == risky.shape[0]:
        return viewer_share(ui, risky)[0].astype(np.float32)
    return None


def _context_risk(breaker_risk, near, marks, demote_t: float) -> np.ndarray:
    """The risk of an account as a viewing context: the larger of its own (breaker) and its
    neighbourhood risk, and at least the demotion floor where one of ``marks`` (flagged
    terms, attention to minors) marks it."""
    context_risk = breaker_risk if near is None else np.maximum(breaker_risk, near)
    for marked in marks:
        if marked is None:
            continue
        # A risky context (a profile's suggestions, a new account's first follow), never
        # a drop: an account's own terms, or its audience, are evidence about it, not
        # about its neighbours.
        context_risk = np.where(
            marked, np.maximum(context_risk, np.float32(demote_t)), context_risk
        ).astype(np.float32)
    return context_risk


def _audience_context(context_risk, demote_t: float, young, follow_graph):
    """Accounts whose followers are risky viewing contexts far beyond chance
    (:func:`~guardrails.policy._attention.audience_marks` at DEFAULT_AUDIENCE_LIFT and
    _AUDIENCE_P, repeated with the accounts it marks counted), not already one
    themselves; ``None`` without a follow graph between candidates. ``young`` (minors'
    accounts, known minor viewers' own accounts) are never marked, nor counted as risky
    contexts."""
    if follow_graph is None:
        return None
    first = context_risk >= max(demote_t, 1e-6)
    # Repeated: an account marked for its audience counts in its followees' audiences (a
    # buyer marked for the buyers following him marks the seller he follows).
    out = audience_marks(
        follow_graph,
        first,
        lift=DEFAULT_AUDIENCE_LIFT,
        p_tail=_AUDIENCE_P,
        exempt=young,
        repeat=True,
    )
    return out & ~first


def _context_filter(
    context_risk, demote_t: float, pool, ui, viewer_risk, strip_context: bool = True
) -> ContextRisk:
    """The viewing context: a viewed profile (similar_items, similar_users) or a new
    account's first follows in the flagged band get the low-risk pool only, so a risky
    but unflagged profile suggests neither its neighbourhood nor itself. Viewers beyond
    the rows of ``interactions`` (or of the stored risk) are new. With ``strip_context``
    a risky profile's list is ranked without it."""
    known_viewers = None
    if ui is not None:
        known_viewers = int(ui.shape[0])
    elif viewer_risk is not None:
        known_viewers = int(viewer_risk.shape[0])
    return ContextRisk(
        context_risk,
        threshold=max(demote_t, 1e-6),
        pool=pool,
        new_viewer_interactions=DEFAULT_NEW_VIEWER,
        new_viewer_share=DEFAULT_NEW_VIEWER_SHARE,
        known_viewers=known_viewers,
        exclude_viewed=True,
        strip_context=strip_context,
    )


def _with_successors(seeds, seed_history, graph, where: str):
    """``(seeds, covered)``: the seeds with their successors added (bool mask), and the
    seeds searched for one (bool mask: enough followers at their removal in
    ``seed_history``).

    A successor is an account whose followers in ``graph`` are mostly the followers a
    seed had when it was removed (those still in the graph): Jaccard of the two
    follower sets at least
    :data:`DEFAULT_SUCCESSOR_JACCARD`, for a seed with at least
    :data:`DEFAULT_SUCCESSOR_FOLLOWERS` followers then. The followers of a banned
    account look for its new id; ordinary accounts share only part of a niche
    account's audience."""
    if graph is None or seeds is None:
        raise fail(
            "seed_history",
            where,
            "given with seeds and a graph",
            "no seeds or no graph",
            describe=False,
        )
    g = check_csr(graph, "graph", where)
    n = g.shape[0]
    if g.shape[1] != n:
        raise fail("graph", where, "a square sparse matrix (n, n)", g)
    hist = check_csr(seed_history, "seed_history", where, shape=(n, n))
    s = seed_mask(seeds, n, "seeds", where)
    idx = np.flatnonzero(s)
    now = sp.csr_matrix(g != 0, dtype=np.float32)
    # Followers at the removal, one row per seed (stored zeros are no follow), of those
    # still in the graph: a follower removed since (a co-banned seller) follows no one.
    alive = _with_edges(now, n, as_rows=True)
    past = sp.csr_matrix((hist[:, idx].T != 0).multiply(alive[None, :]), dtype=np.float32)
    past.eliminate_zeros()
    size = np.diff(past.indptr)
    covered = np.zeros(n, dtype=bool)
    keep = size >= DEFAULT_SUCCESSOR_FOLLOWERS
    # Searched for a successor: not isolated for IsolatedSeedWarning.
    covered[idx[keep]] = True
    if not keep.any():
        return s, covered
    past, size = past[keep], size[keep]
    overlap = (past @ now).tocoo()
    indeg = np.asarray(now.sum(axis=0)).ravel()
    union = size[overlap.row] + indeg[overlap.col] - overlap.data
    jaccard = overlap.data / np.maximum(union, 1.0)
    successors = np.zeros(n, dtype=bool)
    successors[overlap.col[jaccard >= DEFAULT_SUCCESSOR_JACCARD]] = True
    return s | successors, covered


def _input_risk(risk, seeds, graph, interactions, account_terms, seed_terms, where, covered=None):
    """The given risk, checked, or the risk computed from seeds and flagged terms."""
    if (account_terms is None) != (seed_terms is None):
        raise fail(
            "seed_terms",
            where,
            "given together with account_terms",
            "only one of them",
            describe=False,
        )
    has_terms = account_terms is not None
    if risk is not None:
        return check_vector(risk, "risk", where, low=0.0, high=1.0)
    if (seeds is None and not has_terms) or (graph is None and interactions is None):
        raise fail(
            "risk",
            where,
            "given, or seeds (or account_terms with seed_terms) given with a graph "
            "and/or interactions",
            None,
        )
    return _default_risk(seeds, graph, interactions, account_terms, seed_terms, where, covered)


def _thresholds(
    risk: np.ndarray, seed_arg, q_cap: float
) -> tuple[float, float, float, float, float]:
    """The catalogue's typical risk ``b`` (the median over the non-seed candidates) and the
    drop, demote, low-risk-pool and high-risk thresholds: lifts over ``b``."""
    rest = risk if seed_arg is None or seed_arg.all() else risk[~seed_arg]
    top = float(np.quantile(rest, 1.0 - q_cap)) if rest.size else 1.0
    base = float(np.median(rest)) if rest.size else 0.0
    drop_t = min(1.0, max(DEFAULT_DROP_FLOOR, DEFAULT_DROP_LIFT * base, top + 1e-7))
    demote_t = min(drop_t, max(DEFAULT_DEMOTE_LIFT * base, 1e-6))
    pool_t = min(demote_t, DEFAULT_POOL_LIFT * base)
    high_t = min(drop_t, max(DEFAULT_HIGH_LIFT * base, demote_t))
    return base, drop_t, demote_t, pool_t, high_t


def _with_edges(m: sp.csr_matrix, n: int, *, as_rows: bool) -> np.ndarray:
    """Accounts (bool, shape (n,)) with a non-zero entry in ``m`` as a column (followed,
    interacted with) or, with ``as_rows``, as a row too (following). Stored zeros are no
    edge (an account's edges zeroed in place)."""
    nz = m.data != 0
    out = np.bincount(m.indices[nz], minlength=n)[:n] > 0
    if as_rows:
        owner = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        out |= np.bincount(owner[nz], minlength=n)[:n] > 0
    return out


def _warn_isolated_seeds(s: np.ndarray, graph, interactions, where: str, covered=None) -> None:
    """Warn (:class:`~guardrails.exceptions.IsolatedSeedWarning`) about seeds with no
    follow in ``graph`` either way, no interaction in ``interactions`` and no follows in
    ``seed_history`` (``covered``): no risk spreads from them, and nothing finds their
    successors, so they protect nothing beyond their own ids."""
    if not s.any():
        return
    touched = np.zeros(s.size, dtype=bool) if covered is None else covered.copy()
    if graph is not None:
        touched |= _with_edges(graph, s.size, as_rows=True)
    if interactions is not None:
        touched |= _with_edges(interactions, s.size, as_rows=False)
    alone = s & ~touched
    if alone.any():
        k, m = int(alone.sum()), int(s.sum())
        warnings.warn(
            IsolatedSeedWarning(
                f"{where}: {k} of {m} seeds have no follows in 'graph' and no "
                "interactions, so no risk spreads from them and they protect nothing "
                "beyond their own ids (banned or deleted accounts whose edges were "
                "removed?). Pass their follows at the removal as 'seed_history' to find "
                "the accounts that took their place, for example seeds "
                f"{np.flatnonzero(alone)[:5].tolist()}."
            ),
            stacklevel=5,
        )


def _default_risk(seeds, graph, interactions, account_terms, seed_terms, where, covered=None):
    """Item risk from labelled seeds and flagged terms over the graph and/or interactions.

    Seeds weigh 1; accounts using flagged terms are soft seeds of weight
    ``DEFAULT_TERM_WEIGHT * term_risk`` (direct users only: term risk at least
    ``_TERM_DIRECT``). Both spread over the follow graph (both ways) and over
    co-engagement; the sources are combined with ``max``. A soft seed's own weight is
    then taken off its risk, so an account is never suppressed for its own terms alone:
    its risk is what its neighbourhood says.
    """
    n = None
    if graph is not None:
        graph = check_csr(graph, "graph", where)
        if graph.shape[0] != graph.shape[1]:
            raise fail("graph", where, "a square sparse matrix (n, n)", graph)
        n = graph.shape[0]
    if interactions is not None:
        interactions = check_csr(interactions, "interactions", where)
        if n is not None and interactions.shape[1] != n:
            raise fail(
                "interactions",
                where,
                f"a matrix with {n} columns (one per candidate)",
                interactions,
            )
        n = interactions.shape[1]
    s = np.zeros(n, dtype=bool) if seeds is None else seed_mask(seeds, n, "seeds", where)
    _warn_isolated_seeds(s, graph, interactions, where, covered)
    w = s.astype(np.float32)
    soft = np.zeros(n, dtype=np.float32)
    if account_terms is not None:
        at, st = checked_terms(account_terms, seed_terms, n, where)
        if st.size:
            acc, _ = term_risk(at, seed_terms=st)
            acc = np.asarray(acc, dtype=np.float32)
            soft = np.where(acc >= _TERM_DIRECT, DEFAULT_TERM_WEIGHT * acc, 0.0)
            soft = np.where(s, 0.0, soft).astype(np.float32)
            w = np.maximum(w, soft)
    if not (w > 0).any():
        return np.zeros(n, dtype=np.float32)
    idx = np.flatnonzero(w > 0)
    parts = []
    if graph is not None:
        parts.append(
            np.asarray(
                propagate(abs(graph), idx, weights=w[idx], direction="both", method="ppr"),
                np.float32,
            )
        )
    if interactions is not None:
        item_risk, _ = coengagement_risk(abs(interactions), idx, weights=w[idx])
        parts.append(np.asarray(item_risk, dtype=np.float32))
    risk = np.maximum.reduce(parts) if len(parts) > 1 else parts[0]
    risk = np.clip(risk - soft, 0.0, 1.0).astype(np.float32)
    risk[s] = 1.0
    return risk
