"""The minors' rules of ``default_policy`` and the defaults they are tuned with.

Minors' accounts are the network's targets, not its members: they are protected by viewer
rules (a breaker that trips on any sign of the network, the tie rule, the minor viewers'
cohort rule) rather than dropped or demoted for the risk that buyers' follows give them.
Each constant says where its value comes from.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_csr, fail
from ..filters._risk import seed_mask
from ..filters.context import ContextRisk
from ..filters.safety import CohortRule, ViewerCircuitBreaker
from ..filters.ties import RequireTie, follower_counts
from ._attention import attention_marks
from ._terms import term_neighbourhood

__all__ = [
    "DEFAULT_ATTENTION_LIFT",
    "DEFAULT_ATTENTION_MINORS",
    "DEFAULT_ATTENTION_MINOR_SHARE",
    "DEFAULT_MINOR_BAND_FOLLOWS",
    "DEFAULT_MINOR_BAND_LIFT",
    "DEFAULT_MINOR_FOLLOWS",
    "DEFAULT_MINOR_TIE_ACTION",
    "DEFAULT_MINOR_TIE_HUB",
    "DEFAULT_MINOR_TIE_SHARED",
    "DEFAULT_MINOR_TIE_THROUGH",
    "DEFAULT_MINOR_TIE_THROUGH_MINORS",
    "DEFAULT_MINOR_TIE_WEIGHT",
    "attention_context",
    "minor_accounts",
    "minor_filters",
    "tie_graph",
    "tie_weight",
]

#: The minors' breaker also trips (stored, from ``interactions``) on this many follows of
#: accounts whose own or neighbourhood risk is at DEFAULT_MINOR_BAND_LIFT or above. On
#: the family's tuning platforms this rule with "one follow of a dropped account" trips
#: 98-100 % of buyers and 0.8-7 % of ordinary viewers; one follow at four times trips
#: 77-100 % and 3.5-12 %; one follow in the demotion band trips up to 87 % of ordinary
#: viewers.
DEFAULT_MINOR_BAND_FOLLOWS = 2
#: See DEFAULT_MINOR_BAND_FOLLOWS.
DEFAULT_MINOR_BAND_LIFT = 3.0
#: The minors' breaker also trips (stored) on a viewer who is not a known minor, follows
#: at least this many minors' accounts, and follows at least one flagged-term account
#: (one that uses a flagged term, or sits among accounts that do; without terms, one at
#: DEFAULT_MINOR_BAND_LIFT or above). Buyers of a sub-network that no seed reaches follow
#: minors and sellers that are only moderately risky but tagged. On 59 rows of the
#: family's tuning platforms (the hardest included) the same rule with "a follow in the
#: demotion band" took the rows where some buyer still got minors' accounts from 23 to 9
#: (ordinary viewers tripped: median 3.9 % to 6.8 %; "two minors' accounts" alone left
#: 12) but tripped up to 87 % of a youth community's adults on a low-risk platform: the
#: flagged-term version is narrower (docs/audit.md).
DEFAULT_MINOR_FOLLOWS = 1
#: The minors' tie rule (:class:`~guardrails.filters.RequireTie`): a minor's account
#: reaches an adult viewer (anyone not in ``minor_viewers``) only when the viewer follows
#: it or follows at least this many non-hub accounts it follows (shared contacts: a
#: parent, a coach, a classmate's parent). Chosen on the eight hardest tuning platforms
#: (24 rows): one shared contact took the rows where a risky viewer got minors' accounts
#: from 7 to 0; the buyers who got them share no contact with those children, their
#: co-buyers do. Two would cost more of the youth community's own follows (the held-out
#: minors parents and family members follow share one contact with them more often than
#: two) for no safety gain there.
DEFAULT_MINOR_TIE_SHARED = 1
#: Which intermediaries tie a viewer to a minor: accounts the minor follows. "Accounts
#: that follow the minor" would count a buyer's co-buyer who follows a child as a tie:
#: on the same platforms it left about twice as many buyers' slates with minors' accounts
#: tied (256 of 300 with either direction, 122 with the minor's own follows, before
#: the other minors' rules).
DEFAULT_MINOR_TIE_THROUGH = "followees"
#: Whether a minor's account ties an adult to the minors it follows: only for an adult
#: tied to that minor through accounts outside the minors ("anchored": a parent, a coach
#: or a relative who shares a contact with the child reaches the child's friends; a
#: stranger who follows children reaches none of their friends through them). Chosen on
#: the follow graphs of the 18 tuning platforms: buyer-minor pairs tied went from
#: 2.1-36.3 % (True) to 0.4-6.5 %, the same as False, while the youth community's adults
#: kept more of their held-out minors' follows tied than with False (median 36 % against
#: 31 %, True 50 %; up to 76 % against 53 % on one platform). Side by side on those 54 rows every
#: safety value was the same (no miss either way) and recall kept moved by -1.5 to +4 points
#: (median x0.9942 -> x0.9944). On the 20 evaluation platforms it took the rows where
#: buyers got minors' accounts from 2 to 0 (ALS 50 % and item-item 10 % on the first
#: platform, a buyer following nine children) and recall kept's median from x0.9990 to
#: x0.9985 (no significant miss either way). On the audit's own platform the youth
#: adults reach children only through children, as with False: recall kept x0.982 ->
#: x0.980 (seed 0; 95 % interval [0.965, 0.993]). True and False stay available
#: (docs/policy.md).
DEFAULT_MINOR_TIE_THROUGH_MINORS = "anchored"
#: Intermediaries followed by more accounts than this quantile of the follower counts
#: (the platform's hubs: celebrities) are no tie: without it most adults are "tied" to
#: most children through the celebrities both follow (89-100 % of minors' accounts
#: stayed tied for ordinary viewers on those platforms; 0.3 % with it).
DEFAULT_MINOR_TIE_HUB = 0.99
#: What happens to a minor's account an adult has no tie to: a demotion below every
#: other candidate, not a drop. A drop also reads as suppression of benign accounts in
#: the family audit (minors' accounts are benign, and an ordinary adult's full-length
#: slate loses nearly all of them: 1.4-3.0 % suppressed, 17 of 24 tuning rows over 1 %);
#: demoted, they stay reachable at the end of a long list and the top-N slates are the
#: same as with a drop whenever N other candidates are eligible.
DEFAULT_MINOR_TIE_ACTION = "demote"
#: The demotion, in score units: above any score of a factor model in the family (ALS and
#: BPR stay below 100); with ``item_similarity`` it is raised to twice the largest score
#: the item-item model can give (BM25 scores reached about 5,500 on a tuning platform).
#: Not larger: the kernel's exact rescoring breaks ties at float32 precision, and a
#: penalty of 1e6 made default_policy serve 34 viewers/s instead of about 1,200
#: (benchmarks/bench_minor_ties.py, 1,000 viewers).
DEFAULT_MINOR_TIE_WEIGHT = 1e3
#: An adult who follows at least this many minors' accounts with no tie to them (no
#: shared non-hub contact, as in the tie rule) shows *untied attention* to minors. On 14
#: tuning platforms (the eight hardest and six more) one such follow also counts noise
#: follows and relatives and, before the other conditions, marked 1.25 % of ordinary
#: accounts; two marked 1.03 %.
DEFAULT_ATTENTION_MINORS = 2
#: An account is a risky context when adults with untied attention to minors are at
#: least this many times as frequent among its followers as on the platform (and more
#: than a binomial draw at the platform's rate reaches with probability 1 / n_items,
#: and minors make up at most DEFAULT_ATTENTION_MINOR_SHARE of its followers). On the
#: same 14 tuning platforms (with the two other conditions) it marked 72 of 268 sellers
#: of sub-networks with no known seed (34 of 37, 11 of 11, 9 of 19 where many buyers
#: follow minors; none where few do) and 25 of 97,504 ordinary accounts; the binomial
#: condition at 1 % instead marked 600 ordinary accounts, most of them the youth
#: community's adults, whom relatives follow.
DEFAULT_ATTENTION_LIFT = 4.0
#: See DEFAULT_ATTENTION_LIFT: an account minors follow (over this share of its
#: followers) is part of their community (a coach, a parent), not an audience of them.
DEFAULT_ATTENTION_MINOR_SHARE = 0.1


def minor_filters(
    minor_mask,
    minor_viewers,
    *,
    breaker_risk,
    context_risk,
    thresholds: tuple[float, float, float],
    risk,
    seed_arg,
    viewer_risk,
    ui,
    term_context,
    attention=None,
    tie_graph=None,
    tie_weight: float = 1.0,
    tie_through_minors: bool | str = DEFAULT_MINOR_TIE_THROUGH_MINORS,
) -> list:
    """The filters that keep minors' accounts and minor viewers apart from the network.

    ``thresholds``: the typical risk, the drop and the demotion thresholds; ``ui``: the
    checked interactions (or ``None``); ``tie_graph``: the checked follow graph between
    candidates for the tie rule (or ``None``: no tie rule) and ``tie_weight`` its
    demotion."""
    base, drop_t, demote_t = thresholds
    out: list = []
    mv = None
    if minor_viewers is not None:
        mv = _checked_minor_viewers(
            minor_viewers, viewer_risk.shape[0] if viewer_risk is not None else None
        )
    if minor_mask is not None and minor_mask.any():
        # Any sign of the network and minors' accounts are never suggested: a second
        # breaker whose pool is everything but the minors, tripping on one interaction
        # (in the call, or stored) on a dropped candidate, or (stored) on
        # DEFAULT_MINOR_BAND_FOLLOWS accounts whose own or neighbourhood risk is at
        # DEFAULT_MINOR_BAND_LIFT or above: buyers of a sub-network the seeds barely
        # reach follow sellers that are risky but not dropped.
        risky = (breaker_risk >= drop_t).astype(np.float32)
        band_t = min(drop_t, max(DEFAULT_MINOR_BAND_LIFT * base, demote_t))
        band = (context_risk >= band_t).astype(np.float32)
        stored = None
        if ui is not None and ui.shape[1] == band.shape[0]:
            follows = abs(ui).astype(bool).astype(np.float32)
            adult = ~_viewer_mask(mv, follows.shape[0])
            # Known minor viewers are kept from the band by their own cohort rule; their
            # follows of the youth community's adults (at the band line where many
            # buyers follow children) would otherwise hide their friends from them.
            hit = ((follows @ risky) > 0) | (
                ((follows @ band) >= DEFAULT_MINOR_BAND_FOLLOWS) & adult
            )
            # A viewer who already follows minors' accounts and also an account in
            # the flagged band: buyers of a sub-network no seed reaches follow minors
            # and sellers that are only moderately risky.
            # Minors who follow each other are not this sign.
            flagged = term_context if term_context is not None else band > 0
            if attention is not None:
                flagged = flagged | attention
            flagged_band = flagged.astype(np.float32)
            follows_minors = (follows @ minor_mask.astype(np.float32)) >= DEFAULT_MINOR_FOLLOWS
            hit |= follows_minors & ((follows @ flagged_band) >= 1) & adult
            if ui.shape[0] == ui.shape[1]:
                # Users and candidates share one id space: a viewer whose own account is
                # at the drop line (own or neighbourhood risk) is a risky viewer, whatever
                # it follows (a buyer camouflaged by ordinary follows). On 10 tuning
                # platforms this line tripped 0-0.9 % more ordinary adults (the band
                # line, 3x: 0.1-5.2 %) for 0-0.4 % more buyers (3x: 0-2.1 %). Minors'
                # own risk comes from the buyers who follow them: it is not this sign.
                own = (context_risk >= drop_t) & ~minor_mask
                hit |= own & adult
            stored = hit.astype(np.float32)
        if stored is None and viewer_risk is not None:
            stored = (viewer_risk > 0).astype(np.float32)
        out.append(
            ViewerCircuitBreaker(
                breaker_risk,
                item_threshold=drop_t,
                trip=1e-6,
                pool=~minor_mask,
                viewer_risk=stored,
                strip_interactions=False,
                reason="minors_protected",
                name="protect_minors",
                protected=True,
            )
        )
        known = ui.shape[0] if ui is not None else None
        if known is None and viewer_risk is not None:
            known = viewer_risk.shape[0]
        if known is not None:
            out.append(_new_account_rule(minor_mask, context_risk, demote_t, int(known)))
        if tie_graph is not None:
            out.append(
                _minor_tie_rule(minor_mask, mv, tie_graph, ui, tie_weight, tie_through_minors)
            )
    if mv is not None:
        cand = np.where(risk >= demote_t, 0, -1).astype(np.int64)
        if seed_arg is not None:
            cand[seed_arg] = 0
        out.append(
            CohortRule(
                mv.astype(np.int64),
                cand,
                [["allow"], ["drop"]],
                viewer_labels=("adult", "minor"),
                candidate_labels=("flagged_band",),
                reason="minor_viewer_protected",
                name="minor_viewers",
                protected=True,
            )
        )
    return out


def _new_account_rule(minor_mask, context_risk, demote_t: float, known: int) -> ContextRisk:
    """A viewer the model does not know (an id from ``known`` on: a new account) that has
    followed a risky viewing context gets neither minors' accounts nor risky contexts,
    however many accounts it follows after.

    The viewing-context rule serves such an account only the low-risk pool, but only for
    its first follows: past them it is served as anyone, and nothing of the first risky
    follow is left (it is stripped from the query). On a tuning platform test accounts
    that followed one seller, then the pool's suggestions, then past ten follows the
    ordinary suggestions, were served slates of up to 60% minors' accounts: the pool's
    popular accounts tied them to the youth community. A known viewer's own follows are
    read by the stored rules instead (one band follow is too common among ordinary
    adults to trip them).
    """
    return ContextRisk(
        context_risk,
        threshold=max(demote_t, 1e-6),
        pool=~minor_mask,
        new_viewer_interactions=np.iinfo(np.int64).max,
        known_viewers=known,
        strip_interactions=False,
        reason="minors_protected",
        name="protect_minors_new_accounts",
        protected=True,
    )


def tie_graph(graph, ui, n: int, where: str):
    """The follow graph between candidates the minors' tie rule reads, checked: ``graph``,
    or without it square ``interactions`` (users and candidates in one id space); else
    ``None``."""
    if graph is not None:
        g = check_csr(graph, "graph", where)
        if g.shape != (n, n):
            raise fail("graph", where, f"a square sparse matrix ({n}, {n})", g)
        return g
    if ui is not None and ui.shape == (n, n):
        return ui
    return None


def tie_weight(item_similarity, where: str) -> float:
    """The tie rule's demotion: DEFAULT_MINOR_TIE_WEIGHT, or with an item-item model's
    similarity twice the largest score it can give (a candidate's score is a sum of its
    similarities to the viewer's follows, at most its column's sum), if that is more."""
    if item_similarity is None:
        return DEFAULT_MINOR_TIE_WEIGHT
    sim = abs(check_csr(item_similarity, "item_similarity", where))
    top = float(np.asarray(sim.sum(axis=0)).max(initial=0.0))
    return max(DEFAULT_MINOR_TIE_WEIGHT, 2.0 * top)


def _minor_tie_rule(
    minor_mask: np.ndarray, mv, tie_graph, ui, weight: float, through_minors: bool | str
) -> RequireTie:
    """Minors' accounts reach adults only through an existing tie (:class:`RequireTie`):
    the viewer follows the minor, or follows DEFAULT_MINOR_TIE_SHARED accounts the minor
    follows that are not hubs (followed by more accounts than the DEFAULT_MINOR_TIE_HUB
    quantile), a followed minor counting as one only as ``through_minors`` says
    (DEFAULT_MINOR_TIE_THROUGH_MINORS: where the viewer shares such an account with it)."""
    followers = follower_counts(tie_graph)
    hub = int(np.quantile(followers, DEFAULT_MINOR_TIE_HUB)) if followers.size else 0
    follows = ui if ui is not None and ui.shape[1] == tie_graph.shape[0] else None
    return RequireTie(
        minor_mask,
        graph=tie_graph,
        follows=follows,
        min_shared=DEFAULT_MINOR_TIE_SHARED,
        through=DEFAULT_MINOR_TIE_THROUGH,
        max_followers=hub,
        through_targets=through_minors,
        exempt_viewers=mv,
        action=DEFAULT_MINOR_TIE_ACTION,
        weight=weight,
        reason="minor_without_tie",
        name="minors_need_tie",
        protected=True,
    )


def attention_context(
    minor_mask,
    minor_viewers,
    follow_graph,
    ui,
    nbrs,
    *,
    through_minors: bool | str = DEFAULT_MINOR_TIE_THROUGH_MINORS,
) -> np.ndarray | None:
    """Accounts whose followers are adults following unrelated minors far beyond chance
    (:func:`~guardrails.policy._attention.attention_marks` with the tie rule's hub cap and
    DEFAULT_ATTENTION_* settings), and accounts with more of them among their nearest
    accounts in the model's space than the platform's rate makes likely
    (:func:`~._terms.term_neighbourhood`); ``None`` without minors or a follow graph between
    candidates. Minors' accounts are never marked."""
    if minor_mask is None or not minor_mask.any() or follow_graph is None:
        return None
    n = minor_mask.shape[0]
    exempt = _minor_viewer_accounts(minor_viewers, ui, n)
    marks = attention_marks(
        follow_graph,
        minor_mask,
        exempt=exempt,
        hub_quantile=DEFAULT_MINOR_TIE_HUB,
        min_untied=DEFAULT_ATTENTION_MINORS,
        lift=DEFAULT_ATTENTION_LIFT,
        minor_share=DEFAULT_ATTENTION_MINOR_SHARE,
        through_minors=through_minors,
    )
    if nbrs is not None and marks.any():
        marks = marks | term_neighbourhood(marks, nbrs)
    return marks & ~minor_mask


