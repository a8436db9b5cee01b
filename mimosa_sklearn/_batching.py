"""Padded tasks -> bucketed device batches, with explicit boolean masks.

:func:`mimosa_sklearn._data.build_task_data` lays the caller's rows out as padded tasks,
NaN marking padded rows and missing outputs. Here those arrays reach the shapes the
compiled programs see: the numbers of tasks, rows and grid points are rounded up to
buckets (:func:`bucket`), so data sets of similar size share one compiled program, and
NaN gives way to boolean masks and finite placeholders (the core never sees a NaN).
:func:`pad_tasks` is the one place where that happens, for training tasks, new tasks'
observations and prediction inputs alike.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .core.compile import to_device
from .core.params import TaskBatch

__all__ = [
    "Padded",
    "bucket",
    "grid_bucket",
    "make_batch",
    "pad_axis",
    "pad_tasks",
    "repeat_first",
    "shared_inputs",
]


def bucket(n: int, step: int, minimum: int = 8) -> int:
    """Padded size for ``n``: a power of two (at least ``minimum``) up to ``4 * step``,
    then a multiple of ``step``, so that data sets of similar size share one compiled
    program (the relative padding, hence the wasted work, stays below ``1 / 4`` past
    small sizes).

    Task axes use ``minimum=1``: a padded task costs as much as a real one (an
    ``N x N`` factorisation per optimiser step), so one long task must not be padded
    to eight."""
    n = max(int(n), 1)
    if n <= 4 * step:
        return max(minimum, 1 << (n - 1).bit_length())
    return int(math.ceil(n / step)) * step


def grid_bucket(g: int) -> int:
    """Padded grid size: small relative padding for large grids (the cost is cubic)."""
    return bucket(g, 8 if g <= 128 else 32 if g <= 1024 else 128)


def pad_axis(a: np.ndarray, axis: int, size: int, fill) -> np.ndarray:
    """``a`` padded with ``fill`` along ``axis`` to ``size``."""
    if a.shape[axis] == size:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, size - a.shape[axis])
    return np.pad(a, pad, constant_values=fill)


def repeat_first(a: np.ndarray, size: int) -> np.ndarray:
    """Pad the leading axis to ``size`` with copies of the first entry (any trailing shape)."""
    if a.shape[0] >= size:
        return a
    return np.concatenate([a, np.repeat(a[:1], size - a.shape[0], axis=0)], axis=0)


@dataclasses.dataclass(frozen=True)
class Padded:
    """Tasks at their bucketed shape, NaN-free.

    Attributes
    ----------
    x : ndarray of shape (Tb, Nb, I)
        Inputs; ``placeholder`` on padded rows.
    rows : ndarray of shape (Tb, Nb), bool
        Real rows.
    y : ndarray of shape (Tb, Nb, O) or None
        Outputs; 0 where not observed.
    mask : ndarray of shape (Tb, Nb, O), bool, or None
        Observed outputs of real rows.
    """

    x: np.ndarray
    rows: np.ndarray
    y: np.ndarray | None = None
    mask: np.ndarray | None = None


def pad_tasks(
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    n_tasks: int,
    n_rows: int,
    placeholder: np.ndarray,
) -> Padded:
    """Padded tasks (``x`` (T, N, I) with NaN rows, ``y`` (T, N, O) with NaN where not
    observed) at ``(n_tasks, n_rows)`` tasks and rows, with masks.

    Padded rows take the ``placeholder`` input (a grid point: any finite input keeps the
    kernels finite; the masks keep it out of every result).
    """
    t, n, i = x.shape
    real = ~np.isnan(x).any(axis=-1)
    rows = np.zeros((n_tasks, n_rows), dtype=bool)
    rows[:t, :n] = real
    xp = np.empty((n_tasks, n_rows, i))
    xp[...] = placeholder
    xp[rows] = x[real]
    if y is None:
        return Padded(x=xp, rows=rows)
    mask = np.zeros((n_tasks, n_rows, y.shape[-1]), dtype=bool)
    mask[:t, :n] = real[..., None] & ~np.isnan(y)
    yp = np.zeros((n_tasks, n_rows, y.shape[-1]))
    yp[:t, :n] = np.where(mask[:t, :n], y, 0.0)
    return Padded(x=xp, rows=rows, y=yp, mask=mask)


def shared_inputs(x: np.ndarray, y: np.ndarray, mappings: np.ndarray | None = None) -> bool:
    """Whether every task has the same inputs and the same observed pattern as task 0.

    Checked on the caller's arrays, before bucketing: the padded tasks added by
    :func:`make_batch` (all-False masks, zero ``task_weight``) do not count, the core
    handles them through ``task_weight``.
    """
    if x.shape[0] < 2:
        return False
    observed = ~np.isnan(y) & ~np.isnan(x).any(-1)[..., None]
    same = (
        np.array_equal(x, np.broadcast_to(x[:1], x.shape), equal_nan=True)
        and (observed == observed[:1]).all()
    )
    if same and mappings is not None:
        rows = ~np.isnan(x).any(-1)
        same = bool((np.where(rows, mappings, -1) == np.where(rows[:1], mappings[:1], -1)).all())
    return bool(same)


def make_batch(
    x: np.ndarray,
    y: np.ndarray,
    mappings: np.ndarray | None,
    grid: np.ndarray,
    *,
    task_chunk: int = 0,
    task_multiple: int = 1,
) -> TaskBatch:
    """Padded numpy tasks (NaN = padding/missing) -> a bucketed, NaN-free :class:`TaskBatch`.

    ``mappings`` (T, N) gives the grid index of every row (None with the approximate
    grid, whose projection replaces them). ``task_chunk`` sets
    ``TaskBatch.task_chunk``; the padded number of tasks is a multiple of
    ``task_multiple`` (the device count when the task axis is sharded). Shared inputs
    are detected here (:func:`shared_inputs`) and flagged on the batch.
    """
    t, n, _ = x.shape
    g = grid.shape[0]
    tb, nb, gb = bucket(t, 8, 1), bucket(n, 8), grid_bucket(g)
    tb = -(-tb // task_multiple) * task_multiple
    shared = shared_inputs(x, y, mappings)
    placeholder = grid[0]
    padded = pad_tasks(x, y, n_tasks=tb, n_rows=nb, placeholder=placeholder)
    maps = np.full((tb, nb), gb, dtype=np.int32)
    if mappings is not None:
        maps[padded.rows] = mappings[~np.isnan(x).any(axis=-1)]
    grid_p = np.concatenate([grid, np.repeat(placeholder[None], gb - g, axis=0)], axis=0)
    return TaskBatch(
        x=to_device(padded.x),
        y=to_device(padded.y),
        mask=to_device(padded.mask),
        mappings=to_device(maps),
        grid=to_device(grid_p),
        grid_mask=to_device(np.arange(gb) < g),
        task_weight=to_device((np.arange(tb) < t).astype(np.float64)),
        shared_inputs=shared,
        task_chunk=int(task_chunk),
    )
