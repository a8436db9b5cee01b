"""Padded tasks -> the device batch the compiled programs take.

:class:`._padded.Padded` tasks are already at bucketed shapes with their masks; here
the grid is padded (:func:`padded_grid_size`), empty row slots point past the grid,
and the arrays move to the device as a :class:`.core.params.TaskBatch`.
"""

from __future__ import annotations

import math

import numpy as np

from ._padded import Padded, grid_bucket, take
from .core.compile import to_device
from .core.params import TaskBatch

__all__ = ["GRID_HEADROOM", "GRID_REUSE_WORK", "make_batch", "padded_grid_size", "shared_inputs"]

#: How much more ``G^3`` work a fit may take on to reuse a padded grid size that an
#: earlier fit of this process used: compiling an EM program costs seconds, while
#: grids small enough for this to matter factorise in milliseconds.
GRID_REUSE_WORK = 2.0

#: Spare room a small fit's padded grid keeps (``headroom=True``): its bucket is that
#: of ``(1 + GRID_HEADROOM) g`` points. Cross-validation folds on shared inputs have
#: grids a few points apart (synth_dev's three folds and refit: 189, 192, 194 and 199
#: points); without room the first fold's 192-point program fits no later one.
GRID_HEADROOM = 0.05

# Padded grid sizes used by this process's fits, by the shapes of their tasks.
_grid_sizes: dict[tuple, set[int]] = {}


def padded_grid_size(g: int, shapes: tuple, headroom: bool = False) -> int:
    """The padded size of a grid of ``g`` points for tasks of ``shapes``.

    Its bucket (:func:`._padded.grid_bucket`; with ``headroom``, that of
    :data:`GRID_HEADROOM` more points, for small fits whose compilation costs more than
    their grid work), unless an earlier fit in this process
    padded tasks of the same ``shapes`` (slots, rows, inputs, outputs...) to a larger
    size whose cubic work is at most :data:`GRID_REUSE_WORK` times that of ``g``
    points: then the largest such size, and the programs compiled for it. The folds of
    a cross-validation and the refit on all tasks have grids of slightly different
    sizes (the union of their inputs), which would otherwise straddle bucket
    boundaries and compile the EM program again. Padded grid points are masked, so the
    model is the same; only the rounding of sums may differ (last bits).
    """
    own = grid_bucket(math.ceil(g * (1.0 + GRID_HEADROOM)) if headroom else g)
    used = _grid_sizes.setdefault(shapes, set())
    limit = g * GRID_REUSE_WORK ** (1 / 3)
    size = max((s for s in used if own <= s <= limit), default=own)
    used.add(size)
    return size


def shared_inputs(tasks: Padded) -> bool:
    """Whether every real task has the same inputs, grid indices and observed pattern
    as the first one (empty task slots do not count: the core weighs them by zero)."""
    t = tasks.n_tasks
    if t < 2:
        return False
    rows, observed = tasks.rows[:t], tasks.observed[:t]
    if not ((rows == rows[:1]).all() and (observed == observed[:1]).all()):
        return False
    real = rows[0]
    same = (tasks.x[:t, real] == tasks.x[:1, real]).all()
    if same and tasks.mappings is not None:
        same = (tasks.mappings[:t, real] == tasks.mappings[:1, real]).all()
    return bool(same)


def make_batch(
    tasks: Padded,
    grid: np.ndarray,
    *,
    task_chunk: int = 0,
    task_multiple: int = 1,
    grid_size: int | None = None,
) -> TaskBatch:
    """The device batch of ``tasks`` on ``grid`` (G, I).

    Row grid indices come from ``tasks.mappings`` (None with the approximate grid,
    whose projection replaces them). ``task_chunk`` sets ``TaskBatch.task_chunk``; the
    number of task slots is made a multiple of ``task_multiple`` (the device count
    when the task axis is sharded). ``grid_size`` is the padded grid size, by default
    the grid's bucket (:func:`._padded.grid_bucket`); the parts of one fit must share
    it. Shared inputs are detected here (:func:`shared_inputs`) and flagged on the
    batch.
    """
    if tasks.n_slots % task_multiple:
        slots = -(-tasks.n_slots // task_multiple) * task_multiple
        tasks = take(tasks, np.arange(tasks.n_tasks), n_slots=slots)
    g = grid.shape[0]
    gb = grid_bucket(g) if grid_size is None else int(grid_size)
    if gb < g:
        raise ValueError(f"grid_size={gb} is smaller than the grid ({g} points)")
    maps = np.full(tasks.rows.shape, gb, dtype=np.int32)
    if tasks.mappings is not None:
        maps[tasks.rows] = tasks.mappings[tasks.rows]
    grid_p = np.concatenate([grid, np.repeat(grid[:1], gb - g, axis=0)], axis=0)
    return TaskBatch(
        x=to_device(tasks.x),
        y=to_device(tasks.y),
        mask=to_device(tasks.observed),
        mappings=to_device(maps),
        grid=to_device(grid_p),
        grid_mask=to_device(np.arange(gb) < g),
        task_weight=to_device((np.arange(tasks.n_slots) < tasks.n_tasks).astype(np.float64)),
        shared_inputs=shared_inputs(tasks),
        task_chunk=int(task_chunk),
    )
