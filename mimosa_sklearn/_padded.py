"""Padded tasks: the one host-side layout of task data, at bucketed shapes.

Tasks have different numbers of rows, so they are laid out as arrays of shape
``(S, N, ...)``: ``S`` task slots (the ``n_tasks`` real tasks first, then empty slots)
and ``N`` row slots per task (the real rows of a task first, then empty slots). Both
sizes are rounded up to buckets (:func:`bucket`), so that data sets of similar size
share one compiled program. Boolean masks say which slots are real; empty slots hold a
finite placeholder input and a zero output, so no NaN ever reaches the JAX core.

:func:`._data.build_task_data` builds a :class:`Padded` from the caller's rows, once.
Later layouts (tasks grouped by length, a subset of tasks, several contexts together)
are made from it by :func:`take` and :func:`concat`, which read the masks and never
the values.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = [
    "Padded",
    "bucket",
    "concat",
    "empty",
    "grid_bucket",
    "row_bucket",
    "scatter",
    "take",
    "task_bucket",
]


def bucket(n: int, step: int, minimum: int = 8) -> int:
    """Padded size for ``n``: a power of two (at least ``minimum``) up to ``4 * step``,
    then a multiple of ``step``, so that data sets of similar size share one compiled
    program (the relative padding, hence the wasted work, stays below ``1 / 4`` past
    small sizes)."""
    n = max(int(n), 1)
    if n <= 4 * step:
        return max(minimum, 1 << (n - 1).bit_length())
    return int(math.ceil(n / step)) * step


def task_bucket(n: int) -> int:
    """Task slots for ``n`` tasks: powers of two up to 128, then multiples of 32.

    No minimum of eight: an empty slot costs as much as a real task (an ``N x N``
    factorisation per optimiser step), so one long task must not be padded to eight.
    Powers of two up to 128 let the folds of a cross-validation and the refit on all
    tasks share one compiled program (40 and 60 tasks both take 64 slots); at such
    sizes the per-task work is small next to the mean processes' ``G^3``."""
    return bucket(n, 32, 1)


def row_bucket(n: int) -> int:
    """Row slots for tasks of at most ``n`` rows."""
    return bucket(n, 8)


def grid_bucket(g: int) -> int:
    """Padded grid size: small relative padding for large grids (the cost is cubic)."""
    return bucket(g, 8 if g <= 128 else 32 if g <= 1024 else 128)


@dataclasses.dataclass(frozen=True, eq=False)
class Padded:
    """Tasks laid out in slots, with explicit masks.

    Attributes
    ----------
    x : ndarray of shape (S, N, I)
        Inputs; a placeholder (a real input) in empty slots.
    rows : ndarray of shape (S, N), bool
        Real rows: the first ``n_points`` row slots of each real task.
    n_tasks : int
        Real tasks, in the first ``n_tasks`` task slots.
    y : ndarray of shape (S, N, O) or None
        Outputs; 0 where not observed.
    observed : ndarray of shape (S, N, O), bool, or None
        Observed outputs (only on real rows).
    mappings : ndarray of shape (S, N), int, or None
        Grid index of every real row's input (anything in empty slots).
    """

    x: np.ndarray
    rows: np.ndarray
    n_tasks: int
    y: np.ndarray | None = None
    observed: np.ndarray | None = None
    mappings: np.ndarray | None = None

    @property
    def n_slots(self) -> int:
        """int: Task slots ``S``."""
        return int(self.x.shape[0])

    @property
    def n_rows(self) -> int:
        """int: Row slots per task ``N``."""
        return int(self.x.shape[1])

    @property
    def n_points(self) -> np.ndarray:
        """ndarray of shape (n_tasks,): real rows of every real task."""
        return self.rows[: self.n_tasks].sum(axis=1)

    @property
    def placeholder(self) -> np.ndarray:
        """(I,) input that empty slots hold."""
        return self.x[0, 0]


def _fill(shape: tuple[int, ...], value, dtype=np.float64) -> np.ndarray:
    out = np.empty(shape, dtype=dtype)
    out[...] = value
    return out


