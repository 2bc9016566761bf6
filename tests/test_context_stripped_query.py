"""A new account whose every follow is stripped from its query queries as the model's
typical user: its slate is the eligible pool ranked by the model's average preference,
not by account id, or by the Guard's backfill when it has one; batch calls equal single
calls."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.exceptions import ValidationError

NI, NU, K = 60, 40, 6


def _world(seed):
    rng = np.random.default_rng(seed)
    model = gr.FactorModel(rng.normal(size=(NU, K)), rng.normal(size=(NI, K)))
    risk = rng.uniform(0.0, 0.05, NI)
    risky = rng.choice(NI, 8, replace=False)
    risk[risky] = rng.uniform(0.5, 1.0, 8)
    pool = rng.uniform(size=NI) < 0.7
    f = gr.filters.ContextRisk(risk, threshold=0.3, pool=pool, new_viewer_interactions=6)
    return rng, model, risk, risky, pool, f


def _rows(rng, risky, n_rows, n_kept_max):
    """Rows of new accounts: one to three risky follows, and some ordinary ones (0 for
    the rows whose whole query is stripped)."""
    cells = []
    for r in range(n_rows):
        follows = set(rng.choice(risky, int(rng.integers(1, 4)), replace=False).tolist())
        kept = int(rng.integers(0, n_kept_max + 1)) if r % 2 else 0
        follows |= set(rng.choice(NI, kept, replace=False).tolist())
        cells += [(r, c) for c in follows]
    rr, cc = zip(*cells, strict=True)
    return sp.csr_matrix((np.ones(len(rr), np.float32), (rr, cc)), shape=(n_rows, NI))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_rows=st.integers(1, 6),
    N=st.integers(1, 15),
    backfill=st.booleans(),
    demote=st.booleans(),
)
def test_a_fully_stripped_viewer_gets_the_pool_by_the_typical_users_scores(
    seed, n_rows, N, backfill, demote
):
    """Without a backfill the slate is the pool ranked by the typical user's scores
    (minus penalties); with one, by ``backfill - penalty`` then id (its scores). The
    other viewers keep the model's ranking either way."""
    rng, model, risk, risky, pool, f = _world(seed)
    rows = _rows(rng, risky, n_rows, 2)
    filters = [f]
    penalty = np.zeros(NI)
    if demote:
        demoted = rng.uniform(0.0, 0.2, NI)
        filters.append(gr.filters.DemoteRisk(demoted, weight=2.0, curve="step", floor=0.1))
        penalty = np.where(demoted >= 0.1, 2.0, 0.0)
    # Integer fills make ties, which go to the lower id.
    fill = rng.integers(0, 5, NI).astype(np.float64) if backfill else None
    g = gr.Guard(model, gr.Policy(filters), backfill=fill)
    plain = gr.Guard(model, gr.Policy(filters))
    ids, scores = g.recommend(np.arange(n_rows), rows, N=N, recalculate_user=True)
    base_ids, base_scores = plain.recommend(np.arange(n_rows), rows, N=N, recalculate_user=True)
    typical = model.user_factors.astype(np.float64).mean(axis=0).astype(np.float32)
    want_scores = model.item_factors @ typical - penalty
    eligible = pool & (risk < 0.3)
    for r in range(n_rows):
        row = rows[r]
        got = ids[r][ids[r] >= 0]
        # No suppressed id: every item comes from the pool (the risky context trips it).
        assert eligible[got].all()
        # Full slate: as many as the pool has.
        assert got.size == min(N, int(eligible.sum()))
        cand = np.flatnonzero(eligible)
        if np.isin(row.indices, risky).all() and fill is not None:
            key = fill - penalty
            assert np.array_equal(got, cand[np.lexsort((cand, -key[cand]))][: got.size])
            assert np.allclose(scores[r][: got.size], key[got], atol=1e-5)
        elif np.isin(row.indices, risky).all():
            # Every follow is stripped: the slate is the pool's best by the typical user,
            # whatever the accounts' ids.
            best = cand[np.argsort(-want_scores[cand], kind="stable")][: got.size]
            assert np.allclose(np.sort(want_scores[got]), np.sort(want_scores[best]), atol=1e-5)
            assert np.allclose(scores[r][: got.size], want_scores[got], atol=1e-5)
        else:
            assert np.array_equal(got, base_ids[r][base_ids[r] >= 0])
            assert np.array_equal(scores[r][: got.size], base_scores[r][: got.size])
        # Batch equals single.
        one, one_scores = g.recommend(r, row, N=N, recalculate_user=True)
        assert np.array_equal(one, got)
        assert np.array_equal(one_scores, scores[r][: got.size])


