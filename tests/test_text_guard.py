"""Matching, links, search verdicts, autocomplete and account tagging."""

from __future__ import annotations

import string

import numpy as np
import pytest

pytest.importorskip("ahocorasick_rs")
pytest.importorskip("idna")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import guardrails.text as gt  # noqa: E402
from guardrails.exceptions import ValidationError  # noqa: E402
from guardrails.text import (  # noqa: E402
    AccountText,
    DomainMatcher,
    DomainRule,
    Term,
    TermMatcher,
    TextGuard,
    normalize_link,
)


@pytest.fixture(scope="module")
def guard() -> TextGuard:
    return TextGuard(
        [
            Term("pedo", category="csam"),
            Term("cp", category="csam"),
            Term("child porn", category="csam", mode="substring"),
            Term("teen", category="age", action="warn", severity=0.4),
            Term("cunt", category="slur", severity=0.5),
        ],
        domains=["badsite.com", DomainRule("evil.org", category="csam", include_subdomains=False)],
    )


# -- matcher -----------------------------------------------------------------------------
def test_scunthorpe_handled_by_token_mode():
    token = TermMatcher([Term("cunt")])
    sub = TermMatcher([Term("cunt", mode="substring")])
    assert token.match("Scunthorpe United").size == 0
    assert token.match("you c.u.n.t").tolist() == [0]
    assert sub.match("Scunthorpe United").tolist() == [0]


def test_benign_word_list_false_positives():
    english_words = pytest.importorskip("english_words")
    words = sorted(english_words.get_english_words_set(["web2"], lower=True, alpha=True))
    terms = ["cunt", "sex", "porn", "pedo", "cp", "loli", "nude", "teen", "rape"]
    norm = gt.Normalizer(cache_size=0)
    token = TermMatcher(terms, normalizer=norm)
    sub = TermMatcher([Term(t, mode="substring") for t in ["cunt", "porn", "pedo", "nude", "rape"]],
                      normalizer=norm)
    keys = norm.keys_many(words)
    token_fp = {words[i] for i in token.match_keys_many(keys)[0]} - set(terms)
    sub_fp = {words[i] for i in sub.match_keys_many(keys)[0]} - set(terms)
    # Token mode: only lossy-key collisions with the term itself (e.g. "ten" ~ "teen"
    # after squeezing, "pom" ~ "porn" by the rn/m confusable), far under 0.01 %.
    assert len(token_fp) / len(words) < 1e-4
    # Substring mode pays for catching run-together hashtags with Scunthorpe hits.
    assert len(sub_fp) > 20 * max(len(token_fp), 1)
    assert "scunthorpe" not in token_fp


def test_terms_sharing_a_key_are_all_reported():
    m = TermMatcher([Term("pedo", category="a"), Term("P3D0", category="b"), "other"])
    assert m.match("pedo").tolist() == [0, 1]


def test_match_many_maps_matches_back_to_texts():
    m = TermMatcher(["cat", "the cat", Term("dogfood", mode="substring")])
    texts = ["the cat sat", "", "cat", "mydogfoodbowl", "concatenate", "c a t"]
    doc, term = m.match_many(texts)
    assert list(zip(doc.tolist(), term.tolist(), strict=True)) == [
        (0, 0), (0, 1), (2, 0), (3, 2), (5, 0),
    ]
    assert doc.dtype == np.int64 and term.dtype == np.int64
    for i, t in enumerate(texts):  # the single-text fast path agrees with the batch
        assert m.match(t).tolist() == term[doc == i].tolist()


def test_match_many_windows_agree_with_one_pass(monkeypatch):
    import guardrails.text.matcher as matcher_mod

    m = TermMatcher(["cat", "the cat", Term("dogfood", mode="substring")])
    texts = ["the cat sat", "cat", "mydogfoodbowl", "x the cat"] * 3
    want = m.match_many(texts)
    monkeypatch.setattr(matcher_mod, "_CHUNK_CHARS", 5)
    got = m.match_many(texts)
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_terms_that_could_never_match_are_refused():
    with pytest.raises(ValidationError, match="normalised key is not empty"):
        TermMatcher(["ok", "!!!"])
    with pytest.raises(ValidationError, match="use mode='token' for short terms"):
        TermMatcher([Term("cp", mode="substring")])
    with pytest.raises(ValidationError, match="'severity' parameter of Term"):
        Term("x", severity=0)
    with pytest.raises(ValidationError, match="'mode' parameter of Term"):
        Term("x", mode="regex")
    with pytest.raises(ValidationError, match="'terms' parameter of TermMatcher"):
        TermMatcher("pedo")  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_nested_terms_on_adversarial_text_stay_linear():
    # Keys nested 10 deep over a repetitive 200k-character text: Aho-Corasick time is
    # text length times nesting depth, never exponential like a backtracking regex.
    m = TermMatcher([Term("ab" * k, mode="substring") for k in range(2, 12)] + ["(a+)+$"])
    doc, term = m.match_many(["ab" * 100_000, "aaaaaaaaaaaaaaaaaaaaaaaaaaaa!"])
    assert set(term[doc == 0].tolist()) == set(range(10))
    assert m.match("(a+)+$ literally").tolist() == [10]  # a term is a literal, not a regex


