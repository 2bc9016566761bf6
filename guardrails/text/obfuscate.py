"""Generated obfuscations of blocked terms: the text guard's own red-team suite.

Blocklists are attacked by spelling, so the way to know what a :class:`TextGuard`
catches is to spell its terms the way evaders do and count. This module generates
made-up terms and disguised spellings of them, one *class* of trick at a time or three
at once, placed alone, as hashtags or inside ordinary sentences; :func:`evaluate`
reports recall per class. ``benchmarks/bench_text.py --suite`` runs it with false
positives on ordinary English words and sentences beside it (``docs/text.md``).

Classes (:data:`CLASSES`):

``lookalike``
    Letters replaced by look-alikes: every single-code-point confusable of the letter
    in Unicode's ``confusables.txt`` (via ``confusable-homoglyphs``) and
    :data:`EXTRA_LOOKALIKES`, look-alikes that the UTS #39 skeleton does not map to the
    Latin letter (Greek kappa, dotless i, small roman numeral fifty, Cyrillic palochka).
``mixed_script``
    Most letters from one other script (Cyrillic or Greek look-alikes), the rest Latin.
``leetspeak``
    Digits and symbols for letters, at any position, the edges of the word included
    (``8`` for b at the start, ``@`` for a and ``!`` for i at the end).
``invisible``
    Zero-width and other invisible format characters between letters.
``separators``
    Punctuation between letters (``p.e.d.o``, ``p - e - d - o``) or single letters
    spaced out.
``chunks``
    The term cut into chunks of one to four letters separated by spaces
    (``b a mfen fen q ua``).
``accents``, ``combining``
    One accent on some letters; stacks of two to six combining marks ("zalgo").
``repeats``, ``case``
    Letters repeated two to four times; upper case on some or all letters.
``fullwidth``
    Fullwidth, mathematical (bold, fraktur, double-struck, monospace ...) and circled
    letter forms.
``emoji``
    Emoji (skin tones and ZWJ sequences included) between letters.
``bidi``
    Bidirectional controls between letters and around the word.
``mix3``
    Three different classes above applied to one spelling.

The generator draws from a :class:`random.Random`, so Hypothesis (``st.randoms()``) can
drive it in tests and a seed fixes it in benchmarks. Generate terms and tune on one set
of seeds; report on another.
"""

from __future__ import annotations

import random
import string
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .._validation import check_int, fail
from ._data import script_of, skeleton_map
from .normalize import LEET

__all__ = [
    "CLASSES",
    "CONTEXTS",
    "EXTRA_LOOKALIKES",
    "Case",
    "make_terms",
    "obfuscate",
    "place",
    "make_suite",
    "evaluate",
]

#: Classes of obfuscation, in the order they are applied when mixed.
CLASSES = (
    "case",
    "leetspeak",
    "lookalike",
    "mixed_script",
    "fullwidth",
    "accents",
    "combining",
    "repeats",
    "separators",
    "chunks",
    "invisible",
    "emoji",
    "bidi",
    "mix3",
)
#: Where a disguised term is placed.
CONTEXTS = ("alone", "hashtag", "sentence")

#: Look-alikes that the UTS #39 skeleton does not map to the Latin letter they imitate
#: (found by the first run of this suite): Greek kappa, Latin kra and small capital K
#: for k; dotless i, Greek iota and Cyrillic palochka for i and l; small roman numeral
#: fifty and script small l for l.
EXTRA_LOOKALIKES: dict[str, tuple[str, ...]] = {
    "k": ("\u03ba", "\u0138", "\u1d0b", "\u043a"),
    "i": ("\u0131", "\u03b9", "\u04cf", "\u0456"),
    "l": ("\u217c", "\u04c0", "\u04cf", "\u2113"),
    "a": ("\u0251", "\u03b1"),
    "n": ("\u03b7",),
    "u": ("\u03c5",),
    "v": ("\u03bd",),
    "x": ("\u03c7",),
}

_CONSONANTS = "bcdfghjklmnprstvwxz"
_VOWELS = "aeiou"
_ONSETS = [c for c in _CONSONANTS] + ["ch", "sh", "th", "br", "kr", "st", "qu", "z"]
_INVISIBLE = (
    "\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff", "\u2062", "\u2063",
    "\u2064", "\u034f", "\ufe0f", "\ufe00", "\u180e", "\U000e0020", "\U000e0061",
)
_BIDI = (
    "\u200e", "\u200f", "\u061c", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
    "\u2066", "\u2067", "\u2068", "\u2069",
)
_EMOJI = (
    "\U0001f355", "\u2764\ufe0f", "\U0001f44d\U0001f3fd", "\U0001f525", "\u2728",
    "\U0001f608", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f1fa\U0001f1f8",
    "\U0001f48b", "\U0001f51e", "\u2b50", "\U0001f346",
)
_PUNCT = (".", "-", "_", "*", "~", "/", "\\", ",", ":", ";", "'", '"', "^", "\u2022",
          "\u00b7", "\u2026", "=", "#", "%", "&")