def test_implicits_own_empty_query_is_left_as_it_is():
    """A viewer with no interactions at all was not stripped by the policy: the Guard
    scores it as implicit would (a zero query), so an empty policy keeps implicit's
    results."""
    rng, model, risk, risky, pool, f = _world(3)
    g = gr.Guard(model, gr.Policy([f]))
    empty = sp.csr_matrix((1, NI), dtype=np.float32)
    _, scores = g.recommend(0, empty, N=5, recalculate_user=True)
    assert np.all(scores == 0)


def test_the_typical_user_is_the_mean_of_the_user_factors():
    rng, model, *_ = _world(5)
    want = model.user_factors.astype(np.float64).mean(axis=0).astype(np.float32)
    assert np.array_equal(model.typical_user(), want)
    empty = gr.FactorModel(np.zeros((0, K)), model.item_factors)
    assert np.array_equal(empty.typical_user(), np.zeros(K, np.float32))


def _follow_row(rng, risky, n_risky, n_plain):
    """One viewer's follows: ``n_risky`` risky accounts, then ``n_plain`` others."""
    plain_ids = np.setdiff1d(np.arange(NI), risky)
    follows = np.r_[
        rng.choice(risky, n_risky, replace=False), rng.choice(plain_ids, n_plain, replace=False)
    ]
    row = sp.csr_matrix(
        (np.ones(follows.size, np.float32), (np.zeros(follows.size, int), follows)),
        shape=(1, NI),
    )
    return follows, row


