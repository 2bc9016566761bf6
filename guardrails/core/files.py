"""Durable, atomic file replacement, shared by policy files, snapshots and batch outputs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_write"]


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
