"""Benchmark the text guard: Aho-Corasick over normalised keys vs regex and ``str`` search.

Run::

    python benchmarks/bench_text.py                 # 100,000 terms, prints a table
    python benchmarks/bench_text.py --out benchmarks/results/text.md

Everything is measured side by side in one run and reported as medians of ``--repeats``
runs. Terms are generated pseudo-words (seeded); the texts are bios and queries built
from the ``english-words`` list with some terms mixed in. The baselines are *weaker*
than the guard, not just slower: the regex alternation and ``str`` search see raw
lower-cased text, so they miss every obfuscated spelling the guard catches.

* ``regex alternation``: one ``re`` pattern ``\\b(?:t1|t2|...)\\b``. Python's ``re`` is a
  backtracking engine; with 100,000 alternatives the compile alone is slow, so if it
  takes longer than ``--regex-compile-budget`` seconds for the full list the baseline
  falls back to ``--regex-terms`` terms (reported in the table).
* ``str`` search: ``term in text`` for every term and text.

The two baselines are run on samples of the texts (``--regex-sample``, ``--str-sample``)
and reported as throughput, which does not depend on the sample size; the machine is
shared, so absolute numbers are noisy and the ratios are what to read.
"""

from __future__ import annotations

import argparse
import re
import statistics
import string
import sys
import time
from collections.abc import Callable

import numpy as np

from guardrails.text import Normalizer, TermMatcher, extract_links


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_terms(n: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list(string.ascii_lowercase))
    out: set[str] = set()
    while len(out) < n:
        k = int(rng.integers(5, 13))
        out.add("".join(rng.choice(letters, k)))
    return sorted(out)