_SPACES = (" ", "  ", "\u00a0", "\u3000", "\t", "\u2003")
_COMBINING = tuple(chr(cp) for cp in range(0x300, 0x370) if cp != 0x34F) + tuple(
    chr(cp) for cp in range(0x1DC0, 0x1E00) if unicodedata.category(chr(cp)) == "Mn"
) + tuple(chr(cp) for cp in range(0x20D0, 0x20F1) if unicodedata.category(chr(cp)) == "Mn")
_STYLES = ("FULLWIDTH", "MATHEMATICAL BOLD", "MATHEMATICAL BOLD ITALIC", "MATHEMATICAL FRAKTUR",
           "MATHEMATICAL DOUBLE-STRUCK", "MATHEMATICAL SANS-SERIF BOLD",
           "MATHEMATICAL MONOSPACE", "MATHEMATICAL SCRIPT", "CIRCLED")


def _lookalike_table() -> dict[str, tuple[str, ...]]:
    """Letter → single code points that imitate it (confusables data, both cases)."""
    found: dict[str, set[str]] = {
        c: set(EXTRA_LOOKALIKES.get(c, ())) for c in string.ascii_lowercase
    }
    for source, proto in skeleton_map().items():
        if source.isascii() or unicodedata.category(source)[0] != "L":
            continue
        p = proto.lower()
        if len(p) == 1 and p in found:
            found[p].add(source)
    return {c: tuple(sorted(v)) for c, v in found.items()}


_LOOKALIKES: dict[str, tuple[str, ...]] | None = None


def _lookalikes() -> dict[str, tuple[str, ...]]:
    global _LOOKALIKES
    if _LOOKALIKES is None:
        _LOOKALIKES = _lookalike_table()
    return _LOOKALIKES


_LEET_FOR: dict[str, tuple[str, ...]] = {}
for _sym, _letter in LEET.items():
    _LEET_FOR[_letter] = (*_LEET_FOR.get(_letter, ()), _sym)
# The key folds l into i, so the leetspeak for i stands for l as well.
_LEET_FOR["l"] = _LEET_FOR["i"]


@dataclass(frozen=True)
class Case:
    """One generated test case.

    Attributes
    ----------
    kind : str
        One of :data:`CLASSES`.
    context : str
        One of :data:`CONTEXTS`.
    term : str
        The term that was disguised.
    text : str
        The text to check: it should match ``term``.
    """

    kind: str
    context: str
    term: str
    text: str


def make_terms(n: int, rng: random.Random, *, min_length: int = 5, max_length: int = 12,
               exclude: Iterable[str] = ()) -> list[str]:
    """Made-up pronounceable terms (``zorvak``, ``bamfenfenqua``), distinct and sorted.

    Parameters
    ----------
    n : int
    rng : random.Random
    min_length, max_length : int
        Length range in letters.
    exclude : iterable of str
        Words never to return (for example an English word list, so that a term is
        not an ordinary word).
    """
    check_int(n, "n", "make_terms", low=0)
    check_int(min_length, "min_length", "make_terms", low=2)
    check_int(max_length, "max_length", "make_terms", low=min_length)
    banned = set(exclude)
    out: set[str] = set()
    while len(out) < n:
        target = rng.randint(min_length, max_length)
        word = ""
        while len(word) < target:
            word += rng.choice(_ONSETS) + rng.choice(_VOWELS)
            if rng.random() < 0.4:
                word += rng.choice(_CONSONANTS)
        word = word[:target]
        if word not in banned:
            out.add(word)
    return sorted(out)


# -- the tricks: each edits the letters (units) and the gaps between them ----------------
_Units = list[str]


def _some(rng: random.Random, positions: Sequence[int], *, at_least: int = 1) -> list[int]:
    if not positions:
        return []
    k = rng.randint(min(at_least, len(positions)), len(positions))
    return rng.sample(list(positions), k)


