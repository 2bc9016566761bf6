"""Aho-Corasick matching of large term lists against normalised text.

Terms are literal strings, never regular expressions: each is normalised with the same
:class:`~guardrails.text.normalize.Normalizer` as the text, and all keys go into one
Aho-Corasick automaton (the maintained Rust crate ``aho-corasick`` through
``ahocorasick-rs``). Building takes time linear in the total length of the terms and a
scan takes time linear in the text plus the number of matches, whatever the terms are,
so no term and no text can make matching super-linear: there is no regular expression
and no backtracking. Overlapping matches are all reported (a text can hit ``cp`` and
``cp links`` at once), so the number of matches is at most the text length times the
nesting depth of the term list (how many keys can end at one position, at most
``max_term_length``); realistic lists nest a few deep. Long inputs are scanned in
windows, so memory stays bounded too.

Two modes per term:

``"token"``
    The term must cover whole tokens of the text (``" cp "`` inside ``" buy cp now "``),
    so a blocked word inside an innocent one (the Scunthorpe problem) does not match.
    Multi-word terms match consecutive tokens.
``"substring"``
    The term may appear anywhere in the compact key (spaces removed), which also catches
    run-together hashtags (``#buycpnow``) and words split by spaces. Use it only for
    distinctive terms; keys shorter than ``min_substring_length`` are refused.

Every reading of a text (:meth:`~guardrails.text.normalize.Normalizer.readings`: the
skeleton fold, the transliteration folds, both readings of leetspeak symbols at word
edges) is matched, and so is every reading of every term; a text matches a term when any
reading of the one hits any reading of the other.

Spaced-out chunks. A word cut into chunks of a few letters (``b a mfen fen q ua``,
``zor vak``) is neither one token nor, inside a sentence, a substring that substring
mode would see without its neighbours. So a run of consecutive short tokens (at most
``max_chunk_length`` characters each) is also joined into one compact string, and a
token-mode term whose compact key has at least ``min_chunked_length`` characters matches
when it covers consecutive whole chunks of such a run (it must start and end on chunk
boundaries, so ``buy b a mfen fen q ua now`` hits ``bamfenfenqua`` but ``tea m``
never hits ``eam``). Short terms are left out because ordinary sentences are full of
short words whose joins spell other short words; ``docs/text.md`` gives the measured
false-positive rate for the defaults.

Free-standing separators. Tokens cut by punctuation that stands alone (``p . ass``,
``bamfenfen - qua``) are joined too, and every token-mode term, short ones included,
matches across those cuts on whole tokens: ordinary sentences join words with spaces.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .._validation import fail
from ._extra import import_text_extra
from .normalize import GLUE, Normalizer, Reading, check_texts

__all__ = ["Term", "TermMatcher", "ACTIONS", "MODES"]

#: Graded actions, weakest first.
ACTIONS = ("allow", "warn", "block")
#: Matching modes of a term.
MODES = ("token", "substring")
#: Default length bounds of :class:`TermMatcher` (and of the
#: :class:`~guardrails.text.guard.TextGuard` that builds one): shortest substring-term
#: key, shortest word that counts as written in chunks, longest chunk.
MIN_SUBSTRING_LENGTH = 4
MIN_CHUNKED_LENGTH = 5
MAX_CHUNK_LENGTH = 4

_CHUNK_CHARS = 1 << 20  # characters per automaton call
#: Shortest run of spaced single letters read with its edge words apart
#: (:meth:`TermMatcher._edge_keys`).
_EDGE_RUN = 4
#: One-letter words (as keys) that a spaced-out run may take in at its edges ("pass a",
#: "i pass"), and the most of them read apart at each edge.
_ONE_LETTER_WORDS = frozenset("aiu")
_EDGE_MAX_WORDS = 3
_SEP = "\n"  # never inside a key (whitespace becomes spaces), so matches cannot straddle texts


@dataclass(frozen=True)
class Term:
    """One blocked or flagged term.

    Parameters
    ----------
    text : str
        The term as a moderator writes it; it is normalised like the scanned text.
    category : str, default "blocked"
        Label category reported with matches (for example ``"csam_solicitation"``).
    severity : float, default 1.0
        In ``(0, 1]``; carried into labels.
    action : {"block", "warn"}, default "block"
        What a match does to a search query.
    mode : {"token", "substring"}, default "token"
        Whole-token or substring matching (see the module docstring).
    """

    text: str
    category: str = "blocked"
    severity: float = 1.0
    action: str = "block"
    mode: str = "token"

    def __post_init__(self) -> None:
        check_rule(self, "text", "Term")
        if self.mode not in MODES:
            raise fail("mode", "Term", "one of 'token', 'substring'", self.mode)


def check_rule(rule, key: str, where: str) -> None:
    """Check the fields a :class:`Term` and a :class:`~guardrails.text.DomainRule` share.

    ``key`` names the rule's own non-blank str field (``"text"``, ``"domain"``); the
    severity is stored back as a float.
    """
    value = getattr(rule, key)
    if not isinstance(value, str) or not value.strip():
        raise fail(key, where, "a non-blank str", value)
    if not isinstance(rule.category, str) or not rule.category:
        raise fail("category", where, "a non-empty str", rule.category)
    sev = rule.severity
    if (
        isinstance(sev, bool)
        or not isinstance(sev, numbers.Real)
        or not np.isfinite(sev)
        or not 0.0 < float(sev) <= 1.0
    ):
        raise fail("severity", where, "a finite float in (0, 1]", sev)
    object.__setattr__(rule, "severity", float(sev))
    if rule.action not in ("block", "warn"):
        raise fail("action", where, "one of 'block', 'warn'", rule.action)


def _as_term(value: object, i: int) -> Term:
    if isinstance(value, Term):
        return value
    if isinstance(value, str):
        return Term(value)
    raise fail(
        "terms",
        "TermMatcher",
        "an iterable of Term or str",
        f"{value!r} at position {i}",
        describe=False,
    )


class TermMatcher:
    """Match many terms at once against normalised text.

    Parameters
    ----------
    terms : iterable of Term or str
        Plain strings become ``Term(text)`` (category ``"blocked"``, token mode, block).
    normalizer : Normalizer, optional
        Shared by terms and text; the default normaliser has every step on.
    min_substring_length : int, default 4
        Shortest compact key accepted for a substring-mode term.
    max_term_length : int, default 256
        Longest key accepted for any term.
    min_chunked_length : int, default 5
        Token-mode terms whose compact key has at least this many characters also match
        when spelled out in chunks (see the module docstring).
    max_chunk_length : int, default 4
        Longest token counted as a chunk.

    Attributes
    ----------
    terms_ : tuple of Term
        The terms, in input order; match results index into it.
    keys_ : tuple of str
        The normalised key of each term (token key, or compact key for substring terms).

    Raises
    ------
    ValidationError
        A term whose key is empty (it could never match: failing open), a substring term
        whose key is too short, or a key over ``max_term_length``.
    """

    def __init__(
        self,
        terms: Iterable[Term | str],
        *,
        normalizer: Normalizer | None = None,
        min_substring_length: int = MIN_SUBSTRING_LENGTH,
        max_term_length: int = 256,
        min_chunked_length: int = MIN_CHUNKED_LENGTH,
        max_chunk_length: int = MAX_CHUNK_LENGTH,
    ) -> None:
        where = "TermMatcher"
        if isinstance(terms, (str, bytes)):
            raise fail("terms", where, "an iterable of Term or str", terms)
        if normalizer is None:
            normalizer = Normalizer()
        elif not isinstance(normalizer, Normalizer):
            raise fail("normalizer", where, "a Normalizer", normalizer)
        for name, value in (
            ("min_substring_length", min_substring_length),
            ("max_term_length", max_term_length),
            ("min_chunked_length", min_chunked_length),
            ("max_chunk_length", max_chunk_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(name, where, "an int in [1, inf)", value)
        self.normalizer = normalizer
        self.min_substring_length = min_substring_length
        self.max_term_length = max_term_length
        self.min_chunked_length = min_chunked_length
        self.max_chunk_length = max_chunk_length

        term_list = tuple(_as_term(t, i) for i, t in enumerate(terms))
        keys: list[str] = []
        token_patterns: dict[str, list[int]] = {}
        sub_patterns: dict[str, list[int]] = {}
        chunk_patterns: dict[str, list[int]] = {}
        glued_patterns: dict[str, list[int]] = {}
        for i, term in enumerate(term_list):
            readings = normalizer.readings(term.text)
            token_key, compact_key, _ = readings[0]
            key = token_key if term.mode == "token" else compact_key
            if not key:
                raise fail(
                    "terms",
                    where,
                    "terms whose normalised key is not empty",
                    f"{term.text!r} (term {i})",
                    describe=False,
                )
            if len(key) > max_term_length:
                raise fail(
                    "terms",
                    where,
                    f"terms whose normalised key has at most {max_term_length} characters",
                    f"{term.text[:40]!r} (term {i}, key length {len(key)})",
                    describe=False,
                )
            if term.mode == "substring" and len(key) < min_substring_length:
                raise fail(
                    "terms",
                    where,
                    f"substring terms whose normalised key has at least "
                    f"{min_substring_length} characters (use mode='token' for short terms)",
                    f"{term.text!r} (term {i}, key {key!r})",
                    describe=False,
                )
            keys.append(key)
            n_letters = sum(map(str.isalnum, term.text))
            for r in readings:
                if term.mode == "token":
                    if r.token:
                        _add(token_patterns, f" {r.token} ", i)
                    # Length in letters as written ("gikka" is five, its key "gika").
                    if n_letters >= min_chunked_length and len(r.compact) <= max_term_length:
                        _add(chunk_patterns, r.compact, i)
                    if r.compact and len(r.compact) <= max_term_length:
                        _add(glued_patterns, r.compact, i)
                elif r.compact:
                    _add(sub_patterns, r.compact, i)
        self.terms_ = term_list
        self.keys_ = tuple(keys)
        self._token = self._build(token_patterns)
        self._sub = self._build(sub_patterns)
        self._chunk = self._build(chunk_patterns)
        self._glued = self._build(glued_patterns)

    @staticmethod
    def _build(patterns: dict[str, list[int]]):  # type: ignore[no-untyped-def]
        if not patterns:
            return None
        ac = import_text_extra("ahocorasick_rs", "Term matching")
        names = list(patterns)
        counts = np.fromiter((len(patterns[p]) for p in names), dtype=np.int64, count=len(names))
        ptr = np.zeros(len(names) + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        idx = np.fromiter(
            (t for p in names for t in patterns[p]), dtype=np.int64, count=int(ptr[-1])
        )
        automaton = ac.AhoCorasick(names, matchkind=ac.MatchKind.Standard)
        return automaton, ptr, idx

    @property
    def n_terms(self) -> int:
        """Number of terms."""
        return len(self.terms_)

    def __len__(self) -> int:
        return len(self.terms_)

    # -- matching ------------------------------------------------------------------------
    def _scan(  # type: ignore[no-untyped-def]
        self, built, haystack: str, starts: np.ndarray, bounds: np.ndarray | None = None
    ) -> np.ndarray:
        """Return the unique ``doc * n_terms + term`` codes of all matches in ``haystack``.

        The haystack is scanned in windows of ``_CHUNK_CHARS`` characters that overlap
        by the longest pattern, so the raw match list of one automaton call stays
        bounded however long the input is; matches seen twice are merged. With
        ``bounds`` (sorted positions in ``haystack``), only matches that start and end
        on one of them count.
        """
        automaton, ptr, idx = built
        width = max(self.n_terms, 1)
        overlap = self.max_term_length + 2
        codes = []
        for w in range(0, max(len(haystack), 1), _CHUNK_CHARS):
            window = haystack[w : w + _CHUNK_CHARS + overlap]
            found = automaton.find_matches_as_indexes(window, overlapping=True)
            if not found:
                continue
            arr = np.asarray(found, dtype=np.int64).reshape(-1, 3)
            if bounds is not None:
                arr = arr[_on(bounds, arr[:, 1] + w) & _on(bounds, arr[:, 2] + w)]
                if not arr.size:
                    continue
            pattern, begin = arr[:, 0], arr[:, 1] + w
            doc = np.searchsorted(starts, begin, side="right") - 1
            # Expand each pattern to the terms sharing its key (CSR rows, vectorized).
            lo, hi = ptr[pattern], ptr[pattern + 1]
            counts = hi - lo
            doc = np.repeat(doc, counts)
            offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(
                np.cumsum(counts) - counts, counts
            )
            term = idx[np.repeat(lo, counts) + offsets]
            codes.append(np.unique(doc * width + term))
        if not codes:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(codes))

    def match_keys_many(self, keys: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """Match pre-computed ``(token_key, compact_key)`` pairs, one reading per text.

        See :meth:`match_many`; chunked spellings are not looked for (a key pair does
        not carry the chunks), use :meth:`match_readings_many` for that.
        """
        return self._match_parts([(t, c, "") for t, c in keys], np.arange(len(keys)))

    def match_readings_many(
        self, readings: Sequence[Sequence[Reading]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Match pre-computed readings (:meth:`Normalizer.readings_many`).

        See :meth:`match_many`.
        """
        parts = [r for rs in readings for r in rs]
        owner = np.repeat(np.arange(len(readings)), [len(rs) for rs in readings])
        return self._match_parts(parts, owner)

    def _match_parts(
        self, parts: Sequence[tuple[str, str, str]], owner: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(parts)
        empty = np.zeros(0, dtype=np.int64)
        if n == 0 or (self._token is None and self._sub is None):
            return empty, empty
        width = max(self.n_terms, 1)
        owner = np.asarray(owner, dtype=np.int64)
        found = []
        # Whole-token matching also reads each spaced-out run with its edge words apart.
        edge = [(i, k) for i, p in enumerate(parts) for k in self._edge_keys(p[2])]
        tokens = [f" {t} " for t, _, _ in parts] + [f" {k} " for _, k in edge]
        token_owner = np.concatenate([owner, owner[[i for i, _ in edge]]]).astype(np.int64)
        for built, hay, who in (
            (self._token, tokens, token_owner),
            (self._sub, [c for _, c, _ in parts], owner),
        ):
            if built is None:
                continue
            lengths = np.fromiter((len(p) + 1 for p in hay), dtype=np.int64, count=len(hay))
            starts = np.zeros(len(hay), dtype=np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            codes = self._scan(built, _SEP.join(hay), starts)
            found.append(who[codes // width] * width + codes % width)
        if self._chunk is not None:
            found.append(self._scan_chunks([p[2] for p in parts], owner))
        if self._glued is not None:
            found.append(self._scan_chunks([p[2] for p in parts], owner, glued=True))
        pairs = np.unique(np.concatenate(found)) if found else empty
        return pairs // width, pairs % width

    def _edge_keys(self, chunk_key: str) -> list[str]:
        """Token keys of one reading with the one-letter words at a spaced-out run's edges apart.

        Spaced single letters are joined into one token (``p a s s`` is ``pass``), and so
        is a one-letter word beside them: ``p a s s a`` ("pass a") reads ``pasa``, which
        no whole-token match of ``pass`` sees. For each run of at least
        :data:`_EDGE_RUN` single letters that starts or ends with one-letter words
        (:data:`_ONE_LETTER_WORDS`), these keys read the run with up to
        :data:`_EDGE_MAX_WORDS` of them at its start, its end or both standing alone, as
        long as three letters are left joined. Each key holds the run and the tokens
        within ``max_term_length`` characters of it (all a whole-token match through the
        run can reach), so the keys of a text are at most 15 times its runs, whatever
        its length. Keys are folded: ``l``, ``1`` and ``|`` are the word ``i`` there, and
        ``4`` and ``@`` the word ``a``; other letters are never split off (``c l a s s``
        does not read ``ass``).
        """
        if self._token is None or " " not in chunk_key:
            return []  # no whole-token terms, or no run
        toks = [t for t in chunk_key.split(" ") if t and t != GLUE]
        single = [len(t) == 1 or t == "rn" for t in toks]  # "m" is "rn" in keys
        squeeze = self.normalizer._squeeze if self.normalizer.squeeze else str
        out: list[str] = []
        for a, b in _true_runs(single):
            if b - a < _EDGE_RUN:
                continue
            lead = next((k for k in range(b - a) if toks[a + k] not in _ONE_LETTER_WORDS), 0)
            trail = next((k for k in range(b - a) if toks[b - 1 - k] not in _ONE_LETTER_WORDS), 0)
            cuts = [
                (a + x, b - y)
                for x in range(min(lead, _EDGE_MAX_WORDS) + 1)
                for y in range(min(trail, _EDGE_MAX_WORDS) + 1)
                if (x or y) and b - y - (a + x) >= _EDGE_RUN - 1
            ]
            if not cuts:
                continue
            left, right = (
                _near(toks, a, -1, self.max_term_length),
                _near(toks, b, 1, self.max_term_length),
            )
            for lo, hi in cuts:
                split = [*toks[a:lo], squeeze("".join(toks[lo:hi])), *toks[hi:b]]
                out.append(" ".join(left + split + right))
        return out

    def _runs(self, chunk_key: str, glued: bool) -> list[tuple[str, set[int]]]:
        """The joined runs of one chunk key that chunked spellings (:func:`_chunk_runs`)
        or, with ``glued``, spellings cut by punctuation alone (:func:`_glued_runs`) are
        matched on."""
        if " " not in chunk_key or (glued and GLUE not in chunk_key):
            return []
        squeeze = self.normalizer.squeeze
        if glued:
            return _glued_runs(chunk_key, squeeze)
        return _chunk_runs(chunk_key, self.max_chunk_length, squeeze)

    def _scan_chunks(
        self, chunk_keys: Sequence[str], owner: np.ndarray, *, glued: bool = False
    ) -> np.ndarray:
        """Codes of the chunked spellings found in runs of short tokens (all texts at once),
        or with ``glued`` of the spellings cut by punctuation alone (:func:`_glued_runs`)."""
        width = max(self.n_terms, 1)
        built = self._glued if glued else self._chunk
        pieces: list[str] = []
        bounds: list[int] = []
        run_starts: list[int] = []
        run_owner: list[int] = []
        pos = 0
        for i, key in enumerate(chunk_keys):
            for joined, cuts in self._runs(key, glued):
                run_starts.append(pos)
                run_owner.append(int(owner[i]))
                bounds.extend(pos + c for c in cuts)
                pieces.append(joined)
                pos += len(joined) + 1
        if not pieces:
            return np.zeros(0, dtype=np.int64)
        codes = self._scan(
            built,
            _SEP.join(pieces),
            np.asarray(run_starts, dtype=np.int64),
            np.unique(np.asarray(bounds, dtype=np.int64)),
        )
        return np.asarray(run_owner, dtype=np.int64)[codes // width] * width + codes % width

    def match_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Match every text of a batch in one automaton pass.

        Every reading of every text is matched (:meth:`Normalizer.readings_many`),
        chunked spellings included.

        Parameters
        ----------
        texts : sequence of str, length n_texts

        Returns
        -------
        text_idx : ndarray of int64, shape (n_matches,)
            Position of the text in ``texts``.
        term_idx : ndarray of int64, shape (n_matches,)
            Index into :attr:`terms_`. Pairs are unique and sorted by text, then term.
        """
        if isinstance(texts, str):
            raise fail("texts", "TermMatcher.match_many", "a sequence of str", texts)
        check_texts(texts, "TermMatcher.match_many", "a sequence of str")
        return self.match_readings_many(self.normalizer.readings_many(texts))

    def match(self, text: str) -> np.ndarray:
        """Return the sorted unique indices (int64) of the terms found in ``text``."""
        if not isinstance(text, str):
            raise fail("text", "TermMatcher.match", "a str", text)
        readings = self.normalizer.readings(text)
        if len(readings[0].token) > _CHUNK_CHARS:
            return self.match_readings_many([readings])[1]
        # One short text (a search query): plain automaton calls, no array set-up.
        found: set[int] = set()
        for token_key, compact_key, chunk_key in readings:
            tokens = [f" {k} " for k in (token_key, *self._edge_keys(chunk_key))]
            for built, hays in ((self._token, tokens), (self._sub, [compact_key])):
                if built is None:
                    continue
                automaton, ptr, idx = built
                for hay in filter(None, hays):
                    for pattern, _, _ in automaton.find_matches_as_indexes(hay, overlapping=True):
                        found.update(idx[ptr[pattern] : ptr[pattern + 1]].tolist())
            for built, glued in ((self._chunk, False), (self._glued, True)):
                if built is None:
                    continue
                automaton, ptr, idx = built
                for joined, cuts in self._runs(chunk_key, glued):
                    for pattern, b, e in automaton.find_matches_as_indexes(
                        joined, overlapping=True
                    ):
                        if b in cuts and e in cuts:
                            found.update(idx[ptr[pattern] : ptr[pattern + 1]].tolist())
        return np.array(sorted(found), dtype=np.int64)


def _true_runs(flags: list[bool]) -> list[tuple[int, int]]:
    """``(start, stop)`` of every maximal run of true values in ``flags``."""
    out = []
    i, n = 0, len(flags)
    while i < n:
        if flags[i]:
            j = i
            while j < n and flags[j]:
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def _near(toks: list[str], start: int, step: int, reach: int) -> list[str]:
    """The tokens beside ``toks[start]`` going ``step`` (-1: before it, in order; 1:
    from it on) up to ``reach`` characters."""
    out: list[str] = []
    k, used = start - 1 if step < 0 else start, 0
    while 0 <= k < len(toks) and used <= reach:
        out.append(toks[k])
        used += len(toks[k]) + 1
        k += step
    return out[::-1] if step < 0 else out


def _add(patterns: dict[str, list[int]], key: str, i: int) -> None:
    ids = patterns.setdefault(key, [])
    if not ids or ids[-1] != i:
        ids.append(i)


def _on(bounds: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Whether each position is one of the sorted ``bounds``."""
    at = np.searchsorted(bounds, pos)
    ok = at < bounds.size
    ok[ok] = bounds[at[ok]] == pos[ok]
    return ok


def _chunk_runs(key: str, max_chunk: int, squeeze: bool) -> list[tuple[str, set[int]]]:
    """Join each run of at least two chunk tokens of ``key`` into one string.

    A chunk is a token of at most ``max_chunk`` letters, or any token next to a single
    letter (``kestoz g o``: single letters were one token each before joining).
    Returns ``(joined, cuts)`` per run, ``cuts`` holding the positions in ``joined``
    where a token starts or ends (where a chunked term may start or end). With
    ``squeeze``, a letter repeated across a join is kept once (``zorv vak`` is
    ``zorvak``, as its key is); the cut then also stands one letter earlier.
    """
    toks = key.split(" ")
    # "m" is spelled "rn" in keys; count it as the one letter it was.
    size = [len(t) - t.count("rn") for t in toks] if "rn" in key else list(map(len, toks))
    n = len(toks)
    ok = [0 < z <= max_chunk for z in size]
    if 1 in size:
        for i in range(n):
            if size[i] == 1:
                if i:
                    ok[i - 1] = True
                if i + 1 < n:
                    ok[i + 1] = True
    if sum(ok) < 2:
        return []
    out: list[tuple[str, set[int]]] = []
    for i, j in _true_runs(ok):
        run = [t for t in toks[i:j] if t != GLUE]
        if len(run) >= 2:
            out.append(_join_run(run, squeeze))
    return out


def _glued_runs(key: str, squeeze: bool) -> list[tuple[str, set[int]]]:
    """Join each run of tokens cut by punctuation alone (``p . ass``, ``bamfenfen - qua``:
    :data:`GLUE` tokens, one or more, between every two) into one string, as
    :func:`_chunk_runs` does. Every token-mode term is matched on these runs, whatever
    its length: a word cut by a free-standing separator is an evasion, where ordinary
    sentences join their words by spaces (which only chunked spellings of longer terms
    may cross)."""
    toks = key.split(" ")
    out: list[tuple[str, set[int]]] = []
    i, n = 0, len(toks)
    while i < n:
        if toks[i] == GLUE:
            i += 1
            continue
        run = [toks[i]]
        while True:
            j = i + 1
            while j < n and toks[j] == GLUE:  # one separator or several (``p . , ass``)
                j += 1
            if j == i + 1 or j >= n:
                break
            run.append(toks[j])
            i = j
        if len(run) >= 2:
            out.append(_join_run(run, squeeze))
        i += 1
    return out


def _join_run(run: list[str], squeeze: bool) -> tuple[str, set[int]]:
    """``(joined, cuts)`` of a run of tokens: see :func:`_chunk_runs`."""
    joined = run[0]
    cuts = {0, len(joined)}
    for t in run[1:]:
        if squeeze and joined:
            k = 0
            while k < len(t) and t[k] == joined[-1]:
                k += 1
            if k:
                cuts.add(len(joined) - 1)
                t = t[k:]
        joined += t
        cuts.add(len(joined))
    return joined, cuts
