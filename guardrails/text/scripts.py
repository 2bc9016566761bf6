"""Mixed-script detection: tokens whose letters come from scripts that do not belong together.

A signal of look-alike spoofing (Cyrillic ``а`` inside a Latin word) beside the matching
keys of :mod:`guardrails.text.normalize`, which re-exports both functions.
"""

from __future__ import annotations

import unicodedata

from .._validation import fail
from ._data import is_default_ignorable, script_of

__all__ = ["mixed_script_tokens", "is_mixed_script"]

#: Script sets that UTS #39 "highly restrictive" allows inside one token, beyond one
#: script alone (COMMON and INHERITED never count).
_ALLOWED_SCRIPT_SETS = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
_NEUTRAL_SCRIPTS = frozenset({"COMMON", "INHERITED", "UNKNOWN"})


def mixed_script_tokens(text: str) -> list[str]:
    """Return the whitespace-separated tokens of ``text`` that mix scripts.

    A token mixes scripts when its letters come from more than one script and the set
    is not one that UTS #39's "highly restrictive" level allows (Latin with Han and
    Japanese kana, with Han and Bopomofo, or with Han and Hangul). Characters of the
    Common and Inherited scripts (digits, punctuation, combining marks) never count.
    Invisible characters are removed first so that they cannot hide a mix.

    Parameters
    ----------
    text : str

    Returns
    -------
    list of str
        The offending tokens, in order, after NFKC.
    """
    if not isinstance(text, str):
        raise fail("text", "mixed_script_tokens", "a str", text)
    if text.isascii():
        return []
    text = unicodedata.normalize("NFKC", text)
    found = []
    for token in text.split():
        if token.isascii():
            continue
        scripts = {
            script_of(ch)
            for ch in token
            if unicodedata.category(ch).startswith("L") and not is_default_ignorable(ch)
        } - _NEUTRAL_SCRIPTS
        if len(scripts) > 1 and not any(scripts <= allowed for allowed in _ALLOWED_SCRIPT_SETS):
            found.append(token)
    return found


def is_mixed_script(text: str) -> bool:
    """Whether any token of ``text`` mixes scripts (see :func:`mixed_script_tokens`)."""
    return bool(mixed_script_tokens(text))