def minor_accounts(minor_mask, minor_viewers, ui, n: int) -> np.ndarray | None:
    """The candidates known to be minors' accounts: ``minor_mask``, and when ``ui`` is
    square (users and candidates in one id space) the known minor viewers' own accounts;
    ``None`` when neither is known."""
    viewers = _minor_viewer_accounts(minor_viewers, ui, n)
    if minor_mask is None:
        return viewers
    return minor_mask if viewers is None else minor_mask | viewers


def _minor_viewer_accounts(minor_viewers, ui, n: int) -> np.ndarray | None:
    """The known minor viewers as candidates (bool, shape (n,)) when ``ui`` is square:
    users and candidates share one id space, so minor viewers are accounts too."""
    if minor_viewers is None or ui is None or ui.shape != (n, n):
        return None
    return _viewer_mask(_checked_minor_viewers(minor_viewers, n), n)


def _checked_minor_viewers(minor_viewers, n_viewers: int | None) -> np.ndarray:
    """``minor_viewers`` as a bool mask over viewers, checked before any rule reads it: a
    1-d bool mask, or viewer indices (as many viewers as the stored risk, or up to the
    last index when there is none)."""
    mv = np.asarray(minor_viewers)
    if mv.dtype == bool and mv.ndim == 1:
        return mv
    if mv.ndim != 1 or not (mv.size == 0 or np.issubdtype(mv.dtype, np.integer)):
        raise fail(
            "minor_viewers",
            "default_policy",
            "a 1-d bool mask or an array of viewer indices",
            minor_viewers,
        )
    size = n_viewers if n_viewers is not None else int(mv.max(initial=-1)) + 1
    return seed_mask(mv, size, "minor_viewers", "default_policy")


def _viewer_mask(viewers, n_users: int) -> np.ndarray:
    """A bool mask over ``n_users`` viewers from a bool mask or indices (``None``: none);
    entries beyond ``n_users`` are ignored, missing ones are ``False``."""
    out = np.zeros(n_users, dtype=bool)
    if viewers is None:
        return out
    v = np.asarray(viewers)
    if v.dtype == bool:
        k = min(n_users, v.shape[0])
        out[:k] = v[:k]
        return out
    v = v.astype(np.int64)
    out[v[(v >= 0) & (v < n_users)]] = True
    return out
