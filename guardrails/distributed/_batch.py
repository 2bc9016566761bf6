"""Guarded batch scoring of many users on a Dask cluster: :func:`recommend_all`.

How a run goes:

1. The client validates the arguments and runs the Guard once on the first user, so a
   bad argument fails before any cluster work, with the Guard's own message.
2. It builds an *item-side* copy of the Guard: the item factors (or the item-item
   similarity), the policy compiled against the snapshot, and nothing user-sized: the
   user factors are left out. That copy enters the cluster once, as the data of one
   task, and is broadcast to every worker (``client.replicate``), never shipped per
   task. Unlike ``client.scatter`` data, the scheduler can recompute it: Dask's active
   memory manager may drop broadcast replicas, and a worker dying with the last copy
   of scattered data would cancel every block depending on it.
3. The users are cut into blocks of ``block_size``. Each task receives only its block:
   the user ids, their factor rows and their interaction rows. Memory per task is
   therefore bounded by the block (plus the item side, shared by all tasks of a
   worker). At most ``max_in_flight`` blocks are submitted at a time, so the client and
   the scheduler hold a bounded number of blocks too.
4. Each task calls :meth:`Guard.recommend_detailed` on its block: the same code and the
   same kernel as a single-process call, so results are identical, row for row.
5. A task either writes its block to ``part-<block>.parquet`` (written to a hidden
   temporary name, synced, then renamed over the final name) or keeps it in worker
   memory for a Dask DataFrame.

Exactly once under failures: a task is a pure function of its block, and its file name is
a function of the block index only. When a worker dies, the scheduler reruns its blocks
elsewhere; a rerun replaces the file atomically (never a second file), and a half-written
attempt only ever leaves a hidden temporary file, which readers skip and the client
removes at the end. ``_manifest.json`` is written last, after every block file was
checked: a directory without it is an incomplete run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from .._validation import check_csr, check_ids, check_int, fail
from ..core.files import atomic_write
from ..exceptions import FailClosedError
from ..guard import Guard
from ..models import FactorModel
from ._deps import require_dask, resolve_client, worker_threads

__all__ = ["recommend_all", "BatchResult", "COLUMNS", "MANIFEST_NAME"]

#: Columns of the output, in order.
COLUMNS = ("user_id", "rank", "item_id", "score", "policy_version", "snapshot_version")
#: Name of the file written last into an output directory.
MANIFEST_NAME = "_manifest.json"
_MANIFEST_FORMAT = "recsys-guardrails-batch"
_PART = re.compile(r"^part-\d{6,}\.parquet$")
# Temporaries of core.files.atomic_write (tempfile.mkstemp: the prefix, random letters,
# digits and underscores, the suffix) left behind by killed attempts.
_TMP = re.compile(r"^\.part-\d{6,}\.parquet\.[a-z0-9_]+\.tmp$")
# Ids accepted when the model has no user rows to index (item-item, recalculate_user).
_ANY_ID = 2**62
_WHERE = "recommend_all"


def _part_name(block: int) -> str:
    return f"part-{block:06d}.parquet"


@dataclass(frozen=True, eq=False)
class BatchResult:
    """What :func:`recommend_all` computed.

    Attributes
    ----------
    path : str or None
        The Parquet directory (one ``part-<block>.parquet`` per block and a
        ``_manifest.json``), or ``None`` when the results are held as ``frame``.
    frame : dask.dataframe.DataFrame or None
        The results as a Dask collection held in the workers' memory, one partition per
        block in block order, when no ``output`` was given; ``None`` otherwise (read the
        files with ``dask.dataframe.read_parquet(path)``).
    n_users : int
        Users scored (every user of the call, exactly once).
    n_blocks : int
    n_rows : int
        Rows written: one per (user, rank); a user with fewer eligible items than ``N``
        has fewer rows, never a padding row.
    n_short : int
        Users whose slate has fewer than ``N`` items (not enough eligible items).
    policy_version, snapshot_version : str, str or None
        The versions every block was computed with (checked equal across blocks).
    setup_seconds : float
        Client time before the first block: checks, the item-side copy, and shipping it
        to every worker.
    wall_seconds : float
        Client time from the first block's submission to the last block's result.
    task_seconds : float
        Sum over blocks of the time spent inside the tasks (scoring and writing).
    """

    path: str | None
    frame: Any
    n_users: int
    n_blocks: int
    n_rows: int
    n_short: int
    policy_version: str
    snapshot_version: str | None
    setup_seconds: float
    wall_seconds: float
    task_seconds: float
    # Keeps the item side alive while ``frame`` may need its blocks recomputed.
    _keep: tuple = field(default=(), repr=False)


@dataclass(frozen=True, eq=False)
class _Job:
    """Everything every block needs, shipped to every worker once."""

    guard: Guard
    n_users: int
    N: int
    filter_already_liked_items: bool
    filter_items: np.ndarray | None
    recalculate_user: bool
    items: np.ndarray | None
    output: str | None
    threads: int
    score_dtype: str
    policy_version: str
    snapshot_version: str | None


def _items_only(guard: Guard, threads: int) -> Guard:
    """A Guard with the same item side, policy and snapshot, without user-sized data.

    Rebuilt through the public constructor (the policy is compiled once, here, on the
    client); the user factors are replaced by one row, the model's typical user (what a
    viewer whose whole query a policy strips is scored by), because each task brings its
    own block's rows.
    """
    m = guard.model_
    if isinstance(m, FactorModel):
        typical = m.typical_user()[None, :].copy()
        src = m.source
        if src is not None:
            # Keep the implicit model (its own fold-in for recalculate_user), minus users.
            model = copy.copy(src)
            model.user_factors = typical
            if hasattr(model, "_user_norms"):
                model._user_norms = None
        else:
            model = copy.copy(m)
            model.user_factors = typical
    else:
        model = copy.copy(m)
        model.source = None
    shipped = Guard(
        model,
        guard.policy,
        snapshot=guard.snapshot,
        block_rows=guard.block_rows,
        num_threads=threads,
    )
    if (shipped.policy_version, _snapshot_version(shipped)) != (
        guard.policy_version,
        _snapshot_version(guard),
    ):
        raise FailClosedError(
            "The item-side copy of the Guard does not have the Guard's policy and snapshot."
        )
    return shipped


def _arrow_table(user_ids: np.ndarray, ids: np.ndarray, scores: np.ndarray, job: _Job, block: int):
    import pyarrow as pa

    m, k = ids.shape
    keep = ids.ravel() >= 0
    n = int(keep.sum())
    score_type = pa.float32() if job.score_dtype == "float32" else pa.float64()
    schema = pa.schema(
        [
            ("user_id", pa.int64()),
            ("rank", pa.int32()),
            ("item_id", pa.int64()),
            ("score", score_type),
            ("policy_version", pa.string()),
            ("snapshot_version", pa.string()),
        ],
        metadata={
            "guardrails.block": str(block),
            "guardrails.n_users": str(m),
            "guardrails.policy_version": job.policy_version,
            "guardrails.snapshot_version": job.snapshot_version or "",
        },
    )
    snap = (
        pa.nulls(n, pa.string())
        if job.snapshot_version is None
        else pa.array(np.full(n, job.snapshot_version, dtype=object), pa.string())
    )
    return pa.Table.from_arrays(
        [
            pa.array(np.repeat(user_ids.astype(np.int64), k)[keep]),
            pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), m)[keep]),
            pa.array(ids.ravel()[keep]),
            pa.array(scores.ravel()[keep].astype(job.score_dtype, copy=False)),
            pa.array(np.full(n, job.policy_version, dtype=object), pa.string()),
            snap,
        ],
        schema=schema,
    )


def _write_atomic(table, directory: str, block: int) -> str:
    """Write ``table`` as the block's file: hidden temporary name, fsync, rename."""
    import pyarrow.parquet as pq

    name = _part_name(block)
    final = os.path.join(directory, name)
    with atomic_write(final) as fh:
        pq.write_table(table, fh)
    return name


