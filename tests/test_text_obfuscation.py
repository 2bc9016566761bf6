"""The generated obfuscation suite: every class caught, readings, chunks, hostile input."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("ahocorasick_rs")
pytest.importorskip("confusable_homoglyphs")
pytest.importorskip("anyascii")

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from guardrails.exceptions import ValidationError  # noqa: E402
from guardrails.text import (  # noqa: E402
    AccountText,
    Normalizer,
    Reading,
    Term,
    TermMatcher,
    TextGuard,
)
from guardrails.text import obfuscate as obf  # noqa: E402

# Terms from the generator itself (seed 7: neither a tuning nor a reporting seed of the
# benchmark); plus the issue's examples.
TERMS = obf.make_terms(60, random.Random(7)) + ["pass", "zorvak", "bamxyz", "bamfenfenqua",
                                                 "bamfenzorsol"]
GUARD = TextGuard(TERMS)
FILLER = ["the", "a", "buy", "new", "cheap", "links", "in", "bio", "now", "dm", "me", "for",
          "more", "pics", "of", "today", "i", "is", "to", "so", "good", "very", "tonight"]
_RELAXED = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _found(text: str) -> set[str]:
    return set(GUARD.query(text).matched_terms)


@pytest.mark.parametrize("kind", obf.CLASSES)
@settings(max_examples=25, **_RELAXED)
@given(rnd=st.randoms(use_true_random=False), idx=st.integers(0, len(TERMS) - 1),
       context=st.sampled_from(obf.CONTEXTS))
def test_every_class_of_obfuscation_is_caught(kind, rnd, idx, context):
    term = TERMS[idx]
    # Chunks are matched only for terms of min_chunked_length letters or more (the
    # matcher's module docstring says why): "p ass" is not "pass", by design. A mix of
    # three classes can chunk too: the three it draws are the generator's first draw.
    state = rnd.getstate()
    mixed = rnd.sample(obf.CLASSES[:-1], 3) if kind == "mix3" else [kind]
    rnd.setstate(state)
    assume("chunks" not in mixed or len(term) >= GUARD.matcher.min_chunked_length)
    text = obf.place(obf.obfuscate(term, kind, rnd), context, rnd, FILLER)
    assert term in _found(text), (kind, text, GUARD.normalizer.readings(text))


@settings(max_examples=25, **_RELAXED)
@given(rnd=st.randoms(use_true_random=False), idx=st.integers(0, len(TERMS) - 1))
def test_batch_tagging_catches_what_queries_catch(rnd, idx):
    term = TERMS[idx]
    kind = rnd.choice(obf.CLASSES)
    bio = obf.place(obf.obfuscate(term, kind, rnd), "sentence", rnd, FILLER)
    tag = obf.obfuscate(term, rnd.choice(obf.CLASSES), rnd)
    accounts = [AccountText("x", bio="nothing to see"), AccountText("u", bio=bio),
                AccountText("v", hashtags=("#" + tag,))] * 4  # a batch: the array path
    res = GUARD.tag_accounts(accounts)
    seeded = set(res.seed_ids("blocked"))
    # The batch's array path flags exactly the accounts whose texts a single query flags
    # (recall itself is the per-class test's job; short terms cut into chunks are a known gap).
    expected = {k for k, text in (("u", bio), ("v", "#" + tag)) if _found(text)}
    assert seeded == expected


def test_issue_examples():
    assert _found("pa$$") == {"pass"}
    assert _found("zorv@k") == {"zorvak"}
    assert _found("8amxyz") == {"bamxyz"}
    assert _found("b a mfen fen q ua") == {"bamfenfenqua"}
    assert _found("#b a m fe nz o rs o l") == {"bamfenzorsol"}
    assert _found("dm me b a mfen fen q ua tonight") == {"bamfenfenqua"}
    assert _found("zorva\u03ba") == {"zorvak"}  # Greek kappa
    assert _found("sale!") == set()
    assert GUARD.query("sale! everything must go").action == "allow"


def test_lookalikes_the_skeleton_misses():
    m = TermMatcher(["kilo", "lilt"])
    assert m.match("\u03bai\u217co").tolist() == [0]  # Greek kappa, small roman numeral fifty
    assert m.match("k\u0131lo").tolist() == [0]  # dotless i
    assert m.match("\u04c0i\u04cft").tolist() == [1]  # Cyrillic palochka, both cases
    assert m.match("\u0138ilo").tolist() == [0]  # Latin kra
    assert m.match("\u0417\u043e\u0440\u0432\u0430\u043a").size == 0  # unrelated Cyrillic
    phonetic = TermMatcher(["zorvak"])
    assert phonetic.match("\u0437\u043e\u0440\u0432\u0430\u043a").tolist() == [0]  # зорвак


def test_leetspeak_at_word_edges_is_read_both_ways():
    norm = Normalizer()
    assert [r.token for r in norm.readings("zorv@k!")] == ["zorvak", "zorvaki"]
    assert {r.token for r in norm.readings("u+!")} == {"u", "uti", "ut"}
    assert {r.token for r in norm.readings("@rnxyz")} >= {"rnxyz", "arnxyz"}
    # A symbol standing alone among spaced letters is a letter in the eager reading.
    assert norm.compact("pass") in {r.compact for r in norm.readings("p @ s s")}
    # The first reading is the cautious one and equals keys().
    for text in ["sale!", "@user hi", "pa$$!", "hi ! there", "p@ss"]:
        assert norm.readings(text)[0][:2] == norm.keys(text)
    # Plain text has one reading.
    assert len(norm.readings("an ordinary sentence")) == 1


def test_chunks_must_cover_whole_tokens_and_long_terms():
    m = TermMatcher(["eamxy", "pedo"])
    assert m.match("te am xy").size == 0  # "eamxy" would start inside the chunk "te"
    assert m.match("e am xy").tolist() == [0]
    assert m.match("pe do").size == 0  # four letters: too short to join chunks
    assert m.match("p e d o").tolist() == [1]  # single letters are still joined
    assert m.match("ea . mxy").tolist() == [0]  # a token of punctuation glues
    short = TermMatcher(["eamxy"], min_chunked_length=6)
    assert short.match("e am xy").size == 0
    with pytest.raises(ValidationError, match="'min_chunked_length' parameter of TermMatcher"):
        TermMatcher(["x"], min_chunked_length=0)
    with pytest.raises(ValidationError, match="'max_chunk_length' parameter of TermMatcher"):
        TermMatcher(["x"], max_chunk_length=True)  # type: ignore[arg-type]


def test_a_free_standing_separator_glues_terms_of_any_length():
    """``p . ass`` is ``pass`` cut by a separator with spaces around it (the generator's
    "separators" class): every token-mode term matches across such cuts, short ones and
    tokens longer than a chunk included; plain spaces still join only chunked spellings
    of long terms, and a glued match must cover whole tokens."""
    m = TermMatcher(["pass", "bamfenfenqua"])
    for text in ["p . ass", "pa - ss", "p . a . ss", "buy p . ass now", "bamfenfen - qua",
                 "p . . ass", "p - , ass"]:  # fmt: skip
        assert m.match(text).size == 1, text
        assert m.match_many([text, "filler"])[0].tolist() == [0], text  # batch == single
    for text in ["p as s", "pa ss", "compass . now", "bypass - x", "p . ast"]:
        assert m.match(text).size == 0, text
        assert m.match_many([text])[0].size == 0, text


@settings(max_examples=60, **_RELAXED)
@given(
    idx=st.integers(0, len(TERMS) - 1),
    before=st.lists(st.sampled_from("aiu"), max_size=3),
    after=st.lists(st.sampled_from("aiu"), max_size=3),
    words=st.sampled_from([("", ""), ("buy", ""), ("", "now"), ("dm", "me")]),
)
def test_spaced_letters_beside_one_letter_words_are_caught(idx, before, after, words):
    """``p a s s a`` is "pass a": the one-letter word joins the spaced-out run
    (``pasa``). Up to three one-letter words (a, i, u) at either edge are read apart,
    single calls and batches alike."""
    term = TERMS[idx]
    spaced = " ".join(term)
    text = " ".join(w for w in (words[0], *before, spaced, *after, words[1]) if w)
    assert term in _found(text), text
    m = TermMatcher([term])
    assert m.match(text).tolist() == [0], text
    assert m.match_many(["filler", text])[0].tolist() == [1], text


def test_only_one_letter_words_are_read_apart_from_a_spaced_run():
    m = TermMatcher(["ass", "pass", "ped"])
    for text in ["c l a s s", "x p a s s", "p a s s x", "b y p a s s", "i p e d o"]:
        assert m.match(text).size == 0, text
        assert m.match_many([text])[0].size == 0, text
    assert m.match("p a s s a").tolist() == [1]
    # Runs without edge words cost nothing and hide nothing; a long text is read near
    # its runs only, and a batch reads it as a single call does.
    decoys = " ok ".join(["b c d e"] * 20) + " ok p a s s a"
    assert m.match(decoys).tolist() == [1]
    long_text = decoys + " and more ordinary words" * 5_000 + " buy i p a s s"
    assert m.match(long_text).tolist() == [1]
    assert m.match_many(["x", long_text])[0].tolist() == [1]


def test_ordinary_sentences_with_free_standing_separators_stay_clean():
    """Separators standing between ordinary words ("paris - london", "yes . no") join
    them for matching: with the suite's made-up terms that spells none of them."""
    english_words = pytest.importorskip("english_words")
    words = sorted(english_words.get_english_words_set(["web2"], lower=True, alpha=True))
    rng = random.Random(12)
    guard = TextGuard(obf.make_terms(300, rng, exclude=words))
    short = [w for w in words if len(w) <= 4]
    seps = [" - ", " . ", " , ", " / ", " & ", " | ", " . . "]
    sentences = []
    for _ in range(2000):
        ws = [rng.choice(short) if rng.random() < 0.5 else rng.choice(words)
              for _ in range(rng.randint(4, 14))]  # fmt: skip
        text = ws[0]
        for w in ws[1:]:
            text += (rng.choice(seps) if rng.random() < 0.5 else " ") + w
        sentences.append(text)
    doc, _ = guard.matcher.match_many(sentences)
    assert doc.size <= 4  # the benchmark's 0.1 % ceiling, as for sentences without them