def _t_case(u: _Units, g: _Units, rng: random.Random) -> None:
    style = rng.random()
    letters = [i for i, c in enumerate(u) if c.isascii() and c.isalpha()]
    if style < 0.3:
        chosen = letters
    elif style < 0.5:
        chosen = letters[rng.randint(0, 1)::2]
    else:
        chosen = _some(rng, letters)
    for i in chosen:
        u[i] = u[i].upper()


def _t_leetspeak(u: _Units, g: _Units, rng: random.Random) -> None:
    n = len(u)
    options = [i for i, c in enumerate(u) if c.lower() in _LEET_FOR]
    # Edges first: the hardest places (a symbol there can also be punctuation).
    edges = [i for i in options if i in (0, n - 1)]
    chosen = set(_some(rng, options))
    if edges and rng.random() < 0.5:
        chosen.add(rng.choice(edges))
    for i in chosen:
        u[i] = rng.choice(_LEET_FOR[u[i].lower()])


def _t_lookalike(u: _Units, g: _Units, rng: random.Random) -> None:
    table = _lookalikes()
    options = [i for i, c in enumerate(u) if table.get(c.lower())]
    for i in _some(rng, options):
        u[i] = rng.choice(table[u[i].lower()])


def _t_mixed_script(u: _Units, g: _Units, rng: random.Random) -> None:
    table = _lookalikes()
    script = rng.choice(("CYRILLIC", "GREEK"))
    options = {
        i: [c for c in table.get(ch.lower(), ()) if script_of(c) == script]
        for i, ch in enumerate(u)
    }
    options = {i: cs for i, cs in options.items() if cs}
    keys = sorted(options)
    chosen = [i for i in keys if rng.random() < 0.75] or keys[:1]
    for i in chosen:
        u[i] = rng.choice(options[i])


def _styled(ch: str, style: str) -> str:
    if not (ch.isascii() and ch.isalpha()):
        return ch
    if style == "FULLWIDTH":
        return chr(ord(ch) + 0xFEE0)
    case = "CAPITAL" if ch.isupper() else "SMALL"
    name = f"{style} {case} {ch.upper()}" if style != "CIRCLED" else (
        f"CIRCLED LATIN {case} LETTER {ch.upper()}"
    )
    try:
        return unicodedata.lookup(name)
    except KeyError:  # holes in the mathematical alphabets (they live in Letterlike Symbols)
        return chr(ord(ch) + 0xFEE0)


def _t_fullwidth(u: _Units, g: _Units, rng: random.Random) -> None:
    style = rng.choice(_STYLES)
    chosen = range(len(u)) if rng.random() < 0.5 else _some(rng, range(len(u)))
    for i in chosen:
        u[i] = "".join(_styled(c, style) for c in u[i])


def _t_accents(u: _Units, g: _Units, rng: random.Random) -> None:
    for i in _some(rng, range(len(u))):
        composed = unicodedata.normalize("NFC", u[i] + rng.choice(_COMBINING[:0x70]))
        u[i] = composed


def _t_combining(u: _Units, g: _Units, rng: random.Random) -> None:
    for i in _some(rng, range(len(u))):
        u[i] += "".join(rng.choice(_COMBINING) for _ in range(rng.randint(2, 6)))


def _t_repeats(u: _Units, g: _Units, rng: random.Random) -> None:
    for i in _some(rng, range(len(u))):
        u[i] *= rng.randint(2, 4)


def _t_separators(u: _Units, g: _Units, rng: random.Random) -> None:
    if rng.random() < 0.35:
        space = rng.choice(_SPACES)  # every letter on its own
        for i in range(len(g)):
            g[i] += space
        return
    sep = rng.choice(_PUNCT)
    around = rng.choice(("", "", " "))
    chosen = range(len(g)) if rng.random() < 0.5 else _some(rng, range(len(g)))
    for i in chosen:
        g[i] += around + sep + around


def _t_chunks(u: _Units, g: _Units, rng: random.Random) -> None:
    n = len(u)
    if n < 2:
        return
    cuts: list[int] = []
    pos = 0
    while True:
        pos += rng.randint(1, 4)
        if pos >= n:
            break
        cuts.append(pos)
    if not cuts:
        cuts = [rng.randint(1, n - 1)]
    sep = rng.choice((" ", " ", "  ", " . ", "\u00a0", " - "))
    for c in cuts:
        g[c - 1] += sep


def _t_invisible(u: _Units, g: _Units, rng: random.Random) -> None:
    for i in _some(rng, range(len(g))):
        g[i] += "".join(rng.choice(_INVISIBLE) for _ in range(rng.randint(1, 2)))