@pytest.mark.timeout(60)
def test_very_long_bio_gets_a_verdict(guard):
    bio = "hello world " * 200_000 + " p3d0 "
    assert guard.scan(bio, field="bio").blocked


# -- links -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "link",
    [
        "badsite.com",
        "https://WWW.BadSite.COM./path?q=1",
        "http://user:pw@badsite.com:8080/x",
        "sub.badsite.com",
        "b\u0430dsite.com",  # Cyrillic a: different punycode, same look-alike key
        "(badsite.com)",
    ],
)
def test_blocked_domain_variants_match(link):
    m = DomainMatcher(["badsite.com"])
    _, hits, _ = m.match(link)
    assert hits == [0]


def test_idna_and_subdomain_rules():
    assert normalize_link("https://B\u00fccher.DE.").host == "xn--bcher-kva.de"
    m = DomainMatcher(
        [DomainRule("b\u00fccher.de"), DomainRule("evil.org", include_subdomains=False)]
    )
    assert m.match("xn--bcher-kva.de/x")[1] == [0]
    assert m.match("evil.org")[1] == [1]
    assert m.match("a.evil.org")[1] == []
    assert m.match("notevil.org")[1] == []
    assert m.match("bit.ly/abc")[2] is True


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8),
                    min_size=1, max_size=3),
    tld=st.sampled_from(["com", "org", "net", "de"]),
    upper=st.booleans(), www=st.booleans(), dot=st.booleans(),
    scheme=st.sampled_from(["", "http://", "https://", "HTTPS://"]),
    path=st.sampled_from(["", "/", "/a/b?c=d#e", ":443/x"]),
    sub=st.sampled_from(["", "m.", "cdn.a."]),
)
def test_url_normalisation_property(labels, tld, upper, www, dot, scheme, path, sub):
    domain = ".".join(labels + [tld])
    m = DomainMatcher([domain])
    host = sub + domain
    if www:
        host = "www." + host
    if upper:
        host = host.upper()
    if dot:
        host += "."
    assert m.match(f"{scheme}{host}{path}")[1] == [0]


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8),
                    min_size=1, max_size=3),
    tld=st.sampled_from(["com", "org", "net"]),
    data=st.data(),
    scheme=st.sampled_from(["", "hxxp://", "hXXps[://]", "http[:]//", "HXXPS://"]),
    path=st.sampled_from(["", "[/]x", "/a?b=c"]),
)
def test_defanged_links_match_their_rule(labels, tld, data, scheme, path):
    domain = ".".join(labels + [tld])
    m = DomainMatcher([domain])
    parts = labels + [tld]
    dots = data.draw(st.lists(st.sampled_from([".", "[.]", "(.)", "{.}", "[dot]", "(DOT)"]),
                              min_size=len(parts) - 1, max_size=len(parts) - 1))
    host = parts[0] + "".join(d + p for d, p in zip(dots, parts[1:], strict=True))
    link = f"{scheme}{host}{path}"
    assert m.match(link)[1] == [0]
    assert gt.extract_links(f"dm me at {link} today") == [link]


def test_a_defanged_link_in_text_is_blocked(guard):
    v = guard.scan("new stuff at hxxps://www[.]evil(dot)org[/]menu, ask me")
    assert v.action == "block"
    assert any(m.kind == "domain" and m.category == "csam" for m in v.matches)


def test_spaced_dot_is_not_a_link_and_refang_is_exact():
    # A bare "dot" is an ordinary word: "example dot com" stays text, not a link.
    assert gt.extract_links("the dot com era and example dot com") == []
    assert gt.refang("Example[.]COM") == "example.com"
    assert gt.refang("no links here") == "no links here"
    with pytest.raises(ValidationError, match="'token' parameter of refang"):
        gt.refang(b"example[.]com")


def test_malformed_links_are_reported_not_ignored(guard):
    v = guard.scan("see http://[::1 and ex_ample.com")
    kinds = {m.kind for m in v.matches}
    assert "malformed_link" in kinds
    assert v.action == "warn"