def test_ordinary_sentences_stay_clean():
    english_words = pytest.importorskip("english_words")
    words = sorted(english_words.get_english_words_set(["web2"], lower=True, alpha=True))
    rng = random.Random(11)
    terms = obf.make_terms(300, rng, exclude=words)
    guard = TextGuard(terms)
    short = [w for w in words if len(w) <= 4]
    sentences = [
        " ".join(rng.choice(short) if rng.random() < 0.5 else rng.choice(words)
                 for _ in range(rng.randint(4, 14)))
        for _ in range(2000)
    ]
    doc, _ = guard.matcher.match_many(sentences + rng.sample(words, 2000))
    assert doc.size <= 4  # the benchmark's 0.1 % ceiling


@settings(max_examples=40, **_RELAXED)
@given(st.lists(st.text(st.sampled_from("ab m.r@$!| \u03ba\u0430\u200b_\u00e9\u2022"),
                        max_size=40), min_size=8, max_size=16))
def test_batch_readings_equal_single_readings(texts):
    fresh = Normalizer(cache_size=0)
    assert fresh.readings_many(texts) == [fresh.readings(t) for t in texts]
    m = TermMatcher(["abrab", "rnarn", "ab ab"], normalizer=fresh)
    doc, term = m.match_many(texts)
    pairs = {(int(d), int(t)) for d, t in zip(doc, term, strict=True)}
    assert pairs == {(i, int(t)) for i, text in enumerate(texts) for t in m.match(text)}