def make_texts(words: list[str], terms: list[str], n: int, n_words: int,
               rng: np.random.Generator, hit_rate: float = 0.05) -> list[str]:
    texts = []
    for _ in range(n):
        ws = [words[i] for i in rng.integers(0, len(words), n_words)]
        if rng.random() < hit_rate:
            ws[int(rng.integers(0, n_words))] = terms[int(rng.integers(0, len(terms)))]
        texts.append(" ".join(ws))
    return texts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--terms", type=int, default=100_000)
    p.add_argument("--bios", type=int, default=5_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--regex-terms", type=int, default=10_000)
    p.add_argument("--regex-compile-budget", type=float, default=60.0)
    p.add_argument("--str-sample", type=int, default=20)
    p.add_argument("--regex-sample", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=str, default=None)
    args = p.parse_args(argv)

    from english_words import get_english_words_set

    rng = np.random.default_rng(args.seed)
    words = sorted(get_english_words_set(["web2"], lower=True, alpha=True))
    terms = make_terms(args.terms, rng)
    bios = make_texts(words, terms, args.bios, 18, rng)
    queries = make_texts(words, terms, args.queries, 2, rng, hit_rate=0.2)
    bio_mb = sum(len(b.encode()) for b in bios) / 1e6
    query_mb = sum(len(q.encode()) for q in queries) / 1e6
    rows: list[tuple[str, str, str, str]] = []

    # -- build -----------------------------------------------------------------------
    t0 = time.perf_counter()
    matcher = TermMatcher(terms, normalizer=Normalizer(cache_size=0))
    build_s = time.perf_counter() - t0
    norm = matcher.normalizer

    # -- normalisation cost ------------------------------------------------------------
    q_sample = queries[:2000]
    b_sample = bios[:1000]
    t_q_single = _median_time(lambda: [norm.keys(q) for q in q_sample], args.repeats)
    t_b_single = _median_time(lambda: [norm.keys(b) for b in b_sample], args.repeats)
    t_b_batch = _median_time(lambda: norm.keys_many(b_sample), args.repeats)
    cached = Normalizer()
    cached.keys_many(q_sample[:7])  # warm the translation table
    [cached.keys(q) for q in q_sample]
    t_q_cached = _median_time(lambda: [cached.keys(q) for q in q_sample], args.repeats)

    # -- guard: bios (batch) and queries (one at a time, as a search box sees them) ---
    t_bios = _median_time(lambda: matcher.match_many(bios), args.repeats)
    bio_keys = norm.keys_many(bios)
    t_bios_match_only = _median_time(lambda: matcher.match_keys_many(bio_keys), args.repeats)
    t_queries = _median_time(lambda: [matcher.match(q) for q in queries], args.repeats)
    hits = int(np.unique(matcher.match_many(bios)[0]).size)
    rows.append((f"Aho-Corasick + normalisation ({len(terms):,} terms), bios batch",
                 f"{bio_mb / t_bios:.2f}", "", f"{hits} bios hit"))
    rows.append(("Aho-Corasick matching only (keys precomputed), bios batch",
                 f"{bio_mb / t_bios_match_only:.2f}", "", ""))
    rows.append((f"Aho-Corasick + normalisation ({len(terms):,} terms), queries one by one",
                 f"{query_mb / t_queries:.2f}", f"{len(queries) / t_queries:,.0f}", ""))

    # -- links: every word of a bio is checked (and refanged) as a possible link ---------
    t_links = _median_time(lambda: [extract_links(b) for b in bios], args.repeats)
    t_split = _median_time(lambda: [b.split() for b in bios], args.repeats)
    rows.append(("link extraction (`extract_links`, refang included), bios",
                 f"{bio_mb / t_links:.2f}", "",
                 f"{t_links / t_split:.1f}x the time of `str.split` on the same bios"))

    # -- regex alternation ---------------------------------------------------------------
    def compile_regex(ts: list[str]) -> re.Pattern[str]:
        return re.compile(r"\b(?:" + "|".join(map(re.escape, ts)) + r")\b")

    n_regex = len(terms)
    t0 = time.perf_counter()
    try:
        # Probe with a tenth of the list and extrapolate linearly (compile is at least
        # linear); only try the full list if it fits the budget.
        probe = compile_regex(terms[: max(len(terms) // 10, 1)])
        probe_s = time.perf_counter() - t0
        if probe_s * 10 > args.regex_compile_budget:
            raise TimeoutError
        t0 = time.perf_counter()
        pattern = compile_regex(terms)
        regex_compile_s = time.perf_counter() - t0
        del probe
    except (TimeoutError, RecursionError, OverflowError, re.error):
        n_regex = min(args.regex_terms, len(terms))
        t0 = time.perf_counter()
        pattern = compile_regex(terms[:n_regex])
        regex_compile_s = time.perf_counter() - t0
    lower_bios = [b.lower() for b in bios]
    lower_queries = [q.lower() for q in queries]
    regex_repeats = max(1, min(args.repeats, 3))
    rb = lower_bios[: args.regex_sample]
    rq = lower_queries[: args.regex_sample * 5]
    rb_mb = sum(len(b.encode()) for b in rb) / 1e6
    rq_mb = sum(len(q.encode()) for q in rq) / 1e6
    t_rb = _median_time(lambda: [pattern.search(b) for b in rb], regex_repeats)
    t_rq = _median_time(lambda: [pattern.search(q) for q in rq], regex_repeats)
    note = f"{n_regex:,} terms"
    if n_regex != len(terms):
        note += " (full list too slow to compile)"
    rows.append((f"regex alternation, bios ({note})", f"{rb_mb / t_rb:.3f}", "",
                 f"compile {regex_compile_s:.1f} s; sample of {len(rb)} bios"))
    rows.append((f"regex alternation, queries ({note})", f"{rq_mb / t_rq:.3f}",
                 f"{len(rq) / t_rq:,.0f}", f"sample of {len(rq)} queries"))

    # -- plain str search ---------------------------------------------------------------
    sample = lower_bios[: args.str_sample]
    sample_mb = sum(len(b.encode()) for b in sample) / 1e6
    qsample = lower_queries[: args.str_sample * 5]
    t_sb = _median_time(lambda: [[t for t in terms if t in b] for b in sample], regex_repeats)
    t_sq = _median_time(lambda: [[t for t in terms if t in q] for q in qsample], regex_repeats)
    rows.append((f"`term in text` for every term ({len(terms):,}), bios",
                 f"{sample_mb / t_sb:.4f}", "", f"sample of {len(sample)} bios"))
    rows.append((f"`term in text` for every term ({len(terms):,}), queries",
                 f"{sum(len(q.encode()) for q in qsample) / 1e6 / t_sq:.4f}",
                 f"{len(qsample) / t_sq:,.1f}", f"sample of {len(qsample)} queries"))

    lines = [
        f"Text guard benchmark: {len(terms):,} generated terms, {len(bios):,} bios "
        f"({bio_mb:.2f} MB), {len(queries):,} queries ({query_mb:.2f} MB); medians of "
        f"{args.repeats} runs (regex and `str` rows: {regex_repeats}).",
        "",
        f"Automaton build (normalising {len(terms):,} terms included): {build_s:.2f} s.",
        "",
        "| method | MB/s | queries/s | note |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        "Normalisation cost per string (all steps on):",
        "",
        "| input | µs per string |",
        "|---|---:|",
        f"| query (~{np.mean([len(q) for q in q_sample]):.0f} chars), uncached | "
        f"{t_q_single / len(q_sample) * 1e6:.1f} |",
        f"| query, cached (repeat queries) | {t_q_cached / len(q_sample) * 1e6:.2f} |",
        f"| bio (~{np.mean([len(b) for b in b_sample]):.0f} chars), one by one | "
        f"{t_b_single / len(b_sample) * 1e6:.1f} |",
        f"| bio, batch (`keys_many`) | {t_b_batch / len(b_sample) * 1e6:.1f} |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
