"""Normalisation: every obfuscation of a blocked term must still match."""

from __future__ import annotations

import string
import unicodedata

import pytest

pytest.importorskip("ahocorasick_rs")
pytest.importorskip("confusable_homoglyphs")

from confusable_homoglyphs.confusables import confusables_data  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from guardrails.exceptions import ValidationError  # noqa: E402
from guardrails.text import (  # noqa: E402
    LEET,
    Normalizer,
    Term,
    TermMatcher,
    is_mixed_script,
    mixed_script_tokens,
)
from guardrails.text._data import skeleton_map  # noqa: E402

NORM = Normalizer()

# Blocked stand-in terms (ASCII words); every letter of the alphabet appears.
TERMS = [
    "pedo", "child", "minor", "trade", "links", "vids", "jailbait", "quickly", "zebra",
    "wax", "fog", "hymn", "cp",
]
MULTI = ["child trade", "minor links"]

# Data for the generators, all from packages, never typed here.
_LRM = "\u200e"


def _homoglyphs(letter: str) -> list[str]:
    protos = [letter, letter.upper()] + (["rn"] if letter == "m" else [])
    out = []
    for p in protos:
        for entry in confusables_data.get(p, []):
            c = entry["c"].replace(_LRM, "")
            if len(c) == 1:
                out.append(c)
    return sorted(set(out))


HOMOGLYPHS = {c: _homoglyphs(c) for c in string.ascii_lowercase}
LEET_FOR = {c: sorted(k for k, v in LEET.items() if v == c) for c in string.ascii_lowercase}
LEET_FOR["l"] = sorted(set(LEET_FOR["l"]) | set(LEET_FOR["i"]))  # i and l share a key
INVISIBLE = [chr(cp) for cp in range(0x10000) if unicodedata.category(chr(cp)) == "Cf"] + [
    "\ufe0f", "\ufe00", "\u034f", "\U000e0041",
]
COMBINING = [chr(cp) for cp in range(0x300, 0x370)]
SEPARATORS = list(".-_*~/\\,:;'\"^") + [
    "\U0001f355", "\u2764\ufe0f", "\U0001f44d\U0001f3fd", "\u2022",
]


@st.composite
def obfuscated(draw, word: str, *, allow_edge_symbols: bool = False) -> str:
    """One obfuscated spelling of ``word``: each letter gets one or more tricks."""
    pieces = []
    n = len(word)
    for i, ch in enumerate(word):
        options = ["plain", "upper", "homoglyph"]
        leet = [s for s in LEET_FOR[ch] if s.isalnum() or (i < n - 1 and (s != "@" or i > 0))]
        if leet:
            options.append("leet")
        how = draw(st.sampled_from(options))
        if how == "upper":
            c = ch.upper()
        elif how == "homoglyph" and HOMOGLYPHS[ch]:
            c = draw(st.sampled_from(HOMOGLYPHS[ch]))
        elif how == "leet":
            c = draw(st.sampled_from(leet))
        else:
            c = ch
        c = c * draw(st.integers(1, 3))  # repeated letters
        if draw(st.booleans()):
            c += draw(st.sampled_from(COMBINING))  # accents
        pieces.append(c)
        if i < n - 1:
            between = draw(st.sampled_from(["", "invisible", "separator", "both"]))
            if between in ("invisible", "both"):
                pieces.append(draw(st.sampled_from(INVISIBLE)))
            if between in ("separator", "both"):
                pieces.append(draw(st.sampled_from(SEPARATORS)))
    if draw(st.booleans()):
        # Mathematical / fullwidth styles (NFKC) on the whole word.
        style = draw(st.sampled_from([0x1D400 - 0x61, 0xFF41 - 0x61]))
        pieces = [
            "".join(chr(ord(c) + style) if c in string.ascii_lowercase else c for c in p)
            for p in pieces
        ]
    return "".join(pieces)


TOKEN_MATCHER = TermMatcher(TERMS + MULTI)
SUB_MATCHER = TermMatcher([Term(t, mode="substring") for t in TERMS if len(NORM.compact(t)) >= 4])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), idx=st.integers(0, len(TERMS) - 1))
def test_every_obfuscated_variant_matches_in_token_mode(data, idx):
    term = TERMS[idx]
    variant = data.draw(obfuscated(term))
    text = f"buy {variant} now"
    found = {TOKEN_MATCHER.terms_[i].text for i in TOKEN_MATCHER.match(text)}
    assert term in found, (variant, NORM.keys(text), NORM.key(term))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), idx=st.integers(0, len(SUB_MATCHER.terms_) - 1),
       left=st.text(string.ascii_lowercase, max_size=6),
       right=st.text(string.ascii_lowercase, max_size=6))
def test_every_obfuscated_variant_matches_in_substring_mode(data, idx, left, right):
    term = SUB_MATCHER.terms_[idx].text
    variant = data.draw(obfuscated(term))
    text = f"#{left}{variant}{right}"
    found = {SUB_MATCHER.terms_[i].text for i in SUB_MATCHER.match(text)}
    assert term in found, (variant, NORM.compact(text), NORM.compact(term))


@settings(max_examples=30, deadline=None)
@given(data=st.data(), idx=st.integers(0, len(MULTI) - 1))
def test_multi_word_terms_survive_obfuscation(data, idx):
    words = MULTI[idx].split()
    variant = " \u200b ".join(data.draw(obfuscated(w)) for w in words)
    found = {TOKEN_MATCHER.terms_[i].text for i in TOKEN_MATCHER.match(f"new {variant}!!")}
    assert MULTI[idx] in found


