"""Text guard: hashtags, bios, links and search queries that survive obfuscation.

Needs the ``text`` extra (``pip install 'recsys-guardrails[text]'``): ``ahocorasick-rs``,
``confusable-homoglyphs`` and ``idna``.

* :class:`Normalizer` turns text into a matching key (NFKC, case folding, invisible
  characters, UTS #39 confusables, diacritics, leetspeak, separators, emoji, repeated
  letters); :func:`is_mixed_script` is a signal of its own.
* :class:`TermMatcher` matches 100,000+ :class:`Term` s in one Aho-Corasick pass, in
  whole-token or substring mode; :class:`DomainMatcher` checks links against
  :class:`DomainRule` s after URL normalisation and flags shorteners.
* :class:`TextGuard` gives search verdicts (:meth:`TextGuard.query`), filters results
  and autocomplete, and tags accounts in batch (:meth:`TextGuard.tag_accounts`) into
  :class:`TextLabel` s and seeds.
"""

from .guard import (
    CONFIDENCE,
    AccountText,
    TaggingResult,
    TextGuard,
    TextLabel,
    TextMatch,
    TextVerdict,
)
from .links import (
    DEFAULT_SHORTENERS,
    DomainMatcher,
    DomainRule,
    NormalizedLink,
    extract_links,
    normalize_link,
    refang,
)
from .matcher import ACTIONS, MODES, Term, TermMatcher
from .normalize import LEET, Normalizer, is_mixed_script, mixed_script_tokens

__all__ = [
    "TextGuard",
    "TextVerdict",
    "TextMatch",
    "TextLabel",
    "AccountText",
    "TaggingResult",
    "CONFIDENCE",
    "Term",
    "TermMatcher",
    "ACTIONS",
    "MODES",
    "DomainRule",
    "DomainMatcher",
    "NormalizedLink",
    "normalize_link",
    "extract_links",
    "refang",
    "DEFAULT_SHORTENERS",
    "Normalizer",
    "LEET",
    "is_mixed_script",
    "mixed_script_tokens",
]
