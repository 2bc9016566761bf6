"""TextGuard: search verdicts, autocomplete filtering and account tagging.

Why *block* and not *warn* on discovery surfaces: in the 2023 investigation, searching
explicit hashtags led straight to sellers, and the warning screen offered "see results
anyway". A click-through warning still performs the discovery: the platform itself
routes the searcher to the network, confirms that the term works, and the cost of one
tap deters nobody who is looking on purpose. On search, autocomplete and suggestions
the only safe outcome for a blocked term is no results and no suggestions; ``warn`` is
for ambiguous terms with common innocent meanings, where a hard block would hurt many
legitimate users, and it is never used for terms whose only use is abuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .._validation import check_choice, check_int, fail
from .links import DomainMatcher, DomainRule, NormalizedLink, extract_links
from .matcher import (
    ACTIONS,
    MAX_CHUNK_LENGTH,
    MIN_CHUNKED_LENGTH,
    MIN_SUBSTRING_LENGTH,
    Term,
    TermMatcher,
)
from .normalize import Normalizer, mixed_script_tokens

__all__ = [
    "TextGuard",
    "TextMatch",
    "TextVerdict",
    "TextLabel",
    "AccountText",
    "TaggingResult",
    "CONFIDENCE",
]

_RANK = {a: i for i, a in enumerate(ACTIONS)}
T = TypeVar("T")

#: Confidence attached to labels, by kind of evidence. A whole-token term match is
#: strong; a substring match can be a Scunthorpe false positive; a blocklisted domain is
#: the strongest; a mixed-script token is a weak signal of evasion on its own.
CONFIDENCE: dict[str, float] = {
    "term_token": 0.9,
    "term_substring": 0.6,
    "domain": 0.95,
    "mixed_script": 0.5,
}
#: Severity of the mixed-script signal (a hint of evasion, not abuse by itself).
MIXED_SCRIPT_SEVERITY = 0.3
_EVIDENCE_ITEMS = 5
_SNIPPET = 60


def _snip(text: str) -> str:
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


@dataclass(frozen=True)
class TextMatch:
    """One piece of evidence found in a text."""

    #: ``"term"``, ``"domain"``, ``"shortener"``, ``"malformed_link"``,
    #: ``"mixed_script"`` or ``"too_long"``.
    kind: str
    #: Where it was found: ``"query"``, ``"bio"``, ``"display_name"``, ``"hashtag"``,
    #: ``"link"`` or ``"text"``.
    field: str
    #: The term or domain rule as written, or the offending token or link.
    matched: str
    #: Label category: the rule's, or the check's own (``"url_shortener"``, ...).
    category: str
    #: The rule's severity (a fixed one for link and script checks), in [0, 1].
    severity: float
    #: ``"allow"``, ``"warn"`` or ``"block"``.
    action: str
    #: ``"token"`` or ``"substring"`` for term matches, else None.
    mode: str | None = None

    @property
    def reason(self) -> str:
        """One human-readable line: what matched, where, and what it does."""
        how = f" ({self.mode})" if self.mode else ""
        return f"{self.action}: {self.kind}{how} {self.matched!r} [{self.category}] in {self.field}"

    @property
    def evidence(self) -> str:
        """A short evidence reference for labels."""
        return f"{self.field}:{self.kind}:{_snip(self.matched)}"


@dataclass(frozen=True)
class TextVerdict:
    """The outcome of checking one text or search query."""

    #: ``"allow"``, ``"warn"`` or ``"block"``: the strongest action among the matches
    #: (``"allow"`` when nothing matched).
    action: str
    #: Every match, strongest first.
    matches: tuple[TextMatch, ...] = ()
    #: One line per match.
    reasons: tuple[str, ...] = ()

    @property
    def blocked(self) -> bool:
        """True when the action is ``"block"``."""
        return self.action == "block"

    @property
    def show_results(self) -> bool:
        """Whether account results may be shown: never for a blocked query."""
        return self.action != "block"

    @property
    def show_suggestions(self) -> bool:
        """Whether autocomplete may suggest anything: only for allowed queries."""
        return self.action == "allow"

    @property
    def matched_terms(self) -> tuple[str, ...]:
        """The terms and domain rules that matched, as written, without repeats."""
        return tuple(dict.fromkeys(m.matched for m in self.matches if m.kind in ("term", "domain")))


def _confidence(m: TextMatch) -> float | None:
    if m.kind == "term":
        return CONFIDENCE["term_token" if m.mode == "token" else "term_substring"]
    return CONFIDENCE.get(m.kind)


def _verdict(matches: list[TextMatch]) -> TextVerdict:
    if not matches:
        return TextVerdict("allow")
    matches = sorted(set(matches), key=lambda m: (-_RANK[m.action], -m.severity, m.kind, m.matched))
    action = matches[0].action
    return TextVerdict(action, tuple(matches), tuple(m.reason for m in matches))


@dataclass(frozen=True)
class AccountText:
    """The public text of one account.

    Parameters
    ----------
    account_id : hashable
        External account id, carried into labels.
    bio, display_name : str
    hashtags : sequence of str
        With or without the leading ``#``.
    links : sequence of str
        Link-in-bio URLs; links written inside the bio are found as well.
    """

    account_id: Any
    bio: str = ""
    display_name: str = ""
    hashtags: tuple[str, ...] = ()
    links: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("bio", "display_name"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise fail(name, "AccountText", "a str", value)
        for name in ("hashtags", "links"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise fail(name, "AccountText", "a sequence of str (not one str)", value)
            items = tuple(value)
            for item in items:
                if not isinstance(item, str):
                    raise fail(name, "AccountText", "a sequence of str", value)
            object.__setattr__(self, name, items)


@dataclass(frozen=True)
class TextLabel:
    """A label produced by text matching, ready for the signals store."""

    #: External id of the labelled account.
    account_id: Any
    #: Label category.
    category: str
    #: The largest severity among the evidence.
    severity: float
    #: The largest confidence among the evidence (see :data:`CONFIDENCE`).
    confidence: float
    #: Always ``"text_match"``.
    source: str = "text_match"
    #: Up to five evidence references, ``"; "``-separated, e.g.
    #: ``"hashtag:term:pedo; link:domain:example.com"``.
    evidence: str = ""


@dataclass(frozen=True)
class TaggingResult:
    """Labels, seeds and evidence from :meth:`TextGuard.tag_accounts`."""

    #: The accounts, in input order; seeds index into it.
    account_ids: tuple[Any, ...]
    #: One label per (account, category) with any evidence.
    labels: tuple[TextLabel, ...]
    #: Every piece of evidence with the position of its account, including link flags
    #: (shorteners, malformed links) that do not become labels.
    matches: tuple[tuple[int, TextMatch], ...]
    #: For each category, the sorted positions (int64) of accounts with evidence whose
    #: action reaches the ``seed_action`` of the call: starting points for graph expansion.
    seeds: dict[str, np.ndarray] = field(default_factory=dict)

    def seed_ids(self, category: str) -> list[Any]:
        """Return the external ids of the seed accounts of ``category``."""
        idx = self.seeds.get(category, np.zeros(0, dtype=np.int64))
        return [self.account_ids[i] for i in idx]


class TextGuard:
    """Check search queries, suggestions and account text against term and domain lists.

    Parameters
    ----------
    terms : iterable of Term or str
        Blocked and flagged terms (plain strings: category ``"blocked"``, token mode,
        action block).
    domains : iterable of DomainRule or str, optional
        Blocked and flagged domains.
    normalizer : Normalizer, optional
        Shared by terms and text; every step on by default.
    shorteners : iterable of str, optional
        URL shorteners to flag; default :data:`~guardrails.text.links.DEFAULT_SHORTENERS`.
    shortener_action, malformed_link_action, mixed_script_action : {"allow", "warn", "block"}
        What a link through a shortener, an unparsable link, and a token that mixes
        scripts do to a verdict; all ``"warn"`` by default.
    max_query_length : int, default 512
        Longer queries are blocked with a ``too_long`` reason (fail closed, no scan).
    min_substring_length : int, default 4
    min_chunked_length : int, default 5
    max_chunk_length : int, default 4
        See :class:`~guardrails.text.matcher.TermMatcher`.

    Examples
    --------
    >>> guard = TextGuard([Term("pedo", category="csam")])
    >>> guard.query("ρ3d0 pics").action
    'block'
    >>> guard.query("pedometer").action
    'allow'
    """

    def __init__(
        self,
        terms: Iterable[Term | str] = (),
        *,
        domains: Iterable[DomainRule | str] = (),
        normalizer: Normalizer | None = None,
        shorteners: Iterable[str] | None = None,
        shortener_action: str = "warn",
        malformed_link_action: str = "warn",
        mixed_script_action: str = "warn",
        max_query_length: int = 512,
        min_substring_length: int = MIN_SUBSTRING_LENGTH,
        min_chunked_length: int = MIN_CHUNKED_LENGTH,
        max_chunk_length: int = MAX_CHUNK_LENGTH,
    ) -> None:
        where = "TextGuard"
        self.shortener_action = check_choice(shortener_action, "shortener_action", where, ACTIONS)
        self.malformed_link_action = check_choice(
            malformed_link_action, "malformed_link_action", where, ACTIONS
        )
        self.mixed_script_action = check_choice(
            mixed_script_action, "mixed_script_action", where, ACTIONS
        )
        self.max_query_length = check_int(max_query_length, "max_query_length", where)
        self.matcher = TermMatcher(
            terms,
            normalizer=normalizer,
            min_substring_length=min_substring_length,
            min_chunked_length=min_chunked_length,
            max_chunk_length=max_chunk_length,
        )
        self.normalizer = self.matcher.normalizer
        self.domains = DomainMatcher(domains, shorteners=shorteners)
        self._link_cache: dict[str, list[TextMatch]] = {}

    @property
    def terms(self) -> tuple[Term, ...]:
        """The terms, in input order."""
        return self.matcher.terms_

    # -- building blocks -----------------------------------------------------------------
    def _term_match(self, term_idx: int, where: str) -> TextMatch:
        t = self.matcher.terms_[term_idx]
        return TextMatch("term", where, t.text, t.category, t.severity, t.action, t.mode)

    def _link_matches(self, link: str) -> list[TextMatch]:
        cached = self._link_cache.get(link)
        if cached is not None:
            return cached
        norm, hits, short = self.domains.match(link)
        out = self._link_evidence(norm, hits, short)
        if len(self._link_cache) < 65536:
            self._link_cache[link] = out
        return out

    def _link_evidence(self, norm: NormalizedLink, hits: list[int], short: bool) -> list[TextMatch]:
        out = []
        shown = norm.host or _snip(norm.original)
        for i in hits:
            r = self.domains.rules_[i]
            out.append(TextMatch("domain", "link", r.domain, r.category, r.severity, r.action))
        if short:
            out.append(
                TextMatch("shortener", "link", shown, "url_shortener", 0.1, self.shortener_action)
            )
        if not norm.valid:
            out.append(
                TextMatch(
                    "malformed_link",
                    "link",
                    _snip(norm.original),
                    "malformed_link",
                    0.1,
                    self.malformed_link_action,
                )
            )
        return out

    def _mixed(self, text: str, where: str) -> list[TextMatch]:
        return [
            TextMatch(
                "mixed_script",
                where,
                _snip(tok),
                "mixed_script",
                MIXED_SCRIPT_SEVERITY,
                self.mixed_script_action,
            )
            for tok in mixed_script_tokens(text)
        ]

    # -- single texts --------------------------------------------------------------------
    def scan(self, text: str, *, field: str = "text") -> TextVerdict:
        """Check one text: terms, links written in it, and mixed-script tokens.

        Parameters
        ----------
        text : str
            Any length; time is linear in it.
        field : str, default "text"
            Name of the field, reported in the matches.

        Returns
        -------
        TextVerdict
        """
        if not isinstance(text, str):
            raise fail("text", "TextGuard.scan", "a str", text)
        matches = [self._term_match(int(i), field) for i in self.matcher.match(text)]
        for link in extract_links(text):
            matches.extend(self._link_matches(link))
        matches.extend(self._mixed(text, field))
        return _verdict(matches)

    def query(self, query: str) -> TextVerdict:
        """Decide a search query: ``block``, ``warn`` or ``allow``, with the reasons.

        A blocked query must return no account results and no suggestions
        (:attr:`TextVerdict.show_results`, :attr:`TextVerdict.show_suggestions`);
        :meth:`filter_results` and :meth:`filter_suggestions` apply that. Queries longer
        than ``max_query_length`` are blocked without being scanned.
        """
        if not isinstance(query, str):
            raise fail("query", "TextGuard.query", "a str", query)
        if len(query) > self.max_query_length:
            return _verdict(
                [
                    TextMatch(
                        "too_long", "query", f"{len(query)} characters", "too_long", 1.0, "block"
                    )
                ]
            )
        return self.scan(query, field="query")

    def filter_results(self, query: str, results: Sequence[T]) -> list[T]:
        """Return ``results`` for ``query``, or an empty list if the query is blocked."""
        return [] if self.query(query).blocked else list(results)

    def filter_suggestions(
        self, prefix: str, candidates: Sequence[str], *, max_action: str = "allow"
    ) -> list[str]:
        """Drop autocomplete candidates that lead into blocked or flagged terms.

        Parameters
        ----------
        prefix : str
            What the user has typed. If it is itself blocked, nothing is suggested.
        candidates : sequence of str
            Completions proposed by the search backend, in rank order.
        max_action : {"allow", "warn", "block"}, default "allow"
            The strongest verdict a kept candidate may have. The default keeps only
            clean candidates: suggesting even a warned term is the platform doing the
            discovery.

        Returns
        -------
        list of str
            The kept candidates, in their original order.
        """
        where = "TextGuard.filter_suggestions"
        check_choice(max_action, "max_action", where, ACTIONS)
        if isinstance(candidates, str):
            raise fail("candidates", where, "a sequence of str", candidates)
        cands = list(candidates)
        for i, c in enumerate(cands):
            if not isinstance(c, str):
                raise fail(
                    "candidates",
                    where,
                    "a sequence of str",
                    f"{type(c).__name__} at position {i}",
                    describe=False,
                )
        limit = _RANK[max_action]
        if self.query(prefix).blocked:
            return []
        worst = np.zeros(len(cands), dtype=np.int64)
        doc, term = self.matcher.match_many(cands)
        if doc.size:
            ranks = np.array([_RANK[t.action] for t in self.matcher.terms_], dtype=np.int64)
            np.maximum.at(worst, doc, ranks[term])
        kept = []
        for i, c in enumerate(cands):
            if worst[i] > limit or len(c) > self.max_query_length:
                continue
            extra = [m for link in extract_links(c) for m in self._link_matches(link)]
            extra += self._mixed(c, "suggestion")
            if any(_RANK[m.action] > limit for m in extra):
                continue
            kept.append(c)
        return kept

    # -- batches of accounts -------------------------------------------------------------
    def tag_accounts(
        self,
        accounts: Iterable[AccountText | Mapping[str, Any]],
        *,
        seed_action: str = "block",
    ) -> TaggingResult:
        """Scan bios, display names, hashtags and links of many accounts at once.

        All texts of the batch go through the automaton in one pass.

        Parameters
        ----------
        accounts : iterable of AccountText or mapping
            Mappings are read as ``AccountText(**mapping)``.
        seed_action : {"warn", "block"}, default "block"
            Evidence at least this strong makes an account a seed of its category.

        Returns
        -------
        TaggingResult
        """
        where = "TextGuard.tag_accounts"
        check_choice(seed_action, "seed_action", where, ("warn", "block"))
        accs: list[AccountText] = []
        for i, a in enumerate(accounts):
            if isinstance(a, Mapping):
                a = AccountText(**a)
            if not isinstance(a, AccountText):
                raise fail(
                    "accounts",
                    where,
                    "an iterable of AccountText or mappings",
                    f"{type(a).__name__} at position {i}",
                    describe=False,
                )
            accs.append(a)

        texts: list[str] = []
        owner: list[int] = []
        fields: list[str] = []
        for i, a in enumerate(accs):
            parts = [("bio", a.bio), ("display_name", a.display_name)]
            parts += [("hashtag", h.lstrip("#")) for h in a.hashtags]
            for name, text in parts:
                if text:
                    texts.append(text)
                    owner.append(i)
                    fields.append(name)
        found: list[tuple[int, TextMatch]] = []
        doc, term = self.matcher.match_many(texts)
        for d, t in zip(doc.tolist(), term.tolist(), strict=True):
            found.append((owner[d], self._term_match(t, fields[d])))
        for d, text in enumerate(texts):
            for m in self._mixed(text, fields[d]):
                found.append((owner[d], m))
        for i, a in enumerate(accs):
            links = list(a.links) + extract_links(a.bio)
            for link in dict.fromkeys(links):
                found.extend((i, m) for m in self._link_matches(link))
        found = list(dict.fromkeys(found))
        return self._labels(accs, found, seed_action)

    @staticmethod
    def _labels(
        accs: list[AccountText], found: list[tuple[int, TextMatch]], seed_action: str
    ) -> TaggingResult:
        grouped: dict[tuple[int, str], list[TextMatch]] = {}
        seeds: dict[str, set[int]] = {}
        for i, m in found:
            if _confidence(m) is None:
                continue  # link flags (shorteners, malformed links) stay evidence only
            grouped.setdefault((i, m.category), []).append(m)
            if m.kind in ("term", "domain") and _RANK[m.action] >= _RANK[seed_action]:
                seeds.setdefault(m.category, set()).add(i)
        labels = []
        for (i, category), ms in sorted(grouped.items(), key=lambda kv: kv[0]):
            ms = sorted(ms, key=lambda m: (-m.severity, m.field, m.matched))
            confidence = max(_confidence(m) or 0.0 for m in ms)
            evidence = "; ".join(dict.fromkeys(m.evidence for m in ms[:_EVIDENCE_ITEMS]))
            labels.append(
                TextLabel(
                    accs[i].account_id, category, ms[0].severity, confidence, "text_match", evidence
                )
            )
        return TaggingResult(
            account_ids=tuple(a.account_id for a in accs),
            labels=tuple(labels),
            matches=tuple(found),
            seeds={c: np.array(sorted(s), dtype=np.int64) for c, s in sorted(seeds.items())},
        )
