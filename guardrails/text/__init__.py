"""Text guard: hashtags, bios, links and search queries that survive obfuscation.

Needs the ``text`` extra (``pip install 'recsys-guardrails[text]'``): ``ahocorasick-rs``,
``confusable-homoglyphs``, ``idna`` and ``anyascii``.

* :class:`Normalizer` turns text into matching keys (NFKC, case folding, invisible
  characters, UTS #39 confusables, diacritics, leetspeak, separators, emoji, repeated
  letters) and :class:`Reading` s (transliteration folds through ``anyascii``, both
  readings of leetspeak at word edges, chunks); :func:`is_mixed_script` is a signal of
  its own.
* :mod:`guardrails.text.obfuscate` generates disguised spellings of terms, class by
  class, to measure what a guard catches.
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
from .normalize import LEET, Normalizer, Reading, is_mixed_script, mixed_script_tokens

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
    "Reading",
    "LEET",
    "is_mixed_script",
    "mixed_script_tokens",
]