def scatter(
    task: np.ndarray,
    pos: np.ndarray,
    n_tasks: int,
    x: np.ndarray,
    y: np.ndarray | None = None,
    mappings: np.ndarray | None = None,
    placeholder: np.ndarray | None = None,
) -> Padded:
    """Caller rows into slots: row ``r`` goes to task slot ``task[r]``, row slot ``pos[r]``.

    Parameters
    ----------
    task, pos : int arrays of shape (n,)
        Destination of every row; the rows of a task must fill its first row slots.
    n_tasks : int
        Real tasks.
    x : ndarray of shape (n, I)
        Finite inputs.
    y : ndarray of shape (n, O), optional
        Outputs; NaN marks a missing output (the caller's convention, read only here).
    mappings : int array of shape (n,), optional
        Grid index of every row.
    placeholder : ndarray of shape (I,), optional
        Input of the empty slots (default: the first row's).
    """
    n_rows = row_bucket(int(pos.max(initial=-1)) + 1)
    slots = task_bucket(n_tasks)
    fill = x[0] if placeholder is None else placeholder
    xp = _fill((slots, n_rows, x.shape[1]), fill)
    xp[task, pos] = x
    rows = np.zeros((slots, n_rows), dtype=bool)
    rows[task, pos] = True
    yp = observed = maps = None
    if y is not None:
        observed = np.zeros((slots, n_rows, y.shape[1]), dtype=bool)
        observed[task, pos] = ~np.isnan(y)
        yp = np.zeros((slots, n_rows, y.shape[1]))
        yp[task, pos] = np.where(np.isnan(y), 0.0, y)
    if mappings is not None:
        maps = np.zeros((slots, n_rows), dtype=np.int64)
        maps[task, pos] = mappings
    return Padded(x=xp, rows=rows, n_tasks=int(n_tasks), y=yp, observed=observed, mappings=maps)


def take(
    p: Padded, tasks: np.ndarray, n_rows: int | None = None, n_slots: int | None = None
) -> Padded:
    """Tasks ``tasks`` (indices of real tasks of ``p``) in their own slots.

    ``n_rows`` sets the row slots (cut: every task taken must fit; grown: empty slots
    added); ``n_slots`` defaults to :func:`task_bucket` of the number of tasks taken.
    """
    tasks = np.asarray(tasks, dtype=np.int64)
    n_rows = p.n_rows if n_rows is None else int(n_rows)
    n_slots = task_bucket(tasks.size) if n_slots is None else int(n_slots)
    t, cut = tasks.size, min(n_rows, p.n_rows)

    def put(a: np.ndarray | None, fill) -> np.ndarray | None:
        if a is None:
            return None
        out = _fill((n_slots, n_rows) + a.shape[2:], fill, a.dtype)
        out[:t, :cut] = a[tasks, :cut]
        return out

    return Padded(
        x=put(p.x, p.placeholder),
        rows=put(p.rows, False),
        n_tasks=t,
        y=put(p.y, 0.0),
        observed=put(p.observed, False),
        mappings=put(p.mappings, 0),
    )


def empty(n_tasks: int, placeholder: np.ndarray, n_outputs: int) -> Padded:
    """``n_tasks`` tasks without any row (forecasts from the clusters alone)."""
    slots, n_rows = task_bucket(n_tasks), row_bucket(1)
    return Padded(
        x=_fill((slots, n_rows, placeholder.shape[0]), placeholder),
        rows=np.zeros((slots, n_rows), dtype=bool),
        n_tasks=int(n_tasks),
        y=np.zeros((slots, n_rows, n_outputs)),
        observed=np.zeros((slots, n_rows, n_outputs), dtype=bool),
    )


def concat(parts: list[Padded]) -> Padded:
    """The real tasks of every part, in order, in one layout (row slots: the largest)."""
    if len(parts) == 1:
        return parts[0]
    n_rows = max(q.n_rows for q in parts)
    t = sum(q.n_tasks for q in parts)
    n_slots = task_bucket(t)
    first = parts[0]

    def join(name: str, fill) -> np.ndarray | None:
        arrays = [getattr(q, name) for q in parts]
        if arrays[0] is None:
            return None
        a0 = arrays[0]
        out = _fill((n_slots, n_rows) + a0.shape[2:], fill, a0.dtype)
        start = 0
        for q, a in zip(parts, arrays, strict=True):
            out[start : start + q.n_tasks, : q.n_rows] = a[: q.n_tasks]
            start += q.n_tasks
        return out

    return Padded(
        x=join("x", first.placeholder),
        rows=join("rows", False),
        n_tasks=t,
        y=join("y", 0.0),
        observed=join("observed", False),
        mappings=join("mappings", 0),
    )
