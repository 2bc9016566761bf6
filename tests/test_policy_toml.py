"""Policy files: round trips, validation with file and key named, no code execution."""

import os

import numpy as np
import pytest
import scipy.sparse as sp

import guardrails as gr
from guardrails.exceptions import PolicyFileError
from guardrails.filters import (
    BlockItems,
    BlockLabeled,
    CohortRule,
    DemoteRisk,
    ExcludePairs,
    RelationshipRule,
    ShareCap,
    SuppressNeighborhood,
    SuppressRisk,
    ViewerCircuitBreaker,
)
from guardrails.policy import Holdback, Policy, default_policy, load_policy, save_policy

NU, NI = 20, 30
HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "policy.toml")


def _every_filter(seed=0):
    rng = np.random.default_rng(seed)
    risk = rng.random(NI).astype(np.float32)
    return [
        BlockItems([1, 2]),
        ExcludePairs(sp.random(NU, NI, density=0.1, format="csr", random_state=seed)),
        SuppressRisk(risk, threshold=0.9),
        DemoteRisk(risk, weight=0.3, knots=[(0.1, 0.0), (1.0, 1.0)], mode="shadow"),
        BlockLabeled(["csam"], labels={"csam": risk > 0.95}, severity=risk, min_severity=0.99),
        SuppressNeighborhood(risk, threshold=0.8, demote_threshold=0.5, seeds=[3]),
        CohortRule(
            rng.integers(-1, 2, NU),
            rng.integers(-1, 2, NI),
            [["allow", "drop"], ["demote", "allow"]],
            viewer_labels=["adult", "minor"],
            candidate_labels=["adult", "minor"],
            unknown_viewer="minor",
        ),
        ViewerCircuitBreaker(
            risk, viewer_risk=rng.random(NU).astype(np.float32), surfaces=["suggested_accounts"]
        ),
        ShareCap(max_share=0.2, communities=rng.integers(-1, 3, NI)),
        RelationshipRule(
            risk > 0.7,
            follows=sp.random(NU, NI, density=0.2, format="csr", random_state=1),
            action="demote",
        ),
    ]


def test_round_trip_preserves_version_and_slates(tmp_path):
    pol = Policy(
        _every_filter(),
        name="everything",
        holdback=Holdback(0.1, salt="s", filters=["demote_risk"]),
    )
    path = tmp_path / "p.toml"
    written = save_policy(pol, path)
    assert written and all(os.path.exists(p) for p in written.values())
    text = path.read_text()
    assert "schema_version = 1" in text and "[[filters]]" in text
    back = load_policy(path)
    assert back.version == pol.version
    assert [s for s in back.settings] == [s for s in pol.settings]
    rng = np.random.default_rng(0)
    model = gr.FactorModel(rng.normal(size=(NU, 4)), rng.normal(size=(NI, 4)))
    ui = sp.random(NU, NI, density=0.1, format="csr", random_state=2, dtype=np.float32)
    a = gr.Guard(model, pol).recommend(np.arange(NU), ui, N=5)
    b = gr.Guard(model, back).recommend(np.arange(NU), ui, N=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_default_policy_round_trips(tmp_path):
    x = sp.random(40, NI, density=0.2, format="csr", random_state=0, dtype=np.float32)
    pol = default_policy(seeds=[0, 1], interactions=x)
    save_policy(pol, tmp_path / "d.toml")
    assert load_policy(tmp_path / "d.toml").version == pol.version


def test_example_policy_loads_with_named_arrays():
    rng = np.random.default_rng(0)
    data = {
        "risk": rng.random(NI).astype(np.float32),
        "viewer_cohorts": rng.integers(0, 3, NU),
        "candidate_cohorts": rng.integers(-1, 2, NI),
    }
    pol = load_policy(EXAMPLE, data=data)
    assert pol.name == "example" and len(pol) == 6
    assert pol["block_csam"].protected and pol.settings[0].failure == "fail_closed"
    assert pol.holdback.filters == ("demote_risk",)
    with pytest.raises(
        PolicyFileError, match=r"'filters\[1\]\.risk' key of policy file .*policy\.toml"
    ):
        load_policy(EXAMPLE, data={})


def _write(tmp_path, text):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return p


GOOD = 'schema_version = 1\n[[filters]]\ntype = "suppress_risk"\nrisk = "risk"\nthreshold = 0.5\n'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD + "colour = 3\n", "filters[0].colour"),
        ("schema_version = 1\nextra = 1\n", "extra"),
        ("schema_version = 99\n", "schema_version"),
        ('schema_version = "1"\n', "schema_version"),
        ("name = 'x'\n", "schema_version"),
        (GOOD.replace("0.5", '"high"'), "filters[0].threshold"),
        (GOOD.replace("suppress_risk", "os.system"), "filters[0].type"),
        (GOOD.replace('"risk"\n', '"../../etc/passwd.npy"\n'), "filters[0].risk"),
        (GOOD.replace('"risk"\n', '"nope"\n'), "filters[0].risk"),
        (
            'schema_version = 1\n[holdback]\nfraction = 0.1\nsalt = "s"\nfilters = ["x"]\nwho = 1\n',
            "holdback.who",
        ),
        ('schema_version = 1\nmode = "loud"\n', "bad.toml"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path, text, key):
    p = _write(tmp_path, text)
    with pytest.raises(PolicyFileError) as info:
        load_policy(p, data={"risk": np.zeros(NI, np.float32)})
    msg = str(info.value)
    assert "bad.toml" in msg and key in msg


def test_filter_value_errors_are_policy_file_errors(tmp_path):
    p = _write(tmp_path, GOOD.replace("0.5", "7.0"))
    with pytest.raises(
        PolicyFileError, match=r"filters\[0\].*'threshold' parameter of SuppressRisk"
    ):
        load_policy(p, data={"risk": np.zeros(NI, np.float32)})
    p = _write(tmp_path, "schema_version = [1")
    with pytest.raises(PolicyFileError, match="not valid TOML"):
        load_policy(p)


def test_array_files_never_unpickle(tmp_path):
    np.save(tmp_path / "risk.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    p = _write(tmp_path, GOOD.replace('"risk"\n', '"risk.npy"\n'))
    with pytest.raises(PolicyFileError, match="risk"):
        load_policy(p)
    np.save(tmp_path / "risk.npy", np.zeros(NI, np.float32))
    assert len(load_policy(p)) == 1


@pytest.mark.parametrize("damage", ["empty", "truncated", "zip_version"])
def test_damaged_array_files_are_policy_file_errors(tmp_path, damage):
    import io

    import scipy.sparse as sp

    name = "risk.npy" if damage != "zip_version" else "risk.npz"
    buf = io.BytesIO()
    if name.endswith(".npz"):
        sp.save_npz(buf, sp.csr_matrix(np.ones((1, NI), np.float32)), compressed=False)
    else:
        np.save(buf, np.zeros(NI, np.float32))
    data = buf.getvalue()
    if damage == "empty":
        data = b""
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:  # "version needed to extract" of the first central-directory entry: 21.0
        cd = data.index(b"PK\x01\x02")
        data = data[: cd + 6] + bytes([210, 0]) + data[cd + 8 :]
    (tmp_path / name).write_bytes(data)
    p = _write(tmp_path, GOOD.replace('"risk"\n', f'"{name}"\n'))
    with pytest.raises(PolicyFileError, match="readable array file"):
        load_policy(p)