# -- search verdicts ---------------------------------------------------------------------
def test_query_verdicts(guard):
    v = guard.query("\u03c13d0 pics")
    assert v.action == "block" and v.blocked and not v.show_results
    assert "pedo" in v.matched_terms
    assert any("pedo" in r for r in v.reasons)
    assert guard.query("pedometer").action == "allow"
    assert guard.query("teen fashion").action == "warn"
    assert guard.query("teen fashion").show_results
    assert not guard.query("teen fashion").show_suggestions
    assert guard.query("see https://badsite.com").blocked
    assert guard.query("hello").reasons == ()


def test_blocked_query_returns_no_results(guard):
    accounts = ["acct1", "acct2"]
    assert guard.filter_results("#c.p", accounts) == []
    assert guard.filter_results("hiking", accounts) == accounts


def test_too_long_query_fails_closed(guard):
    v = guard.query("a" * (guard.max_query_length + 1))
    assert v.blocked and v.matches[0].kind == "too_long"


def test_bad_query_type(guard):
    with pytest.raises(ValidationError, match="'query' parameter of TextGuard.query must be a str"):
        guard.query(None)  # type: ignore[arg-type]


def test_no_suggestions_into_blocked_terms(guard):
    cands = ["pedometer", "pedo pics", "peaches", "p3d0", "teen stuff", "pe badsite.com"]
    assert guard.filter_suggestions("pe", cands) == ["pedometer", "peaches"]
    assert guard.filter_suggestions("pe", cands, max_action="warn") == [
        "pedometer", "peaches", "teen stuff",
    ]
    assert guard.filter_suggestions("pedo", ["pedometer", "peaches"]) == []


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=8), st.text(max_size=10))
def test_suggestions_never_contain_a_blocked_term(guard, cands, prefix):
    kept = guard.filter_suggestions(prefix, cands + ["buy cp", "childporn4u"])
    assert all(not guard.query(c).blocked for c in kept)
    assert "buy cp" not in kept and "childporn4u" not in kept


# -- account tagging ---------------------------------------------------------------------
def test_tag_accounts_labels_and_seeds(guard):
    accounts = [
        AccountText("a", bio="selling stuff dm me bit.ly/x", hashtags=("#pedo",)),
        AccountText("b", bio="hiking and teen volunteering"),
        {"account_id": "c", "display_name": "\u2102\u2119 shop", "links": ("https://evil.org/",)},
        AccountText("d", bio="nothing here", hashtags=("#scunthorpe",)),
    ]
    res = guard.tag_accounts(accounts)
    assert res.account_ids == ("a", "b", "c", "d")
    by = {(lab.account_id, lab.category): lab for lab in res.labels}
    assert set(by) == {("a", "csam"), ("b", "age"), ("c", "csam")}
    assert by[("a", "csam")].source == "text_match"
    assert "hashtag:term:pedo" in by[("a", "csam")].evidence
    assert "link:domain:evil.org" in by[("c", "csam")].evidence
    assert by[("b", "age")].severity == pytest.approx(0.4)
    assert by[("c", "csam")].confidence == pytest.approx(gt.CONFIDENCE["domain"])
    np.testing.assert_array_equal(res.seeds["csam"], [0, 2])
    assert "age" not in res.seeds  # warn-level evidence is not a seed by default
    assert res.seed_ids("csam") == ["a", "c"]
    warn_seeds = guard.tag_accounts(accounts, seed_action="warn").seeds
    np.testing.assert_array_equal(warn_seeds["age"], [1])
    kinds = {(i, m.kind) for i, m in res.matches}
    assert (0, "shortener") in kinds  # flagged, kept as evidence, not a label


def test_tag_accounts_batch_equals_one_by_one(guard):
    rng = np.random.default_rng(0)
    pool = ["hello", "p3d0", "c p", "teen", "badsite.com", "Scunthorpe", "child-porn", "\u0440edo"]
    accounts = [
        AccountText(i, bio=" ".join(rng.choice(pool, 3)), hashtags=tuple(rng.choice(pool, 2)))
        for i in range(40)
    ]
    batch = guard.tag_accounts(accounts)
    single = [lab for a in accounts for lab in guard.tag_accounts([a]).labels]
    assert sorted(batch.labels, key=repr) == sorted(single, key=repr)


def test_tag_accounts_rejects_bad_records(guard):
    with pytest.raises(ValidationError, match="'hashtags' parameter of AccountText"):
        AccountText(1, hashtags="#one")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="'accounts' parameter of TextGuard.tag_accounts"):
        guard.tag_accounts([42])  # type: ignore[list-item]


def test_public_exports():
    for name in gt.__all__:
        assert hasattr(gt, name), name
