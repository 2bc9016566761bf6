"""Batch scoring on Dask: identical to the single-process Guard, every user exactly once.

One LocalCluster with 2 single-threaded worker processes serves the whole module. Worker
death is made deterministic: a test filter kills its worker process (``os._exit``) the
first time it sees a chosen user, so the block holding that user dies mid-run while other
blocks are in flight, and is retried by the scheduler.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")
import cloudpickle  # noqa: E402  (a dependency of distributed)
import pandas as pd  # noqa: E402

import guardrails as gr  # noqa: E402
from guardrails.distributed import COLUMNS, MANIFEST_NAME, recommend_all  # noqa: E402
from guardrails.distributed._batch import _items_only  # noqa: E402
from guardrails.exceptions import FailClosedError, ValidationError  # noqa: E402
from guardrails.filters import (  # noqa: E402
    BlockItems,
    ContextRisk,
    DemoteRisk,
    ExcludePairs,
    Filter,
    SuppressRisk,
)

# Test filters below travel to the workers by value (the tests folder is not a package).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(120)


class KillWorkerOnce(Filter):
    """Kills the worker process running the block of ``userid``, once (marker file)."""

    name = "kill_worker_once"

    def __init__(self, userid: int, marker: str):
        self.userid, self.marker, self.client_pid = int(userid), marker, os.getpid()

    def params(self):
        return (self.userid,)

    def compile_viewers(self, catalog, viewers):
        if (
            os.getpid() != self.client_pid
            and viewers.userids is not None
            and self.userid in viewers.userids
        ):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return None
            os.close(fd)
            os._exit(1)
        return None


class FailOnWorker(Filter):
    """Raises FailClosedError on a worker for one user: the error must reach the client."""

    name = "fail_on_worker"

    def __init__(self, userid: int):
        self.userid, self.client_pid = int(userid), os.getpid()

    def params(self):
        return (self.userid,)

    def compile_viewers(self, catalog, viewers):
        if os.getpid() != self.client_pid and self.userid in viewers.userids:
            raise FailClosedError("labels unreadable on the worker")
        return None


def _case(kind: str, seed: int = 0, n_users: int = 300, n_items: int = 60):
    rng = np.random.default_rng(seed)
    ui = sp.random(
        n_users, n_items, density=0.08, format="csr", random_state=seed, dtype=np.float32
    )
    ui.data[:] = 1
    risk = rng.random(n_items).astype(np.float32)
    pairs = sp.random(n_users, n_items, density=0.05, format="csr", random_state=seed + 1)
    policy = [
        BlockItems(rng.choice(n_items, 8, replace=False), reason="csam_seller"),
        ExcludePairs(pairs),
        SuppressRisk(risk, threshold=0.8),
        DemoteRisk(risk, weight=0.5),
    ]
    if kind == "factors":
        model = gr.FactorModel(rng.standard_normal((n_users, 6)), rng.standard_normal((n_items, 6)))
    elif kind == "als":
        import implicit
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            model = implicit.cpu.als.AlternatingLeastSquares(
                factors=6, iterations=2, random_state=seed, num_threads=1
            )
            model.fit(ui, show_progress=False)
    else:
        sim = sp.random(n_items, n_items, density=0.2, format="csr", random_state=seed + 2)
        model = gr.ItemItemModel(sim)
    return gr.Guard(model, policy, num_threads=1), ui


def _dense(df: pd.DataFrame, users: np.ndarray, width: int):
    """The long table back to slate arrays ``(len(users), width)``, padded like the Guard."""
    assert not df.duplicated(["user_id", "rank"]).any(), "a (user, rank) appears twice"
    pos = pd.Series(np.arange(users.size), index=users)
    assert set(df["user_id"]).issubset(set(users.tolist()))
    ids = np.full((users.size, width), -1, dtype=np.int64)
    r = pos.loc[df["user_id"].to_numpy()].to_numpy()
    c = df["rank"].to_numpy() - 1
    ids[r, c] = df["item_id"].to_numpy()
    scores = np.full((users.size, width), -np.inf, dtype=df["score"].dtype)
    scores[r, c] = df["score"].to_numpy()
    return ids, scores


def _assert_same(df, guard, users, ui_rows, N, **kw):
    ref = guard.recommend_detailed(users, ui_rows, N, **kw)
    ids, scores = _dense(df, users, ref.ids.shape[1])
    np.testing.assert_array_equal(ids, ref.ids)
    np.testing.assert_array_equal(scores, ref.scores)
    assert set(df["policy_version"]) <= {ref.policy_version}
    return ref


# ----------------------------------------------------------------------------- identity
@pytest.mark.parametrize(
    ("kind", "kw"),
    [
        ("factors", {}),
        ("factors", {"filter_items": [0, 5, 7]}),
        ("als", {"recalculate_user": True}),
        ("similarity", {"items": list(range(0, 60, 2))}),
    ],
)
def test_identical_to_single_process(client, kind, kw):
    guard, ui = _case(kind)
    users = np.random.default_rng(1).permutation(300)[:250]
    res = recommend_all(guard, users, ui[users], N=12, client=client, block_size=37, **kw)
    assert res.n_users == 250 and res.n_blocks == 7
    df = client.compute(res.frame).result()
    assert list(df.columns) == list(COLUMNS)
    ref = _assert_same(df, guard, users, ui[users], 12, **kw)
    assert res.n_rows == int((ref.ids >= 0).sum()) == len(df)
    assert res.n_short == int((ref.ids < 0).any(axis=1).sum())
    assert res.policy_version == guard.policy_version


def test_short_slates_have_no_padding_rows(client):
    guard, ui = _case("factors", n_items=30)
    users = np.arange(100)
    res = recommend_all(guard, users, ui[users], N=40, client=client, block_size=30)
    df = client.compute(res.frame).result()
    assert (df["item_id"] >= 0).all() and np.isfinite(df["score"]).all()
    assert res.n_short == 100
    _assert_same(df, guard, users, ui[users], 40)


SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 120),
    block=st.integers(1, 50),
    N=st.integers(1, 70),
    in_flight=st.integers(1, 5),
)
def test_any_partition_gives_the_single_process_result(client, seed, n, block, N, in_flight):
    """Safety invariant: every user exactly once, never a suppressed item, equal results."""
    guard, ui = _case("factors", seed=seed, n_users=120, n_items=60)
    users = np.random.default_rng(seed).permutation(120)[:n]
    res = recommend_all(
        guard, users, ui[users], N=N, client=client, block_size=block, max_in_flight=in_flight
    )
    df = client.compute(res.frame).result()
    _assert_same(df, guard, users, ui[users], N)
    blocked = guard.policy.filters[0].ids
    assert not df["item_id"].isin(blocked).any()
    assert res.n_blocks == -(-n // block)


# ----------------------------------------------------------------------------- parquet
def test_parquet_output_manifest_and_rerun(client, tmp_path):
    guard, ui = _case("factors")
    users = np.arange(300)
    out = tmp_path / "recs"
    res = recommend_all(guard, users, ui, N=5, client=client, output=out, block_size=50)
    assert res.frame is None and res.path == str(out)
    files = sorted(os.listdir(out))
    assert files == [MANIFEST_NAME] + [f"part-{b:06d}.parquet" for b in range(6)]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["n_users"] == 300 and manifest["n_rows"] == res.n_rows == len(
        pd.read_parquet(out)
    )
    df = pd.read_parquet(out)
    assert str(df["rank"].dtype) == "int32" and str(df["score"].dtype) == "float32"
    assert df["snapshot_version"].isna().all()
    _assert_same(df, guard, users, ui, 5)

    with pytest.raises(ValidationError, match="previous run"):
        recommend_all(guard, users, ui, N=5, client=client, output=out, block_size=50)
    # a rerun with fewer blocks leaves no stale file behind
    recommend_all(guard, users, ui, N=5, client=client, output=out, block_size=200, overwrite=True)
    assert sorted(os.listdir(out)) == [MANIFEST_NAME, "part-000000.parquet", "part-000001.parquet"]
    _assert_same(pd.read_parquet(out), guard, users, ui, 5)


def test_output_with_foreign_files_is_refused(client, tmp_path):
    guard, ui = _case("factors")
    (tmp_path / "notes.csv").write_text("x")
    with pytest.raises(ValidationError, match="'output' parameter of recommend_all"):
        recommend_all(guard, np.arange(10), ui[:10], client=client, output=tmp_path, overwrite=True)


# ----------------------------------------------------------------------------- failures
@pytest.mark.parametrize("to_parquet", [True, False])
def test_killed_worker_blocks_are_retried_exactly_once(client, tmp_path, to_parquet):
    base, ui = _case("factors", seed=3)
    users = np.random.default_rng(3).permutation(300)
    marker = tmp_path / "killed"
    guard = gr.Guard(
        base.model_, [*base.policy.filters, KillWorkerOnce(users[170], str(marker))], num_threads=1
    )
    client.wait_for_workers(2, timeout=60)
    out = tmp_path / "recs" if to_parquet else None
    res = recommend_all(
        guard, users, ui[users], N=8, client=client, output=out, block_size=20, max_in_flight=4
    )
    assert marker.exists(), "the worker was not killed"
    df = pd.read_parquet(out) if to_parquet else client.compute(res.frame).result()
    assert sorted(set(df["user_id"])) == sorted(users.tolist())
    _assert_same(df, guard, users, ui[users], 8)
    if to_parquet:
        names = os.listdir(out)
        assert not [n for n in names if n.endswith(".tmp")]
        assert len([n for n in names if n.startswith("part-")]) == res.n_blocks == 15
    client.wait_for_workers(2, timeout=60)


def test_task_errors_reach_the_client(client):
    base, ui = _case("factors")
    guard = gr.Guard(base.model_, [*base.policy.filters, FailOnWorker(250)], num_threads=1)
    with pytest.raises(FailClosedError, match="unreadable"):
        recommend_all(guard, np.arange(300), ui, client=client, block_size=50)


# ----------------------------------------------------------------------------- progress, validation
def test_progress_callback(client):
    guard, ui = _case("factors")
    seen = []
    recommend_all(
        guard,
        np.arange(300),
        ui,
        client=client,
        block_size=64,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert len(seen) == 5 and seen[-1] == (300, 300)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_validation(client):
    guard, ui = _case("factors")
    with pytest.raises(ValidationError, match="unique ids"):
        recommend_all(guard, [1, 2, 2], ui[:3], client=client)
    with pytest.raises(ValidationError, match="'guard' parameter"):
        recommend_all(object(), [1], None, client=client)
    with pytest.raises(ValidationError, match="'block_size' parameter"):
        recommend_all(guard, [1], ui[:1], client=client, block_size=0)
    with pytest.raises(ValidationError, match="'user_items'"):
        recommend_all(guard, [1, 2], ui[:3], client=client)
    with pytest.raises(ValidationError, match="'N' parameter"):
        recommend_all(guard, [1], ui[:1], N=0, client=client)
    with pytest.raises(ValidationError, match="'client' parameter"):
        recommend_all(guard, [1], ui[:1], client="tcp://nowhere")
    # no default client: this module's client is not the default
    with pytest.raises(ValidationError, match="'client' parameter"):
        recommend_all(guard, [1], ui[:1])


def test_empty_user_list(client, tmp_path):
    guard, ui = _case("factors")
    res = recommend_all(
        guard, np.array([], dtype=np.int64), ui[:0], client=client, output=tmp_path / "o"
    )
    assert res.n_blocks == 0 and res.n_rows == 0
    assert os.listdir(tmp_path / "o") == [MANIFEST_NAME]


# ----------------------------------------------------------------------------- shipping
def test_item_side_copy_carries_no_user_factors():
    rng = np.random.default_rng(0)
    big = gr.Guard(gr.FactorModel(rng.standard_normal((20_000, 16)), rng.standard_normal((50, 16))))
    shipped = _items_only(big, 1)
    # One row: the typical user, what a viewer whose whole query is stripped scores by.
    assert shipped.model_.user_factors.shape == (1, 16)
    np.testing.assert_array_equal(shipped.model_.typical_user(), big.model_.typical_user())
    assert shipped.policy_version == big.policy_version and shipped.num_threads == 1
    assert len(cloudpickle.dumps(shipped)) < big.model_.user_factors.nbytes / 20


def test_item_side_copy_of_implicit_model_drops_users():
    guard, _ = _case("als")
    shipped = _items_only(guard, 1)
    assert shipped.model.user_factors.shape[0] == 1 and guard.model.user_factors.shape[0] == 300
    np.testing.assert_array_equal(shipped.model_.typical_user(), guard.model_.typical_user())


def test_viewers_whose_whole_query_is_stripped_match_single_process(client):
    """New accounts whose every follow is a risky context query as the model's typical
    user on the workers exactly as in one process."""
    guard, ui = _case("als")
    rng = np.random.default_rng(4)
    risk = rng.random(60).astype(np.float32)
    risky = np.flatnonzero(risk >= 0.7)
    ctx = ContextRisk(risk, threshold=0.7, pool=risk < 0.3, new_viewer_interactions=3)
    guard = gr.Guard(guard.model, [*guard.policy.filters, ctx], num_threads=1)
    rows = ui[:80].tolil()
    for r in range(0, 80, 2):
        rows.rows[r] = sorted(rng.choice(risky, 2, replace=False).tolist())
        rows.data[r] = [1.0, 1.0]
    rows = sp.csr_matrix(rows, dtype=np.float32)
    users = np.arange(80)
    res = recommend_all(
        guard, users, rows, N=8, client=client, block_size=23, recalculate_user=True
    )
    df = client.compute(res.frame).result()
    ref = _assert_same(df, guard, users, rows, 8, recalculate_user=True)
    # The stripped rows get the pool, not the lowest ids at score 0.
    assert (ref.scores[::2, 0] != 0).all()


def test_blocks_score_with_their_own_user_factors():
    """A block ships only its users' factor rows; the Guard scores with exactly those."""
    rng = np.random.default_rng(3)
    model = gr.FactorModel(rng.standard_normal((10, 4)), rng.standard_normal((30, 4)))
    guard = gr.Guard(model, [BlockItems([1, 2])])
    ids = np.array([7, 3, 9])
    full = guard.recommend_detailed(ids, None, 5, False)
    block = guard.recommend_detailed(ids, None, 5, False, user_factors=model.user_factors[ids])
    np.testing.assert_array_equal(full.ids, block.ids)
    np.testing.assert_array_equal(full.scores, block.scores)
    with pytest.raises(ValidationError, match="user_factors"):
        guard.recommend_detailed(ids, None, 5, False, user_factors=model.user_factors[:2])
    with pytest.raises(ValidationError, match="user_factors"):
        guard.recommend_detailed(
            ids, sp.csr_matrix((3, 30)), 5, True, None, True, user_factors=model.user_factors[ids]
        )