def _t_emoji(u: _Units, g: _Units, rng: random.Random) -> None:
    for i in _some(rng, range(len(g))):
        g[i] += rng.choice(_EMOJI)


def _t_bidi(u: _Units, g: _Units, rng: random.Random) -> None:
    for i in _some(rng, range(len(g)), at_least=0):
        g[i] += rng.choice(_BIDI)
    if rng.random() < 0.6:
        u[0] = rng.choice(("\u202e", "\u2067", "\u202b", "\u200f")) + u[0]
        u[-1] += rng.choice(("\u202c", "\u2069", "\u200e"))


_TRICKS: dict[str, Callable[[_Units, _Units, random.Random], None]] = {
    "case": _t_case,
    "leetspeak": _t_leetspeak,
    "lookalike": _t_lookalike,
    "mixed_script": _t_mixed_script,
    "fullwidth": _t_fullwidth,
    "accents": _t_accents,
    "combining": _t_combining,
    "repeats": _t_repeats,
    "separators": _t_separators,
    "chunks": _t_chunks,
    "invisible": _t_invisible,
    "emoji": _t_emoji,
    "bidi": _t_bidi,
}


def obfuscate(term: str, kind: str, rng: random.Random) -> str:
    """One disguised spelling of ``term`` with the tricks of class ``kind``.

    Parameters
    ----------
    term : str
        A term of ASCII letters, possibly several words separated by single spaces
        (each word is disguised on its own).
    kind : str
        One of :data:`CLASSES`.
    rng : random.Random

    Returns
    -------
    str
    """
    if not isinstance(term, str) or not term or not all(
        w.isascii() and w.isalpha() for w in term.split(" ")
    ):
        raise fail("term", "obfuscate", "a str of ASCII letters and single spaces", term)
    if kind not in CLASSES:
        raise fail("kind", "obfuscate", f"one of {', '.join(map(repr, CLASSES))}", kind)
    if kind == "mix3":
        kinds = rng.sample(CLASSES[:-1], 3)
        order = sorted(kinds, key=CLASSES.index)
    else:
        order = [kind]
    words = []
    for word in term.split(" "):
        units = list(word)
        gaps = [""] * (len(units) - 1)
        for k in order:
            _TRICKS[k](units, gaps, rng)
        words.append("".join(u + gap for u, gap in zip(units, gaps + [""], strict=True)))
    return " ".join(words)


def place(variant: str, context: str, rng: random.Random, filler: Sequence[str]) -> str:
    """Put a disguised term in ``context``: alone, as a hashtag, or inside a sentence.

    ``filler`` supplies the ordinary words of sentences.
    """
    if context == "alone":
        return variant
    if context == "hashtag":
        return "#" + variant
    if context != "sentence":
        raise fail("context", "place", f"one of {', '.join(map(repr, CONTEXTS))}", context)
    before = [rng.choice(filler) for _ in range(rng.randint(0, 6))]
    after = [rng.choice(filler) for _ in range(rng.randint(0 if before else 1, 6))]
    end = rng.choice(("", "", ".", "!", "?", ","))
    return " ".join([*before, variant + (end if not after else ""), *after]) + (
        end if after else ""
    )


def make_suite(terms: Sequence[str], rng: random.Random, filler: Sequence[str], *,
               per_term: int = 1, kinds: Sequence[str] = CLASSES,
               contexts: Sequence[str] = CONTEXTS) -> list[Case]:
    """Every class in every context, ``per_term`` disguises of each term."""
    check_int(per_term, "per_term", "make_suite")
    cases = []
    for kind in kinds:
        for context in contexts:
            for term in terms:
                for _ in range(per_term):
                    text = place(obfuscate(term, kind, rng), context, rng, filler)
                    cases.append(Case(kind, context, term, text))
    return cases


def evaluate(found: Callable[[str], Iterable[str]], cases: Sequence[Case]
             ) -> dict[tuple[str, str], tuple[int, int]]:
    """Count the hits per ``(kind, context)``: a case is a hit when its term is found.

    Parameters
    ----------
    found : callable
        ``text -> terms found``, for example
        ``lambda t: guard.query(t).matched_terms``.
    cases : sequence of Case

    Returns
    -------
    dict of (kind, context) to (hits, total)
    """
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for case in cases:
        hit = case.term in set(found(case.text))
        h, t = out.get((case.kind, case.context), (0, 0))
        out[(case.kind, case.context)] = (h + int(hit), t + 1)
    return out
