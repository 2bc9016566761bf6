"""Policy files: any names a policy may hold survive save_policy -> load_policy.

Category names are TOML *keys* (``labels = { "<category>" = ... }``) and filter names,
reasons and surfaces are strings: non-ASCII letters, quotes, backslashes, control
characters, dots and slashes must all round-trip, and the array files written beside the
policy must stay inside its data directory whatever the names.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrails.filters import BlockItems, BlockLabeled
from guardrails.policy import Policy, load_policy, save_policy

NI = 12
# Any text but surrogates (not encodable as UTF-8) and NUL, which TOML strings cannot hold
# unescaped; tomli-w escapes the rest.
names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=12,
)
fixed = st.sampled_from(["catégorie", "儿童安全", "a.b", "a/b", "../x", 'q"uote', "back\\slash"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cats=st.lists(st.one_of(fixed, names), min_size=1, max_size=3, unique=True),
    reason=st.one_of(fixed, names),
    surface=st.one_of(fixed, names),
    seed=st.integers(0, 2**16),
)
def test_policy_files_round_trip_any_names(cats, reason, surface, seed):
    rng = np.random.default_rng(seed)
    labels = {c: rng.random(NI) < 0.3 for c in cats}
    pol = Policy(
        [
            BlockLabeled(cats[:1], labels=labels, reason=reason, surfaces=[surface]),
            BlockItems(rng.choice(NI, 3, replace=False), reason=reason),
        ],
        name=reason,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "policy.toml")
        written = save_policy(pol, path)
        data_dir = os.path.realpath(os.path.join(tmp, "policy.data"))
        for f in written.values():
            assert os.path.realpath(f).startswith(data_dir + os.sep), f
        # Nothing but the file and its data directory: no temporary file left behind.
        assert sorted(os.listdir(tmp)) == ["policy.data", "policy.toml"]
        back = load_policy(path)
    assert back.version == pol.version
    assert back.name == pol.name
    assert back.settings == pol.settings
    got = back.filters[0]
    assert set(got.labels) == set(cats)
    for c in cats:
        np.testing.assert_array_equal(np.asarray(got.labels[c]), labels[c])
    assert back.filters[1].reason == reason


def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    import guardrails.policy._file as policy_file

    old = Policy([BlockItems([1, 2], reason="first")], name="old")
    path = tmp_path / "p.toml"
    save_policy(old, path)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(policy_file.os, "fsync", disk_full)
    new = Policy([BlockItems([3], reason="catégorie")], name="new")
    try:
        save_policy(new, path)
    except OSError:
        pass
    else:  # pragma: no cover - the patched fsync always raises
        raise AssertionError("save_policy should have failed")
    assert path.read_bytes() == before
    assert load_policy(path).version == old.version
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