@settings(max_examples=60, **_RELAXED)
@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=120))
def test_malformed_text_never_raises(text):
    for reading in Normalizer().readings(text):
        assert isinstance(reading, Reading)
        for key in reading:
            key.encode("utf-8")  # no lone surrogates survive
    GUARD.query(text)
    GUARD.scan(text)
    GUARD.tag_accounts([AccountText(1, bio=text, hashtags=(text,))] * 9)


@pytest.mark.timeout(120)
def test_huge_and_control_laden_text():
    junk = "\ud800\x00\x07\u202e zo\u200brv@k \x1b[31m " * 20000  # ~500 k characters
    assert "zorvak" in set(GUARD.scan(junk).matched_terms)
    assert GUARD.query(junk).action == "block"  # too long: fail closed
    chunks = "b a mfen fen q ua " * 30000
    assert "bamfenfenqua" in set(GUARD.scan(chunks).matched_terms)


def test_non_str_input_raises_validation_error():
    norm = Normalizer()
    for call in (lambda: norm.readings(b"x"), lambda: norm.readings_many(["a", 3]),
                 lambda: GUARD.query(None), lambda: GUARD.scan(5),
                 lambda: GUARD.matcher.match_many(["a", b"b"])):
        with pytest.raises(ValidationError):
            call()
    rnd = random.Random(0)
    with pytest.raises(ValidationError, match="'kind' parameter of obfuscate"):
        obf.obfuscate("term", "nope", rnd)
    with pytest.raises(ValidationError, match="'term' parameter of obfuscate"):
        obf.obfuscate("t3rm", "case", rnd)
    with pytest.raises(ValidationError, match="'context' parameter of place"):
        obf.place("term", "nowhere", rnd, ["a"])


def test_generator_is_deterministic_and_covers_the_issue_lookalikes():
    a = obf.make_suite(TERMS[:5], random.Random(3), FILLER)
    b = obf.make_suite(TERMS[:5], random.Random(3), FILLER)
    assert a == b and len(a) == 5 * len(obf.CLASSES) * len(obf.CONTEXTS)
    table = obf._lookalikes()
    for letter, glyph in [("k", "\u03ba"), ("i", "\u0131"), ("l", "\u217c"), ("l", "\u04c0")]:
        assert glyph in table[letter]
    counts = obf.evaluate(lambda t: [], a)
    assert all(hits == 0 and total == 5 for hits, total in counts.values())
    terms = obf.make_terms(50, random.Random(1), min_length=6, max_length=8)
    assert len(set(terms)) == 50 and all(6 <= len(t) <= 8 for t in terms)


def test_transliteration_can_be_switched_off():
    off = Normalizer(transliterate=False)
    assert off.config()["transliterate"] is False
    assert len(off.readings("zorva\u03ba")) == 1
    assert TermMatcher(["zorvak"], normalizer=off).match("zorva\u03ba").size == 0
    assert TermMatcher([Term("zorvak")]).match("zorva\u03ba").tolist() == [0]
