"""Smoke test of an installed wheel, run from outside the source tree by .ci/run.

It checks that the installed package (not a checkout) imports, carries its metadata and
license, and serves a guarded slate; and that the policy file writer round-trips.
"""

from __future__ import annotations

import importlib.metadata as md
import pathlib
import sys
import tempfile

import numpy as np

import guardrails as gr

here = pathlib.Path(gr.__file__).resolve()
assert "site-packages" in here.parts, f"guardrails imported from {here}, not from the wheel"
dist = md.distribution("recsys-guardrails")
assert dist.version == gr.__version__, (dist.version, gr.__version__)
meta = dist.metadata
assert meta["License-Expression"] == "MIT", meta["License-Expression"]
assert any(f.name == "LICENSE" for f in dist.files or []), "LICENSE missing from the wheel"
assert meta.get_all("Project-URL"), "no Project-URL in the metadata"
assert (here.parent / "py.typed").exists(), "py.typed missing"

rng = np.random.default_rng(0)
model = gr.FactorModel(rng.normal(size=(20, 4)), rng.normal(size=(50, 4)))
policy = gr.Policy([gr.filters.BlockItems([0, 1, 2], reason="csam_seller")])
guard = gr.Guard(model, policy)
ids, scores = guard.recommend(np.arange(20), None, N=5, filter_already_liked_items=False)
assert ids.shape == (20, 5) and ids.dtype == np.int32
assert not np.isin(ids, [0, 1, 2]).any()

with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "policy.toml"
    gr.save_policy(policy, path)
    assert gr.load_policy(path).version == policy.version

print(f"wheel smoke test OK: recsys-guardrails {gr.__version__} on Python {sys.version.split()[0]}")
