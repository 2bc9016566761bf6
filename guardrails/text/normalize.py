"""Normalisation of user text to a matching key that survives spelling tricks.

The pipeline (each step can be turned off with a keyword of :class:`Normalizer`):

1. ``nfkc`` — Unicode NFKC: fullwidth, mathematical, circled and ligature forms become
   their plain letters (``ｐｅｄｏ``, ``𝐩𝐞𝐝𝐨`` → ``pedo``). Canonical composition runs on
   the whole string; compatibility mappings run per code point, after the skeleton for
   code points that the confusables data maps (UTS #39 defines the skeleton on NFD,
   and NFKC would otherwise turn look-alikes such as ``ϲ`` into other letters first).
2. ``casefold`` — full Unicode case folding (``ß`` → ``ss``).
3. ``ignorables`` — removal of default-ignorable code points: zero-width spaces and
   joiners, soft hyphens, bidi controls, variation selectors, tag characters.
4. ``confusables`` — the UTS #39 confusables skeleton (data from the maintained
   ``confusable-homoglyphs`` package, never typed by hand): Cyrillic ``а``, Greek ``ο``,
   Cherokee ``Ꭺ`` ... become their Latin prototypes. Because the skeleton makes ``I``
   and ``l`` the same and case folding makes ``I`` and ``i`` the same, ``l`` is folded
   into ``i`` (otherwise ``chiId`` with a capital ``I`` would escape); ``m`` expands to
   its prototype ``rn``.
5. ``diacritics`` — canonical decomposition and removal of nonspacing and enclosing marks
   (``é`` → ``e``, stacked "zalgo" marks and keycap frames vanish).
6. ``leetspeak`` — digits and a few symbols that stand for letters (:data:`LEET`). Symbols
   count when a letter or digit follows them (``$ex``, ``p@ss``), and ``$`` also at the end
   of a word (``pa$$``), so ``sale!`` keeps its meaning; ``@`` at the start of a word is a
   mention and is dropped.
7. ``separators`` — punctuation is removed inside words (``p.e.d.o``, ``p_e-d_o``) and
   runs of single letters separated by spaces are joined (``p e d o``).
8. ``emoji`` — symbols, emoji, skin-tone modifiers and keycaps are removed.
9. ``squeeze`` — runs of a repeated character become one (``peeedddooo`` → ``pedo``).

Whitespace and control characters always become single spaces (token boundaries), and
lone surrogates (malformed text) are always dropped, so every key is valid UTF-8.

Readings. One spelling can mean several things, so :meth:`Normalizer.readings` returns
every reading worth matching, and a text matches a term when *any* reading hits:

* the *skeleton fold* above (the first reading, equal to :meth:`Normalizer.keys`);
* with ``transliterate`` on (the default, needs the ``anyascii`` package from the
  ``text`` extra), two *transliteration folds*, computed only when the skeleton fold
  leaves a non-ASCII letter: the *look-alike fold* keeps the skeleton where it gives
  ASCII and otherwise takes the skeleton of the capital letter, the letter that the
  look-alikes of a non-ASCII prototype transliterate to, or the letter's own
  transliteration (Greek ``κ`` → ``k``, whose skeleton is Latin ``ĸ``), so look-alikes
  from several scripts in one word still meet;
  the *transliteration fold* transliterates every non-ASCII letter (Cyrillic ``р`` →
  ``r``, ``з`` → ``z``: a term spelled phonetically in another alphabet);
* leetspeak symbols at the edge of a word read *both ways*: the cautious reading above
  (``sale!`` is ``sale``, ``@user`` is ``user``) and eager ones in which every symbol
  touching a word, and a token of symbols alone, is a letter (``zorv@k!`` is
  ``zorvaki``; ``u @ b`` is ``u a b``), one of them keeping a closing ``!`` as
  punctuation (``u+!`` is ``ut``); eager readings are only produced when they differ.

Each reading also carries a *chunk key*: the token key without the joining of single
letters, with a :data:`GLUE` token where a token of punctuation or symbols stood, which
:class:`~guardrails.text.matcher.TermMatcher` uses to match long terms spelled out in
chunks of a few letters (``b a mfen fen q ua``, ``puqu . egedeq``).

The key is deliberately lossy: it is a matching key, never shown to users. Both the
blocked terms and the scanned text go through the same function, so equal keys mean
"spelled the same after the tricks above". Two keys come out of one pass:

* the *token key* keeps word boundaries as single spaces (for whole-token matching);
* the *compact key* drops them (for substring matching, which also catches words split
  by spaces).

Performance: every per-code-point step is composed into one translation table that is
filled lazily (each code point is worked out once, then :meth:`str.translate` runs in C;
ASCII text takes CPython's fast path). NFKC is skipped for ASCII text, which it cannot
change. Short strings (hashtags, names, queries) are cached.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from .._validation import check_bool, fail
from ._data import is_default_ignorable, script_of, skeleton_map
from ._extra import import_text_extra
from .scripts import is_mixed_script, mixed_script_tokens

__all__ = ["Normalizer", "Reading", "LEET", "mixed_script_tokens", "is_mixed_script"]

#: Leetspeak substitutions: the character on the left stands for the letter on the right.
#: ``0`` and ``1`` are also covered by the confusables skeleton (``0`` → ``o``,
#: ``1`` → ``l`` → ``i``). Ambiguous digits get their most common reading.
LEET: dict[str, str] = {
    "0": "o",
    "1": "i",
    "2": "z",
    "3": "e",
    "4": "a",
    "5": "s",
    "6": "g",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "!": "i",
    "+": "t",
    "|": "i",
}
_LEET_SYMBOLS = "".join(ch for ch in LEET if not ch.isalnum())
_LEET_SYMBOL_RE = re.compile("[" + re.escape(_LEET_SYMBOLS) + "]+")
#: Stands in the chunk key where a token of punctuation or symbols stood between words
#: (``puqu . egedeq``): a deliberate split, so the words around it count as chunks.
GLUE = "\ue000"
_GLUE_RE = re.compile(r"(?<!\S)(?:[^\w\s]|_)+(?!\S)")
# A token of one letter, possibly repeated ("k rr uuu"), followed by another: the space
# between them goes (the repeats are squeezed later).
_SPACED_LETTERS_RE = re.compile(r"(?<!\S)(\S)\1*+ (?=(\S)\2*+(?!\S))")
_SQUEEZE_RE = re.compile(r"([^ ])\1+")
# With the skeleton on, "m" is spelled "rn", so "mm" becomes "rnrn" and "mn" "rnn":
# after the per-character squeeze, "rn" followed by more "rn" or "n" collapses to "rn".
_SQUEEZE_RN_RE = re.compile(r"rn(?:rn|n)+")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")

# Scripts whose letters pass for Latin ones (prototype voting is limited to them).
_LOOKALIKE_SCRIPTS = frozenset({"LATIN", "GREEK", "CYRILLIC"})

_CACHE_MAX_LEN = 256
_NUMPY_MIN_LEN = 512
_BATCH_MIN = 8


class Reading(NamedTuple):
    """One reading of a text (see :meth:`Normalizer.readings`).

    Attributes
    ----------
    token : str
        Token key: normalised tokens separated by single spaces.
    compact : str
        The token key without spaces, squeezed again across the joins.
    chunks : str
        The token key before runs of single letters are joined (``"p e d o"`` stays
        four tokens), with a :data:`GLUE` token where a token of punctuation or symbols
        stood between words: what spaced-out chunks are matched on.
    """

    token: str
    compact: str
    chunks: str


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    # Nonspacing and enclosing marks only: spacing marks (Mc) are vowel signs in Indic
    # scripts, not decoration.
    return "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Me"))


class _FoldTable(dict):
    """Lazily filled ``str.translate`` table: code point → replacement (``None`` deletes)."""

    def __init__(self, fold) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self._fold = fold

    def __missing__(self, cp: int) -> str | None:
        out = self._fold(chr(cp))
        value = out if out else None
        self[cp] = value
        return value


class Normalizer:
    """Turn text into matching keys; every step of the pipeline can be switched off.

    Parameters
    ----------
    nfkc, casefold, ignorables, confusables, diacritics : bool
        Steps of the pipeline described in the module docstring; all on by default.
    leetspeak, separators, emoji, squeeze : bool
        Steps of the pipeline described in the module docstring; all on by default.
    transliterate : bool, default True
        Add the transliteration folds to :meth:`readings` (needs ``anyascii``).
    cache_size : int, default 65536
        How many short strings (up to 256 characters) to remember; 0 disables the cache.

    Examples
    --------
    >>> n = Normalizer()
    >>> n.compact("Ｐ\u200bе.d 0") == n.compact("pedo")  # fullwidth, ZWSP, Cyrillic, 0
    True
    >>> n.key("the p e d o") == n.key("the pedo")
    True
    """

    STEPS = (
        "nfkc",
        "casefold",
        "ignorables",
        "confusables",
        "diacritics",
        "leetspeak",
        "separators",
        "emoji",
        "squeeze",
        "transliterate",
    )

    def __init__(
        self,
        *,
        nfkc: bool = True,
        casefold: bool = True,
        ignorables: bool = True,
        confusables: bool = True,
        diacritics: bool = True,
        leetspeak: bool = True,
        separators: bool = True,
        emoji: bool = True,
        squeeze: bool = True,
        transliterate: bool = True,
        cache_size: int = 65536,
    ) -> None:
        arguments = locals()
        for name in self.STEPS:
            check_bool(arguments[name], name, "Normalizer")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise fail("cache_size", "Normalizer", "an int in [0, inf)", cache_size)
        self.nfkc = nfkc
        self.casefold = casefold
        self.ignorables = ignorables
        self.confusables = confusables
        self.diacritics = diacritics
        self.leetspeak = leetspeak
        self.separators = separators
        self.emoji = emoji
        self.squeeze = squeeze
        self.transliterate = transliterate
        self.cache_size = cache_size
        self._skeleton = skeleton_map() if confusables else {}
        self._anyascii = (
            import_text_extra("anyascii", "Normalizer(transliterate=True)").anyascii
            if transliterate
            else None
        )
        self._table = _FoldTable(self._fold_char)
        self._lookalike_table = _FoldTable(self._fold_char_lookalike)
        self._translit_table = _FoldTable(self._fold_char_translit)

        self._keys_cached = (
            functools.lru_cache(maxsize=cache_size)(self._keys_uncached) if cache_size else None
        )
        self._readings_cached = (
            functools.lru_cache(maxsize=cache_size)(self._readings_uncached) if cache_size else None
        )

    # -- configuration -------------------------------------------------------------------
    def config(self) -> dict[str, bool]:
        """Return the step switches as a dict (for reports and equality checks)."""
        return {name: getattr(self, name) for name in self.STEPS}

    def __repr__(self) -> str:
        off = [name for name, on in self.config().items() if not on]
        return f"Normalizer(off={off})" if off else "Normalizer()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Normalizer) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(self.config().items()))

    # -- per code point ------------------------------------------------------------------
    def _skel(self, text: str) -> str:
        table = self._skeleton
        return "".join(table.get(ch, ch) for ch in text)

    def _fold_char(self, ch: str) -> str:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            return ""  # a lone surrogate is malformed text; it cannot even be encoded
        if ch.isspace() or cat in ("Zs", "Zl", "Zp", "Cc"):
            return " "
        if self.ignorables and is_default_ignorable(ch):
            return ""
        text = ch
        if ch.isascii():
            # Latin letters typed as themselves: case first, so "I" stays a letter i.
            if self.casefold:
                text = text.casefold()
            # Only letters, digits and "|" (UTS #39 maps "%" to "º/₀", which would put
            # letters where a separator stood).
            if self.confusables and (ch.isalnum() or ch == "|"):
                text = self._skel(text)
                if self.casefold:
                    text = text.casefold()
        else:
            # Look-alikes from other scripts: skeleton before compatibility mapping and
            # case ("ϲ" lunate sigma is a "c" to the eye, not the "σ" NFKC makes of it;
            # Greek "Η" is an "H", not the "η" case folding makes of it); repeat until
            # stable (a few rounds at most).
            canonical = unicodedata.decomposition(ch)
            if self.diacritics and canonical and not canonical.startswith("<"):
                # A letter with accents ("ö"): the accents go first, so the skeleton
                # sees the base letter (the data maps "ö" itself to Arabic "ة").
                text = _strip_marks(ch)
            elif (
                self.confusables
                and ch in self._skeleton
                and (
                    any(c.isalnum() for c in self._skeleton[ch])
                    or not (self.nfkc and unicodedata.normalize("NFKC", ch).isalnum())
                )
            ):
                # (Circled "Ⓡ" has the skeleton "®", a symbol; NFKC makes it the letter.)
                text = self._skeleton[ch]
            elif self.nfkc:
                text = unicodedata.normalize("NFKC", ch)
            for _ in range(4):
                before = text
                if self.diacritics:
                    text = _strip_marks(text)
                if self.confusables:
                    text = self._skel(text)
                if self.casefold:
                    text = text.casefold()
                if self.nfkc:
                    text = unicodedata.normalize("NFKC", text)
                if text == before:
                    break
        out = []
        for c in text:
            if self.confusables and self.casefold and c == "l":
                c = "i"
            if self.confusables and c == "m":
                out.append(c)  # expanded to "rn" on whole strings (keeps the fast path)
                continue
            if self.leetspeak and c in LEET:
                if c in _LEET_SYMBOLS:
                    out.append(c)  # resolved in context by _resolve_leet_symbols
                    continue
                c = LEET[c]
                if self.confusables and self.casefold and c == "l":
                    c = "i"
            sub = unicodedata.category(c)
            if sub == "Cs":
                continue
            if sub[0] in "ZC" and sub != "Cf":
                out.append(" ")
                continue
            if sub == "Cf" and self.ignorables:
                continue
            if sub[0] == "P" and self.separators:
                continue
            if sub[0] == "S" and self.emoji:
                continue
            if sub in ("Mn", "Me") and self.diacritics:
                continue
            out.append(c)
        result = "".join(out)
        if self.confusables:
            # One code point stays one letter (the fast path and the joining of spaced
            # letters need that); "m" is expanded to its prototype "rn" on whole strings.
            result = result.replace("rn", "m")
        return result

    def _translit_letter(self, ch: str) -> str | None:
        """Transliterate one non-ASCII letter or number to its folded ASCII spelling.

        Only letters and numbers: symbols and emoji have transliterations too
        (``🍕`` → ``:pizza:``) that would put words into the key.
        """
        convert = self._anyascii
        if convert is None or unicodedata.category(ch)[0] not in "LN":
            return None
        plain = unicodedata.normalize("NFKC", ch) if self.nfkc else ch
        out = convert(_strip_marks(plain))
        if not out or not out.isascii() or not out.isalnum():
            return None
        table = self._table
        return "".join(table[ord(c)] or "" for c in out) or None

    def _fold_char_lookalike(self, ch: str) -> str:
        # The skeleton where it reaches ASCII, else the transliteration of the letter:
        # look-alikes from several scripts in one word all meet in Latin.
        base = self._table[ord(ch)]
        if base is None or base.isascii():
            return base or ""
        # The skeleton knows some capitals but not their small letters (Greek "Χ" is
        # "X", "χ" is itself; "Κ" is "K", "κ" is Latin "ĸ").
        upper = ch.upper()
        if self.confusables and len(upper) == 1 and upper != ch:
            proto = self._skeleton.get(upper, "")
            if proto.isascii() and proto.isalpha():
                return "".join(self._table[ord(c)] or "" for c in proto)
        # A prototype outside ASCII (Latin kra "ĸ", the skeleton of Greek "κ") reads as
        # the letter its look-alikes transliterate to.
        voted = _prototype_letters(self._anyascii).get(base)
        if voted is not None:
            return self._table[ord(voted)] or ""
        out = self._translit_letter(ch)
        return base if out is None else out

    def _fold_char_translit(self, ch: str) -> str:
        if not ch.isascii():
            out = self._translit_letter(ch)
            if out is not None:
                return out
        return self._table[ord(ch)] or ""

    # -- whole strings -------------------------------------------------------------------
    def _resolve_leet_symbols(self, text: str, eager: int = 0) -> str:
        """Read leetspeak symbols in context.

        ``eager`` 0 is the cautious reading; 1 also takes every symbol touching a word,
        and a token of symbols alone (``u @ b``), as letters; 2 is 1 except that ``!``
        closing a word stays punctuation (``u+!`` is ``ut``).
        """
        fold_l = self.confusables and self.casefold
        n = len(text)

        def repl(m: re.Match[str]) -> str:
            run = m.group(0)
            end = m.end()
            nxt = text[end] if end < n else " "
            start = m.start()
            prev = text[start - 1] if start else " "
            if eager and prev == " " and nxt == " ":
                prev = "a"  # a token of its own: a spaced-out letter (u @ b)
            if eager == 2 and nxt not in _WORD_CHARS and prev in _WORD_CHARS:
                run = run.rstrip("!")
                if not run:
                    return ""
            if nxt in _WORD_CHARS or (eager and prev in _WORD_CHARS):
                # A run of symbols inside or at the start of a word stands for letters;
                # "@" opening a word is a mention, not an "a" (the eager reading takes
                # every symbol touching a word as a letter).
                if run[0] == "@" and prev not in _WORD_CHARS and not eager:
                    run = run[1:]
                out = "".join(LEET[c] for c in run)
                return out.replace("l", "i") if fold_l else out
            # At the end of a word only "$" stands for letters, after a letter ("pa$$",
            # "bo$$"; digits are letters by now, so "10$" reads "ios"): "!" there is
            # punctuation ("sale!").
            head = ""
            if prev in _LETTERS and run[0] == "$":
                rest = run.lstrip("$")
                head, run = "s" * (len(run) - len(rest)), rest
            # Not standing for letters: ordinary symbols or punctuation marks.
            kept = [head]
            for c in run:
                group = unicodedata.category(c)[0]
                if (group == "S" and not self.emoji) or (group == "P" and not self.separators):
                    kept.append(c)
            return "".join(kept)

        return _LEET_SYMBOL_RE.sub(repl, text)

    def _squeeze(self, text: str) -> str:
        if _SQUEEZE_RE.search(text) is not None:
            text = _SQUEEZE_RE.sub(_group1, text)
        if self.confusables and ("rnn" in text or "rnrn" in text):
            text = _SQUEEZE_RN_RE.sub("rn", text)
        return text

    def _keys_uncached(self, text: str) -> tuple[str, str]:
        return self._keys_from_folded(self._fold_string(text))

    def _keys_from_folded(self, s: str) -> tuple[str, str]:
        if len(s) >= _NUMPY_MIN_LEN:
            s = self._post_numpy(s)
        else:
            s = self._post_regex(s)
        if " " not in s:
            return s, s
        compact = s.replace(" ", "")
        if self.squeeze:
            compact = (
                self._squeeze(compact)
                if len(compact) < _NUMPY_MIN_LEN
                else (self._post_numpy(compact))
            )
        return s, compact

    def _post_regex(self, s: str, join: bool = True) -> str:
        # Short strings: cheap membership tests skip most regular expressions.
        if join and self.separators and " " in s:
            s = _SPACED_LETTERS_RE.sub(_group1, s)
        if self.confusables and "m" in s:
            s = s.replace("m", "rn")
        if self.squeeze:
            s = self._squeeze(s)
        return s

    def _post_numpy(self, s: str, join: bool = True) -> str:
        """Spaced-letter joining and squeezing as array operations (long strings).

        Same result as :meth:`_post_regex`; Python's regular expressions with
        back-references cost about a microsecond per character, these masks a few
        nanoseconds. ``s`` may also be many keys joined by newlines (:meth:`keys_many`):
        a newline is never removed, merged or joined across.
        """
        if join and self.separators and " " in s:
            if self.squeeze:
                # "k rr uuu f d" is spaced single letters too: squeeze before joining.
                s = _np_squeeze(s)
            a = np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)
            bounds_at = np.flatnonzero((a == 32) | (a == 10))
            bounds = np.concatenate(([-1], bounds_at, [a.size]))
            single = np.diff(bounds) == 2  # tokens of one code point
            # the space between two of them goes (a newline between keys stays)
            join = single[:-1] & single[1:] & (a[bounds_at] == 32)
            if join.any():
                keep = np.ones(a.size, dtype=bool)
                keep[bounds_at[join]] = False
                s = a[keep].tobytes().decode("utf-32-le")
        if self.confusables and "m" in s:
            s = s.replace("m", "rn")
        if self.squeeze:
            s = _np_squeeze(s)
            if self.confusables and ("rnn" in s or "rnrn" in s):
                s = _SQUEEZE_RN_RE.sub("rn", s)
        return s

    def keys(self, text: str) -> tuple[str, str]:
        """Return ``(token_key, compact_key)`` for ``text``.

        Parameters
        ----------
        text : str
            Any string; malformed parts (lone surrogates) are dropped, never an error.

        Returns
        -------
        token_key : str
            Normalised tokens separated by single spaces, no leading or trailing space.
        compact_key : str
            The same without spaces (repeated letters squeezed again across the joins).
        """
        return _checked_and_cached(text, "Normalizer.keys", self._keys_cached, self._keys_uncached)

    def readings(self, text: str) -> tuple[Reading, ...]:
        """Return every reading of ``text`` worth matching (see the module docstring).

        Parameters
        ----------
        text : str
            Any string; malformed parts are dropped, never an error.

        Returns
        -------
        tuple of Reading
            Distinct readings; the first is the skeleton fold with the cautious
            leetspeak reading, whose ``(token, compact)`` equals :meth:`keys`. Plain
            ASCII text without leetspeak symbols has exactly one reading.
        """
        return _checked_and_cached(
            text, "Normalizer.readings", self._readings_cached, self._readings_uncached
        )

    def _readings_uncached(self, text: str) -> tuple[Reading, ...]:
        if self.nfkc and not text.isascii():
            text = _nfc(text)
        first = text.translate(self._table)
        # A token that folds to nothing leaves two spaces (or one at an end) behind: only
        # then can there be glue.
        glue = (
            self.separators
            and self.emoji
            and ("  " in first or first[:1] == " " or first[-1:] == " ")
            and _GLUE_RE.search(text) is not None
        )
        if (
            not glue
            and (first.isascii() or not self.transliterate)
            and not (self.leetspeak and _LEET_SYMBOL_RE.search(first) is not None)
        ):
            # One reading (most text): no loops, no sets.
            return (self._reading(" ".join(first.split()) if " " in first else first),)
        pieces = [text]
        if glue:
            pieces = _GLUE_RE.sub(self._glue, text).split(GLUE)
        raw = [p.translate(self._table) for p in pieces]
        folds = [GLUE.join(raw)]
        if self.transliterate and not all(p.isascii() for p in raw):
            # Only where the skeleton left something non-ASCII can they differ.
            for table in (self._lookalike_table, self._translit_table):
                folds.append(GLUE.join(p.translate(table) for p in pieces))
        out: list[Reading] = []
        seen: set[str] = set()
        for r in folds:
            r = " ".join(r.split()) if " " in r else r
            leet = self.leetspeak and _LEET_SYMBOL_RE.search(r) is not None
            for eager in (0, 1, 2) if leet else (0,):
                s = self._resolve_leet_symbols(r, eager) if leet else r
                s = " ".join(s.split()) if " " in s else s
                if s in seen:
                    continue
                seen.add(s)
                out.append(self._reading(s))
        return tuple(out)

    def _glue(self, m: re.Match[str]) -> str:
        token = m.group(0)
        # Only tokens that fold to nothing: circled letters are symbols that fold to
        # letters, and a token of leetspeak symbols may be a letter (eager reading).
        table = self._table
        if any(c in _LEET_SYMBOLS or (table[ord(c)] or " ") != " " for c in token):
            return token
        return f" {GLUE} "

    def _reading(self, s: str, keys: tuple[str, str] | None = None) -> Reading:
        glued = GLUE in s
        if keys is None:
            plain = " ".join(s.replace(GLUE, " ").split()) if glued else s
            keys = self._keys_from_folded(plain)
        token, compact = keys
        chunks = token
        # Joining single letters is the only step that removes spaces.
        if self.separators and " " in s and (glued or token.count(" ") != s.count(" ")):
            chunks = (
                self._post_numpy(s, False)
                if len(s) >= _NUMPY_MIN_LEN
                else (self._post_regex(s, False))
            )
        return Reading(token, compact, chunks)

    def readings_many(self, texts: Iterable[str]) -> list[tuple[Reading, ...]]:
        """Return :meth:`readings` for each string of ``texts``, as one batch.

        Texts with a single reading (no leetspeak symbol, nothing non-ASCII left by the
        skeleton) take the array path of :meth:`keys_many`; the others are read one by
        one. The result equals ``[self.readings(t) for t in texts]``.
        """
        items = check_texts(list(texts), "Normalizer.readings_many", "an iterable of str")
        if len(items) < _BATCH_MIN:
            return [self.readings(t) for t in items]
        out: list[tuple[Reading, ...] | None] = [None] * len(items)
        plain_idx: list[int] = []
        plain: list[str] = []
        for i, t in enumerate(items):
            raw = (_nfc(t) if self.nfkc and not t.isascii() else t).translate(self._table)
            if (
                (self.transliterate and not raw.isascii())
                or (self.leetspeak and _LEET_SYMBOL_RE.search(raw) is not None)
                or (self.separators and self.emoji and _GLUE_RE.search(t) is not None)
            ):
                out[i] = self.readings(t)
            else:
                plain_idx.append(i)
                plain.append(" ".join(raw.split()) if " " in raw else raw)
        for i, s, keys in zip(plain_idx, plain, self._keys_many_folded(plain), strict=True):
            out[i] = (self._reading(s, keys),)
        return out  # type: ignore[return-value]

    def key(self, text: str) -> str:
        """Return the token key of ``text`` (see :meth:`keys`)."""
        return self.keys(text)[0]

    def compact(self, text: str) -> str:
        """Return the compact key of ``text`` (see :meth:`keys`)."""
        return self.keys(text)[1]

    def keys_many(self, texts: Iterable[str]) -> list[tuple[str, str]]:
        """Return :meth:`keys` for each string of ``texts``, as one batch.

        The per-string steps (composition, the translation table, leetspeak symbols,
        whitespace) run string by string in C; joining spaced letters and squeezing run
        once over the whole batch as array operations. The result equals
        ``[self.keys(t) for t in texts]``.
        """
        items = check_texts(list(texts), "Normalizer.keys_many", "an iterable of str")
        if len(items) < _BATCH_MIN:
            return [self.keys(t) for t in items]
        return self._keys_many_folded([self._fold_string(t) for t in items])

    def _keys_many_folded(self, folded: list[str]) -> list[tuple[str, str]]:
        if not folded:
            return []
        tokens = self._post_numpy("\n".join(folded)).split("\n")
        if not self.squeeze:
            return [(k, k.replace(" ", "")) for k in tokens]
        compact = self._post_numpy("\n".join(k.replace(" ", "") for k in tokens)).split("\n")
        return list(zip(tokens, compact, strict=True))

    def _fold_string(self, text: str) -> str:
        if self.nfkc and not text.isascii():
            text = _nfc(text)
        s = text.translate(self._table)
        if self.leetspeak and _LEET_SYMBOL_RE.search(s) is not None:
            s = self._resolve_leet_symbols(s)
        return " ".join(s.split()) if " " in s else s


@functools.cache
def _prototype_letters(anyascii) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Non-ASCII skeleton prototypes → the ASCII letter most of their sources transliterate to.

    Only prototypes with at least two sources agreeing, e.g. ``ĸ`` ← ``κ``, ``ᴋ``, ``к``
    (all ``k``); from the confusables data and ``anyascii``, nothing typed by hand.
    """
    votes: dict[str, dict[str, int]] = {}
    for source, proto in skeleton_map().items():
        if (
            len(proto) != 1
            or proto.isascii()
            or len(proto.casefold()) != 1
            or script_of(proto) not in _LOOKALIKE_SCRIPTS
        ):
            continue
        out = anyascii(_strip_marks(source)).lower()
        if len(out) == 1 and out.isalpha():
            tally = votes.setdefault(proto.casefold(), {})
            tally[out] = tally.get(out, 0) + 1
    result = {}
    for proto, tally in votes.items():
        letter, count = max(tally.items(), key=lambda kv: (kv[1], kv[0]))
        if count >= 2:
            result[proto] = letter
    return result


def _np_squeeze(s: str) -> str:
    """Runs of one repeated code point become one (newlines, between keys, always stay)."""
    a = np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)
    keep = np.empty(a.size, dtype=bool)
    keep[:1] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    keep |= a == 10
    return s if keep.all() else a[keep].tobytes().decode("utf-32-le")


def _group1(m: re.Match[str]) -> str:
    return m.group(1)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def check_texts(texts, where: str, what: str) -> list[str]:
    """``texts`` unchanged when every element is a str; else name the first that is not."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise fail("texts", where, what, f"{type(t).__name__} at position {i}", describe=False)
    return texts


def _checked_and_cached(text, where: str, cached, uncached):  # type: ignore[no-untyped-def]
    """``text`` checked to be a str, then through the cache when it is short enough.

    Long strings skip the cache: they rarely repeat and would evict the short ones
    (hashtags, names, queries) that do.
    """
    if not isinstance(text, str):
        raise fail("text", where, "a str", text)
    if cached is not None and len(text) <= _CACHE_MAX_LEN:
        return cached(text)
    return uncached(text)
