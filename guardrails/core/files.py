"""Files: durable, atomic replacement (policy files, snapshots, batch outputs) and array
files read without pickle (policy files, ``policy check --array``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any, BinaryIO

__all__ = ["atomic_write", "read_array", "ARRAY_FILE_ERRORS"]

#: What reading a missing, damaged or foreign array file raises (zipfile raises
#: ``NotImplementedError`` on a damaged header: "compression method", "zip file version").
ARRAY_FILE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError)


def read_array(path: str | os.PathLike) -> Any:
    """An array file, read without pickle: ``.npz`` as ``scipy.sparse.save_npz`` writes it
    (a sparse matrix), anything else as ``numpy.save`` writes it (an ndarray).

    Raises one of :data:`ARRAY_FILE_ERRORS` for a file it cannot read.
    """
    import numpy as np
    import scipy.sparse as sp

    if os.fspath(path).endswith(".npz"):
        return sp.load_npz(path)
    return np.load(path, allow_pickle=False)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, prefix: str | None = None) -> Iterator[BinaryIO]:
    """Write a file that replaces ``path`` atomically and durably.

    The caller writes to the yielded binary handle: a temporary file in the same directory
    (same file system, so the rename is atomic). On a clean exit it is flushed to disk and
    renamed over ``path`` with ``os.replace``, then the directory is synced where the
    platform allows opening one, so the rename survives a crash. A reader sees the old file
    or the new one, never a torn one; a failed write leaves the old file in place and no
    temporary file behind.

    Parameters
    ----------
    path : str or path-like
        The file to replace.
    prefix : str, optional
        Prefix of the temporary file's name (default: ``.<name>.``; hidden from globbing).
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    if prefix is None:
        prefix = f".{os.path.basename(path)}."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