@settings(max_examples=30, deadline=None)
@given(idx=st.integers(0, len(TERMS) - 1), sep=st.sampled_from([" ", "  ", " . ", "\u3000"]))
def test_spaced_out_letters_match(idx, sep):
    term = TERMS[idx]
    assert term in {TOKEN_MATCHER.terms_[i].text for i in TOKEN_MATCHER.match(sep.join(term))}


def test_all_confusables_of_ascii_letters_fold_to_the_letter():
    # Exhaustive over the package's data: no look-alike of a Latin letter escapes.
    for letter, glyphs in HOMOGLYPHS.items():
        want = NORM.compact(f"a{letter}a")
        bad = [g for g in glyphs if NORM.compact(f"a{g}a") != want]
        assert not bad, (letter, bad)


def test_skeleton_map_is_idempotent_and_data_driven():
    table = skeleton_map()
    assert len(table) > 5000
    assert table["\u0430"] == "a"  # Cyrillic a
    assert all(ch not in table for target in table.values() for ch in target)


# -- each step can be switched off, and then that trick is no longer undone --------------
STEP_CASES = {
    "nfkc": ("\uff50\uff45\uff44\uff4f", "pedo"),  # fullwidth
    "casefold": ("PEDO", "pedo"),
    "ignorables": ("pe\u200bdo", "pedo"),
    "confusables": ("p\u0435do", "pedo"),  # Cyrillic e
    "diacritics": ("p\u00e9do", "pedo"),
    "leetspeak": ("p3do", "pedo"),
    "separators": ("pe.do", "pedo"),
    "emoji": ("pe\U0001f355do", "pedo"),
    "squeeze": ("peeedo", "pedo"),
    "transliterate": ("\u03bae\u0131d", "keid"),  # Greek kappa, dotless i
}


def _compacts(norm: Normalizer, text: str) -> set[str]:
    return {r.compact for r in norm.readings(text)}


@pytest.mark.parametrize("step", Normalizer.STEPS)
def test_each_step_does_its_job_and_can_be_turned_off(step):
    tricked, plain = STEP_CASES[step]
    assert Normalizer().compact(plain) in _compacts(Normalizer(), tricked)
    # Transliteration undoes accents, compatibility forms and look-alikes by itself, so
    # it goes off too when another step is tested alone.
    off = Normalizer(**{step: False, "transliterate": False})
    assert off.compact(plain) not in _compacts(off, tricked)
    off = Normalizer(**{step: False})
    assert off.config()[step] is False


def test_bad_normalizer_arguments():
    with pytest.raises(ValidationError, match="'casefold' parameter of Normalizer must be a bool"):
        Normalizer(casefold=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="'text' parameter of Normalizer.keys must be a str"):
        NORM.keys(b"bytes")  # type: ignore[arg-type]


def test_capital_i_for_l_and_case_are_both_handled():
    assert NORM.key("CHILD") == NORM.key("chiId") == NORM.key("ch1ld") == NORM.key("child")


def test_symbol_leet_only_inside_words():
    assert NORM.key("$ex") == NORM.key("sex")
    assert NORM.key("p@ss") == NORM.key("pass")
    assert NORM.key("sale!") == NORM.key("sale")
    assert NORM.key("@user") == NORM.key("user")
    # "$" ending a word after a letter is an "s"; other symbols there stay punctuation.
    assert NORM.key("pa$$") == NORM.key("pass")
    assert NORM.key("pa$$!") == NORM.key("pass")
    assert NORM.key("bo$$ man") == NORM.key("boss man")
    assert NORM.key("$$$") == ""
    assert NORM.key("a $ b") == NORM.key("a b")


# -- malformed and hostile input --------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=80))
def test_any_unicode_gives_a_valid_key(text):
    token, compact = NORM.keys(text)
    token.encode("utf-8")  # no lone surrogates survive
    assert token == token.strip() and "  " not in token and "\n" not in token
    assert " " not in compact
    TOKEN_MATCHER.match(text)  # and the automaton accepts it


def test_lone_surrogates_and_controls_are_dropped():
    assert NORM.key("pe\ud800do") == "pedo"
    assert NORM.key("pe\x00do\x07x") == "pe do x"


@pytest.mark.timeout(60)
def test_very_long_input_is_linear_not_a_hang():
    text = ("p\u200b3\u0301d\u043e " + "x" * 50 + " ") * 20000  # ~1.2 M characters
    token, _ = NORM.keys(text)
    assert token.count("pedo") == 20000


def test_mixed_script_is_its_own_signal():
    assert mixed_script_tokens("hello p\u0430ypal") == ["p\u0430ypal"]
    assert is_mixed_script("\u0397ello")  # Greek capital eta + Latin
    assert not is_mixed_script("plain ascii words")
    assert not is_mixed_script("\u043f\u0440\u0438\u0432\u0435\u0442 hello")  # scripts per token
    assert not is_mixed_script("\u6771\u4eacTokyo\u3068")  # Han + Latin + Hiragana is allowed
    assert is_mixed_script("pa\u200by\u0440al")  # invisible characters cannot hide a mix


@settings(max_examples=50, deadline=None)
@given(st.text("abmnr i\u00e9\u0430", max_size=120))
def test_array_and_regex_post_processing_agree(text):
    # Long strings take a numpy path, short ones regular expressions: same keys.
    folded = " ".join(text.translate(NORM._table).split())
    assert NORM._post_numpy(folded) == NORM._post_regex(folded)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text("abmnr .i\u00e9\u0430\n\u200b3@", max_size=90), min_size=8, max_size=20))
def test_batch_keys_equal_single_keys(texts):
    fresh = Normalizer(cache_size=0)
    assert fresh.keys_many(texts) == [fresh.keys(t) for t in texts]
