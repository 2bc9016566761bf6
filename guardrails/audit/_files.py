"""Reading own-data files: ``.npz`` archives without pickle, CSR matrices written by
``scipy.sparse.save_npz`` and models written by an implicit model's ``save``."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..exceptions import ValidationError
from ._checks import bad, factors_array, shown


def read_npz(path: str, name: str) -> dict:
    """Every array of an .npz file, read without pickle."""
    if not zipfile.is_zipfile(path):
        raise bad(
            name,
            "(file)",
            "an .npz archive (numpy.savez)",
            "an unreadable file (not a zip archive)",
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise bad(name, "(file)", "an .npz archive (numpy.savez)", "a single .npy array")
            return {k: z[k] for k in z.files}
    except ValidationError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise bad(
                name,
                "(file)",
                "arrays readable without pickle (no object arrays)",
                "an object array",
            ) from exc
        raise bad(
            name, "(file)", "an .npz archive (numpy.savez)", f"an unreadable file ({exc})"
        ) from exc
    # NotImplementedError: zipfile on a damaged header ("compression method", "version").
    except (OSError, zipfile.BadZipFile, NotImplementedError, EOFError) as exc:
        raise bad(
            name, "(file)", "an .npz archive (numpy.savez)", f"an unreadable file ({exc})"
        ) from exc


def sparse_file(path: str, name: str):
    """A matrix written by ``scipy.sparse.save_npz``, read without pickle; format kept."""
    z = read_npz(path, name)
    fmt = z.get("format")
    if fmt is None:
        raise bad(name, "format", "present (write the file with scipy.sparse.save_npz)", "none")
    fmt = fmt.item()
    fmt = fmt.decode("ascii", "replace") if isinstance(fmt, bytes) else str(fmt)
    if fmt != "csr":
        raise bad(name, "format", "'csr' (save a scipy.sparse.csr_matrix)", repr(fmt))
    for key in ("data", "indices", "indptr", "shape"):
        if key not in z:
            raise bad(name, key, "present (write the file with scipy.sparse.save_npz)", "none")
    shape = tuple(int(s) for s in np.asarray(z["shape"]).ravel())
    indptr, indices, data = z["indptr"], z["indices"], z["data"]
    if len(shape) != 2 or min(shape) < 1:
        raise bad(name, "shape", "two positive sizes", str(shape))
    if (
        indptr.ndim != 1
        or indptr.shape[0] != shape[0] + 1
        or indptr[0] != 0
        or np.any(np.diff(indptr) < 0)
        or indptr[-1] != indices.shape[0]
        or indices.shape != data.shape
    ):
        raise bad(name, "indptr", f"a CSR row pointer of length {shape[0] + 1}", shown(indptr))
    if not np.issubdtype(indices.dtype, np.integer):
        raise bad(name, "indices", "integer column indices", shown(indices))
    if indices.size and (indices.min() < 0 or indices.max() >= shape[1]):
        wrong = indices[(indices < 0) | (indices >= shape[1])]
        raise bad(
            name,
            "indices",
            f"column ids in [0, {shape[1]})",
            f"{wrong.size} ids out of range (first: {int(wrong[0])})",
        )
    if data.dtype.kind not in "biuf":
        raise bad(name, "data", "finite, non-negative weights", f"dtype {data.dtype}")
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def implicit_model(path: str, name: str, n_users: int, n_items: int):
    """An implicit model written with its own ``save``; the class is read off its fields."""
    z = read_npz(path, name)
    cls: Any
    if "K" in z and "indptr" in z:
        from implicit.nearest_neighbours import ItemItemRecommender

        cls = ItemItemRecommender
    elif "item_factors" in z and "user_factors" in z:
        import implicit.cpu.als
        import implicit.cpu.bpr
        import implicit.cpu.lmf

        if "neg_prop" in z:
            cls = implicit.cpu.lmf.LogisticMatrixFactorization
        elif "learning_rate" in z:
            cls = implicit.cpu.bpr.BayesianPersonalizedRanking
        else:
            cls = implicit.cpu.als.AlternatingLeastSquares
    else:
        raise bad(
            name,
            "(file)",
            "a model written by an implicit model's save() (ALS, BPR, LMF or item-item)",
            f"fields {sorted(z)}",
        )
    if "item_factors" in z:
        itf = factors_array(z["item_factors"], n_items, name, "item_factors")
        factors_array(z["user_factors"], n_users, name, "user_factors", itf.shape[1])
    else:
        shape = tuple(int(s) for s in np.asarray(z["shape"]).ravel())
        if shape != (n_items, n_items):
            raise bad(name, "shape", f"({n_items}, {n_items}) (item-item similarity)", str(shape))
    try:
        return cls.load(path)
    except (ValueError, TypeError, KeyError) as exc:
        raise bad(name, "(file)", "a model implicit's load() reads", f"an error ({exc})") from exc