def _check_new_account(model, f, uid, row, want, pool, risk):
    """The filter trips the viewer exactly when ``want``; a tripped viewer gets only the
    pool; batch equals single."""
    got = bool(f.risky_context(gr.filters.base.ViewerBatch(np.array([uid]), row, n_rows=1))[0])
    assert got == want
    g = gr.Guard(model, gr.Policy([f]))
    ids, _ = g.recommend(
        np.array([uid, uid]), sp.vstack([row, row]).tocsr(), N=8, recalculate_user=True
    )
    one, _ = g.recommend(uid, row, N=8, recalculate_user=True)
    assert np.array_equal(ids[0][ids[0] >= 0], one) and np.array_equal(ids[0], ids[1])
    if want:
        assert (pool & (risk < 0.3))[one].all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_risky=st.integers(0, 5),
    n_plain=st.integers(0, 30),
    known=st.booleans(),
    sticky=st.booleans(),
)
def test_a_sticky_context_lasts_while_one_in_n_follows_is_risky(
    seed, n_risky, n_plain, known, sticky
):
    """With ``sticky``, an unknown viewer's context stays risky past the new-account count
    while at least one in ``new_viewer_interactions`` of its follows is risky; known
    viewers and the rule without ``sticky`` are as before; a tripped viewer gets only the
    pool, batch equal to single."""
    rng, model, risk, risky, pool, _ = _world(seed)
    nvi = 4
    f = gr.filters.ContextRisk(
        risk,
        threshold=0.3,
        pool=pool,
        new_viewer_interactions=nvi,
        known_viewers=NU,
        sticky=sticky,
    )
    follows, row = _follow_row(rng, risky, n_risky, n_plain)
    uid = 3 if known else NU + 7
    count = follows.size
    want = (not known) and n_risky > 0 and (count <= nvi or (sticky and n_risky * nvi >= count))
    _check_new_account(model, f, uid, row, want, pool, risk)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_risky=st.integers(0, 4),
    n_plain=st.integers(0, 8),
    share=st.sampled_from([0.0, 0.2, 1 / 3, 0.5, 1.0]),
)
def test_a_new_account_is_a_risky_context_from_a_share_of_risky_follows(
    seed, n_risky, n_plain, share
):
    """With ``new_viewer_share`` a new account's follows make its context risky only when
    at least that share of them is risky (0: any one); a tripped viewer gets only the
    pool, batch equal to single."""
    rng, model, risk, risky, pool, _ = _world(seed)
    nvi = 12
    f = gr.filters.ContextRisk(
        risk,
        threshold=0.3,
        pool=pool,
        new_viewer_interactions=nvi,
        new_viewer_share=share,
        known_viewers=NU,
    )
    follows, row = _follow_row(rng, risky, n_risky, n_plain)
    want = n_risky > 0 and n_risky >= share * follows.size
    _check_new_account(model, f, NU + 7, row, want, pool, risk)
    with pytest.raises(ValidationError, match="new_viewer_share"):
        gr.filters.ContextRisk(risk, threshold=0.3, pool=pool, new_viewer_share=1.5)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 12),
    density=st.sampled_from([0.0, 0.05, 0.3]),
    zeros=st.booleans(),
    known=st.sampled_from([None, 0, 5, 100]),
    sticky=st.booleans(),
)
def test_context_reads_the_stored_cells_as_the_sparse_products_did(
    seed, m, density, zeros, known, sticky
):
    # risky_context counts each row's risky non-zero interactions in one pass over the
    # stored cells, and compile_queries reads only the unknown viewers' rows: both equal
    # the sparse products they replace ((ui != 0) @ risky, and diag(unknown) @ ui kept on
    # risky columns), explicit zeros included.
    from guardrails.filters.base import Catalog, ViewerBatch

    rng = np.random.default_rng(seed)
    risk = np.where(rng.random(NI) < 0.2, 0.8, 0.01)
    f = gr.filters.ContextRisk(
        risk,
        threshold=0.3,
        pool=rng.random(NI) < 0.7,
        new_viewer_interactions=4,
        known_viewers=known,
        sticky=sticky,
    )
    ui = sp.random(m, NI, density=density, format="csr", random_state=rng, dtype=np.float32)
    if zeros and ui.nnz:
        ui.data[rng.random(ui.nnz) < 0.3] = 0.0  # explicit zeros stay stored
    viewers = ViewerBatch(rng.integers(0, 10, m).astype(np.int64), ui)
    risky = (risk >= 0.3).astype(np.float32)
    count = np.diff(ui.indptr)
    on_risky = (ui != 0).astype(np.float32) @ risky
    new = count <= 4
    if known is not None:
        unknown = viewers.userids >= known
        new &= unknown
        if sticky:
            new |= unknown & (on_risky * 4 >= count)
    want = new & (on_risky > 0) & (on_risky >= f.new_viewer_share_ * count)
    np.testing.assert_array_equal(f.risky_context(viewers), want)
    rows = f.unknown_viewers(viewers)
    ref = sp.csr_matrix(
        (sp.diags(rows.astype(np.float32)) @ ui != 0).astype(np.float32) @ sp.diags(risky)
    )
    ref.eliminate_zeros()
    got = f.compile_queries(Catalog("items", NI), viewers)
    if not ref.nnz:
        assert got is None
    else:
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.toarray(), ref.toarray())


def test_a_duplicate_interaction_counts_once():
    # A non-canonical user_items given to the filter directly: a cell stored twice is one
    # interaction (summed), for the new-account count and the risky share alike.
    from guardrails.filters.base import ViewerBatch

    risk = np.array([0.9, 0.1, 0.1, 0.1])
    f = gr.filters.ContextRisk(
        risk, threshold=0.5, pool=np.ones(4, bool), new_viewer_interactions=2
    )
    dup = sp.csr_matrix(
        (np.ones(3), np.array([0, 0, 1]), np.array([0, 3])), shape=(1, 4)
    )  # account 0 twice, account 1 once: two follows, one risky
    once = sp.csr_matrix((np.ones(2), np.array([0, 1]), np.array([0, 2])), shape=(1, 4))
    got = f.risky_context(ViewerBatch(np.array([0]), dup))
    np.testing.assert_array_equal(got, f.risky_context(ViewerBatch(np.array([0]), once)))
    assert got.tolist() == [True]


def test_the_backfill_is_checked_for_factor_models():
    """A factor model takes a backfill of one finite score per item, and refuses others."""
    rng, model, *_ = _world(1)
    gr.Guard(model, backfill=np.arange(NI))
    for bad in (np.arange(NI - 1), np.r_[np.arange(NI - 1), np.nan], np.zeros((NI, 1))):
        with pytest.raises(ValidationError, match="backfill"):
            gr.Guard(model, backfill=bad)
