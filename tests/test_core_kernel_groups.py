"""Several viewer groups in one kernel call equal one call per group, bit for bit.

Each group has its own plan (hard mask and penalty over the catalogue, as a policy's
cohort or circuit-breaker variant has); the shared call runs on the union of the groups'
eligible items with one group's penalty folded in, and must return, for every row, the
ids and scores that a call on the row's own group space returns: same eligible items,
same exact scores, same tie-break, whatever the chunking, tiling, threads and selection
backend.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from worlds import KERNEL_BACKENDS, draw_factors

from guardrails.core.kernel import (
    FactorSpace,
    RowGroups,
    SimilaritySpace,
    guarded_topk,
)
from guardrails.exceptions import ValidationError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def grouped(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m = draw(st.integers(1, 14))
    n = draw(st.integers(1, 240))
    d = draw(st.integers(1, 5))
    G = draw(st.integers(1, 4))
    Q, V, _ = draw_factors(draw, rng, m, n, d)
    base = rng.random(n) < draw(st.sampled_from([0.0, 0.2]))
    base_pen = None
    if draw(st.booleans()):
        base_pen = (rng.random(n) * 2.0).astype(np.float32)
    hards, pens = [], []
    for _ in range(G):
        h = base | (rng.random(n) < draw(st.sampled_from([0.0, 0.1, 0.5, 0.97])))
        hards.append(h)
        kind = draw(st.sampled_from(["same", "none", "more", "ties", "sparse"]))
        if kind == "same":
            p = base_pen
        elif kind == "none":
            p = None
        elif kind == "more":
            p = (rng.random(n) * draw(st.sampled_from([0.5, 10.0]))).astype(np.float32)
            if base_pen is not None:
                p = (base_pen.astype(np.float64) + p).astype(np.float32)
        elif kind == "ties":
            p = rng.integers(0, 3, n).astype(np.float32)
        else:
            # Non-zero only where the group never looks: its own space folds nothing.
            p = np.where(h, np.float32(3.0), np.float32(0.0)).astype(np.float32)
        pens.append(p)
    of_row = rng.integers(0, G, m).astype(np.int64)
    vm = sp.random(m, n, density=draw(st.sampled_from([0.0, 0.2])), format="csr", random_state=rng)
    vp = sp.random(m, n, density=draw(st.sampled_from([0.0, 0.3])), format="csr", random_state=rng)
    if draw(st.booleans()):
        vp.data = (vp.data - 0.5) * 4.0  # boosts as well as penalties
    call = rng.choice(n, size=n // 8, replace=False) if draw(st.booleans()) else None
    restrict = (
        np.sort(rng.choice(n, size=rng.integers(1, n + 1), replace=False))
        if draw(st.booleans())
        else None
    )
    folded = draw(st.integers(0, G - 1))
    return dict(
        Q=Q, V=V, hards=hards, pens=pens, of_row=of_row, vm=vm, vp=vp, call=call,
        restrict=restrict, folded=folded, m=m, n=n, G=G,
    )  # fmt: skip


def _shared_space(p, width):
    hard = np.logical_and.reduce(p["hards"])  # eligible for some group
    return FactorSpace.build(
        p["V"],
        hard_mask=hard,
        penalty=p["pens"][p["folded"]],
        restrict=p["restrict"],
        block_width=width,
    )


def _per_group(p, N, width, **kw):
    ids = np.full((p["m"], N), -1, dtype=np.int64)
    scores = np.full((p["m"], N), -np.inf, dtype=np.float32)
    for g in range(p["G"]):
        rows = np.flatnonzero(p["of_row"] == g)
        if rows.size == 0:
            continue
        own = FactorSpace.build(
            p["V"],
            hard_mask=p["hards"][g],
            penalty=p["pens"][g],
            restrict=p["restrict"],
            block_width=width,
        )
        ids[rows], scores[rows] = guarded_topk(
            own,
            p["Q"][rows],
            N,
            call_mask=p["call"],
            viewer_masks=[p["vm"][rows]],
            viewer_penalties=[p["vp"][rows]],
            **kw,
        )
    return ids, scores


@SETTINGS
@given(
    p=grouped(),
    N=st.integers(1, 12),
    width=st.integers(1, 8),
    block_rows=st.sampled_from([1, 3, 1000]),
    threads=st.sampled_from([1, 2]),
    tile=st.sampled_from([0, None, 4, 16, 64]),
    backend=st.sampled_from(KERNEL_BACKENDS),
)
def test_one_call_for_all_groups_equals_one_call_per_group(
    p, N, width, block_rows, threads, tile, backend
):
    kw = dict(block_rows=block_rows, num_threads=threads, tile_items=tile, backend=backend)
    want_ids, want_scores = _per_group(p, N, width, **kw)
    groups = RowGroups(p["of_row"], tuple(p["hards"]), tuple(p["pens"]))
    ids, scores = guarded_topk(
        _shared_space(p, width),
        p["Q"],
        N,
        call_mask=p["call"],
        viewer_masks=[p["vm"]],
        viewer_penalties=[p["vp"]],
        groups=groups,
        **kw,
    )
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    # Nothing a row's own group excludes comes out, and slates are full when they can be.
    allowed = np.zeros(p["n"], dtype=bool)
    allowed[p["restrict"] if p["restrict"] is not None else slice(None)] = True
    if p["call"] is not None:
        allowed[p["call"]] = False
    vm = p["vm"].toarray() != 0
    for r in range(p["m"]):
        ok = allowed & ~p["hards"][p["of_row"][r]] & ~vm[r]
        got = ids[r][ids[r] >= 0]
        assert ok[got].all()
        # Every eligible item scores finitely here (finite factors and penalties).
        assert got.size == min(N, int(ok.sum()))


@SETTINGS
@given(p=grouped(), N=st.integers(1, 8), tile=st.sampled_from([0, 4, 16]))
def test_a_row_gets_the_same_slate_alone_or_in_a_grouped_batch(p, N, tile):
    space = _shared_space(p, 4)
    groups = RowGroups(p["of_row"], tuple(p["hards"]), tuple(p["pens"]))
    kw = dict(block_rows=3, num_threads=1, tile_items=tile)
    ids, scores = guarded_topk(
        space, p["Q"], N, call_mask=p["call"], viewer_masks=[p["vm"]],
        viewer_penalties=[p["vp"]], groups=groups, **kw,
    )  # fmt: skip
    for r in range(p["m"]):
        one = RowGroups(p["of_row"][[r]], groups.hard_masks, groups.penalties)
        i1, s1 = guarded_topk(
            space, p["Q"][[r]], N, call_mask=p["call"], viewer_masks=[p["vm"][[r]]],
            viewer_penalties=[p["vp"][[r]]], groups=one, **kw,
        )  # fmt: skip
        np.testing.assert_array_equal(i1[0], ids[r])
        np.testing.assert_array_equal(s1[0], scores[r])


def test_groups_need_a_factor_space_and_one_group_per_row():
    V = np.eye(4, dtype=np.float32)
    space = FactorSpace.build(V)
    groups = RowGroups(np.zeros(3, dtype=np.int64), (None,), (None,))
    with pytest.raises(ValidationError, match="'groups' parameter"):
        guarded_topk(space, np.ones((2, 4), dtype=np.float32), 2, groups=groups)
    sim = SimilaritySpace.build(sp.identity(4, format="csr"))
    with pytest.raises(ValidationError, match="factor spaces only"):
        guarded_topk(sim, sp.identity(4, format="csr")[:3], 2, groups=groups)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("tile", [0, 8])
def test_a_group_lifted_above_the_folded_penalty_is_not_pruned(backend, tile):
    # The folded penalty sinks the low-norm items (100) that the second group does not
    # penalise at all, and lifts nothing it sinks (9.5 on the high-norm items): only the
    # group's largest offset in the bounds keeps the fused path from skipping the tiles
    # that hold its best items.
    V = np.r_[np.full(8, 10.0), np.linspace(0.5, 1.0, 56)].astype(np.float32)[:, None]
    folded = np.r_[np.zeros(8), np.full(56, 100.0)].astype(np.float32)
    second = np.r_[np.full(8, 9.5), np.zeros(56)].astype(np.float32)
    Q = np.ones((2, 1), dtype=np.float32)
    groups = RowGroups(np.array([0, 1]), (None, None), (folded, second))
    space = FactorSpace.build(V, penalty=folded, block_width=1)
    ids, scores = guarded_topk(
        space, Q, 1, groups=groups, tile_items=tile, num_threads=1, backend=backend
    )
    assert ids.tolist() == [[0], [63]]
    assert scores[1, 0] == np.float32(1.0)
