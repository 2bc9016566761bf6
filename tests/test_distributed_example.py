"""The Dask example runs on small data, so that it never rots."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("distributed")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dask_batch.py"


@pytest.mark.timeout(180)
def test_dask_batch_example(capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("dask_batch", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "recs"
    result = mod.main(["--accounts", "600", "--block-size", "150", "--output", str(out)])
    assert result.n_users == 600 and result.n_blocks == 4
    assert (out / "_manifest.json").exists()
    assert "no flagged account suggested" in capsys.readouterr().out