_BLAS: Any = None


def _blas_limit(threads: int):
    """Limit BLAS threads in this worker process (the controller is built once per process)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=threads, user_api="blas")


def _run_block(job: _Job, block: int, user_ids: np.ndarray, factor_rows, rows):
    """Score one block on a worker; returns ``(stats, frame or None)``."""
    t0 = time.perf_counter()
    guard = job.guard
    with _blas_limit(job.threads):
        res = guard.recommend_detailed(
            user_ids,
            rows,
            job.N,
            job.filter_already_liked_items,
            job.filter_items,
            job.recalculate_user,
            job.items,
            user_factors=factor_rows,
        )
    if res.policy_version != job.policy_version or res.snapshot_version != job.snapshot_version:
        raise FailClosedError(
            f"Block {block} was computed with policy {res.policy_version} and snapshot "
            f"{res.snapshot_version}, not the run's {job.policy_version} and "
            f"{job.snapshot_version}."
        )
    ids = np.asarray(res.ids).reshape(user_ids.size, -1)
    scores = np.asarray(res.scores).reshape(user_ids.size, -1)
    table = _arrow_table(user_ids, ids, scores, job, block)
    frame = None
    file = None
    if job.output is None:
        frame = table.to_pandas()
    else:
        file = _write_atomic(table, job.output, block)
    stats = {
        "block": block,
        "n_users": int(user_ids.size),
        "n_rows": int(table.num_rows),
        "n_short": int((ids < 0).any(axis=1).sum()),
        "policy_version": res.policy_version,
        "snapshot_version": res.snapshot_version,
        "file": file,
        "seconds": time.perf_counter() - t0,
    }
    return stats, frame


def _identity(x):
    return x


def _stats_of(outcome):
    return outcome[0]


def _frame_of(outcome):
    return outcome[1]


def _prepare_output(output, overwrite: bool) -> str:
    out = os.path.abspath(os.fspath(output))
    if os.path.exists(out) and not os.path.isdir(out):
        raise fail("output", _WHERE, "a directory path", out)
    os.makedirs(out, exist_ok=True)
    ours, foreign = [], []
    for name in os.listdir(out):
        if _PART.match(name) or _TMP.match(name) or name == MANIFEST_NAME:
            ours.append(name)
        elif not name.startswith((".", "_")):
            foreign.append(name)
    if foreign:
        raise fail(
            "output",
            _WHERE,
            "an empty directory or one written by recommend_all (other files would be read as "
            "part of the dataset)",
            f"a directory holding {sorted(foreign)[:3]}",
            describe=False,
        )
    if ours and not overwrite:
        raise fail(
            "output",
            _WHERE,
            "a directory without a previous run's files, or overwrite=True",
            f"a directory holding {len(ours)} files of a previous run",
            describe=False,
        )
    for name in ours:
        os.unlink(os.path.join(out, name))
    return out


def _finish_output(out: str, stats: list[dict], manifest: dict) -> None:
    """Remove killed attempts' temporaries, check every block's file, write the manifest."""
    for name in os.listdir(out):
        if _TMP.match(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out, name))
    expected = {_part_name(s["block"]) for s in stats}
    present = {name for name in os.listdir(out) if _PART.match(name)}
    if present != expected:
        raise FailClosedError(
            f"The output directory {out!r} does not hold exactly one file per block: missing "
            f"{sorted(expected - present)[:3]}, unexpected {sorted(present - expected)[:3]}."
        )
    with atomic_write(os.path.join(out, MANIFEST_NAME)) as fh:
        fh.write(json.dumps(manifest, indent=1, sort_keys=True).encode())


# Over 120 lines by its signature (implicit's recommend arguments and the batch settings)
# and numpydoc docstring; the body (about 105 lines) is one sequence: check the arguments,
# probe one user through the Guard, ship the job once, schedule the blocks, collect.
def recommend_all(
    guard: Guard,
    user_ids,
    user_items=None,
    *,
    N: int = 10,
    client=None,
    output=None,
    block_size: int = 10_000,
    filter_already_liked_items: bool = True,
    filter_items=None,
    recalculate_user: bool = False,
    items=None,
    threads_per_task: int = 1,
    max_in_flight: int | None = None,
    overwrite: bool = False,
    progress: bool | Callable[[int, int], None] = False,
) -> BatchResult:
    """Guarded top-``N`` items for every user, computed block by block on a Dask cluster.

    The results equal those of ``guard.recommend_detailed(user_ids, user_items, N, ...)``
    in one process, row for row; see the module docstring for how the work is shipped
    and why every user appears exactly once even when workers die.

    Parameters
    ----------
    guard : Guard
        The guard to run; its item side, policy and snapshot are shipped to every
        worker once. Its user factors are shipped block by block.
    user_ids : array-like of int, shape (n,)
        Users to score (model user indices, as for :meth:`Guard.recommend`), each once.
    user_items : csr_matrix, shape (n, n_items), optional
        One interaction row per user of ``user_ids``, as for :meth:`Guard.recommend`.
    N : int, keyword-only
        Slate length.
    client : distributed.Client, optional, keyword-only
        The cluster to run on; the default client when omitted.
    output : str or path-like, optional, keyword-only
        A directory, visible to every worker at the same path, to write the results to as
        Parquet: one ``part-<block>.parquet`` per block, then ``_manifest.json``. Without
        it the results are returned as a Dask DataFrame held in the workers' memory.
    block_size : int, keyword-only
        Users per task. Memory per task is about ``block_size * (n_factors + N)`` numbers
        for the inputs and outputs, plus the kernel's chunk buffer.
    filter_already_liked_items, filter_items, recalculate_user, items : keyword-only
        As in :meth:`Guard.recommend`.
    threads_per_task : int, keyword-only
        Kernel and BLAS threads inside one task; keep 1 with one task per worker thread.
    max_in_flight : int, optional, keyword-only
        Blocks submitted but not finished at any time; twice the cluster's worker threads
        when omitted.
    overwrite : bool, keyword-only
        Replace a previous run's files in ``output``; without it such a directory is
        refused.
    progress : bool or callable, keyword-only
        ``True`` shows a tqdm bar on the client; a callable is called as
        ``progress(users_done, users_total)`` after each block.

    Returns
    -------
    BatchResult
        Counts, versions and timings, and ``frame`` (a Dask DataFrame with the columns
        ``user_id`` int64, ``rank`` int32 (1 = best), ``item_id`` int64, ``score``
        float32 (float64 for item-item models), ``policy_version`` and
        ``snapshot_version`` strings) when no ``output`` was given.

    Raises
    ------
    MissingDependencyError
        Dask, pandas or pyarrow is not installed (``pip install 'recsys-guardrails[dask]'``).
    ValidationError
        A bad argument, repeated user ids, or an output directory holding other files.
    FailClosedError
        A block was computed against another policy or snapshot, or a block file is
        missing at the end. A filter's own errors propagate from the task unchanged.
    """
    # Long for its docstring and one linear sequence (check, ship the item side once,
    # schedule, verify, assemble) whose steps share the client and the job; the flag and
    # user checks, the item-side copy, the scheduling loop, the block checks and the
    # manifest are _check_flags, _checked_users, _items_only, _schedule, _check_blocks and
    # _manifest.
    started = time.perf_counter()
    mods = require_dask("recommend_all")
    distributed = mods["distributed"]

    if not isinstance(guard, Guard):
        raise fail("guard", _WHERE, "a guardrails.Guard", guard)
    m = guard.model_
    N = check_int(N, "N", _WHERE)
    block_size = check_int(block_size, "block_size", _WHERE)
    threads = check_int(threads_per_task, "threads_per_task", _WHERE)
    if max_in_flight is not None:
        max_in_flight = check_int(max_in_flight, "max_in_flight", _WHERE)
    _check_flags(
        filter_already_liked_items=filter_already_liked_items,
        recalculate_user=recalculate_user,
        overwrite=overwrite,
        progress=progress,
    )
    by_factor_row = isinstance(m, FactorModel) and not recalculate_user
    ids, rows = _checked_users(m, user_ids, user_items, by_factor_row)
    filter_items = None if filter_items is None else np.asarray(filter_items)
    items = None if items is None else np.asarray(items)
    versions = (guard.policy_version, _snapshot_version(guard))
    if ids.size:
        # The Guard checks the remaining arguments, with its own messages, on one user.
        probe = guard.recommend_detailed(
            ids[:1],
            None if rows is None else rows[:1],
            N,
            bool(filter_already_liked_items),
            filter_items,
            bool(recalculate_user),
            items,
        )
        versions = (probe.policy_version, probe.snapshot_version)

    client = resolve_client(distributed, client, _WHERE)
    out = None if output is None else _prepare_output(output, bool(overwrite))

    shipped = _items_only(guard, threads)
    job = _Job(
        guard=shipped,
        n_users=m.n_users,
        N=N,
        filter_already_liked_items=bool(filter_already_liked_items),
        filter_items=filter_items,
        recalculate_user=bool(recalculate_user),
        items=items,
        output=out,
        threads=threads,
        score_dtype="float32" if isinstance(m, FactorModel) else "float64",
        policy_version=versions[0],
        snapshot_version=versions[1],
    )

    n_blocks = -(-ids.size // block_size)
    if max_in_flight is None:
        max_in_flight = max(2, 2 * worker_threads(client))
    token = uuid.uuid4().hex[:12]
    with warnings.catch_warnings():
        # The item side is large by nature; it is shipped once, not per task.
        warnings.filterwarnings("ignore", message=".*[Ll]arge (object|graph).*")
        job_future = client.submit(_identity, job, key=f"guardrails-job-{token}", pure=False)
    client.replicate([job_future])
    t0 = time.perf_counter()

    def submit(block: int):
        lo, hi = block * block_size, min(ids.size, (block + 1) * block_size)
        bid = ids[lo:hi]
        frows = m.user_factors[bid] if by_factor_row else None
        brows = None if rows is None else rows[lo:hi]
        run = client.submit(
            _run_block,
            job_future,
            block,
            bid,
            frows,
            brows,
            key=f"guardrails-block-{token}-{block:06d}",
        )
        if out is not None:
            return run, run
        stats = client.submit(_stats_of, run, key=f"guardrails-stats-{token}-{block:06d}")
        return run, stats

    runs, stats = _schedule(
        distributed, client, submit, n_blocks, max_in_flight, out is not None, progress, ids.size
    )
    wall = time.perf_counter() - t0

    _check_blocks(stats, n_blocks, job)
    stats.sort(key=lambda s: s["block"])
    n_rows = sum(s["n_rows"] for s in stats)
    n_short = sum(s["n_short"] for s in stats)
    frame = None
    keep: tuple = ()
    if out is not None:
        _finish_output(out, stats, _manifest(job, stats, int(ids.size), block_size))
        del job_future
    else:
        frame = _as_frame([runs[b] for b in range(n_blocks)], job)
        keep = (job_future, tuple(runs.values()))
    return BatchResult(
        path=out,
        frame=frame,
        n_users=int(ids.size),
        n_blocks=n_blocks,
        n_rows=n_rows,
        n_short=n_short,
        policy_version=job.policy_version,
        snapshot_version=job.snapshot_version,
        setup_seconds=t0 - started,
        wall_seconds=wall,
        task_seconds=float(sum(s["seconds"] for s in stats)),
        _keep=keep,
    )


def _check_flags(*, progress, **flags) -> None:
    """The bool arguments of :func:`recommend_all`, and ``progress``."""
    for name, flag in flags.items():
        if not isinstance(flag, bool | np.bool_):
            raise fail(name, _WHERE, "a bool", flag)
    if not (isinstance(progress, bool) or callable(progress)):
        raise fail("progress", _WHERE, "a bool or a callable(done, total)", progress)


def _checked_users(m, user_ids, user_items, by_factor_row: bool):
    """The users (unique ids; in range when scored by factor row) and their rows, if any."""
    ids, _ = check_ids(user_ids, "user_ids", _WHERE, m.n_users if by_factor_row else _ANY_ID)
    n_dup = ids.size - np.unique(ids).size
    if n_dup:
        raise fail(
            "user_ids",
            _WHERE,
            "unique ids (every user is scored exactly once)",
            f"{n_dup} repeated ids",
            describe=False,
        )
    rows = (
        None
        if user_items is None
        else check_csr(user_items, "user_items", _WHERE, shape=(ids.size, m.n_items))
    )
    return ids, rows


def _manifest(job: _Job, stats: list, n_users: int, block_size: int) -> dict:
    """``_manifest.json`` of a run written to files: counts, versions and the parts."""
    return {
        "format": _MANIFEST_FORMAT,
        "format_version": 1,
        "columns": list(COLUMNS),
        "n_users": n_users,
        "n_blocks": len(stats),
        "n_rows": sum(s["n_rows"] for s in stats),
        "n_short": sum(s["n_short"] for s in stats),
        "N": job.N,
        "block_size": block_size,
        "policy_version": job.policy_version,
        "snapshot_version": job.snapshot_version,
        "files": [_part_name(s["block"]) for s in stats],
    }


def _schedule(
    distributed, client, submit, n_blocks: int, max_in_flight: int, to_files: bool, progress, total
):
    """Run every block with at most ``max_in_flight`` in flight; the block futures and stats.

    ``submit(block) -> (run, stats)`` futures. With ``to_files`` a block's run future is
    released as soon as its file is written (the file is the result).
    """
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(total), unit="user", desc="recommend_all")
    runs: dict[int, Any] = {}
    stats: list[dict] = []
    pending = iter(range(n_blocks))
    in_flight = distributed.as_completed(loop=client.loop)
    done_users = 0
    try:
        for block in islice(pending, max_in_flight):
            run, st = submit(block)
            runs[block] = run
            in_flight.add(st)
        for fut in in_flight:
            s = fut.result()
            if to_files:
                s = s[0]  # (stats, None): the block is in its file
            stats.append(s)
            if to_files:
                runs.pop(s["block"], None)  # release: the file is the result
            done_users += s["n_users"]
            if bar is not None:
                bar.update(s["n_users"])
            elif callable(progress) and progress is not False:
                progress(done_users, int(total))
            nxt = next(pending, None)
            if nxt is not None:
                run, st = submit(nxt)
                runs[nxt] = run
                in_flight.add(st)
    except BaseException:
        client.cancel(list(runs.values()) + list(in_flight.futures))
        raise
    finally:
        if bar is not None:
            bar.close()
    return runs, stats


def _check_blocks(stats: list[dict], n_blocks: int, job) -> None:
    """Fail closed unless every block came back once, from the job's policy and snapshot."""
    if sorted(s["block"] for s in stats) != list(range(n_blocks)):
        raise FailClosedError("recommend_all did not receive every block exactly once.")
    for s in stats:
        if (
            s["policy_version"] != job.policy_version
            or s["snapshot_version"] != job.snapshot_version
        ):
            raise FailClosedError(
                f"Block {s['block']} was computed with another policy or snapshot."
            )


def _snapshot_version(guard: Guard) -> str | None:
    snap = guard.snapshot
    return None if snap is None else getattr(snap, "version", None)


def _as_frame(runs: list, job: _Job):
    """A Dask DataFrame over the blocks held in worker memory, in block order."""
    import dask
    import dask.dataframe as dd

    meta = _arrow_table(
        np.empty(0, np.int64), np.empty((0, 0), np.int64), np.empty((0, 0)), job, 0
    ).to_pandas()
    if not runs:
        return dd.from_pandas(meta, npartitions=1)
    parts = [dask.delayed(_frame_of)(r) for r in runs]
    return dd.from_delayed(parts, meta=meta, verify_meta=False)
