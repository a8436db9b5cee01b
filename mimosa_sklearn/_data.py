"""Conversion of ragged task rows into padded, grid-indexed tasks.

A multi-task data set arrives as ``n`` rows, each carrying a task id, an input
vector and (optionally) an output vector, NaN marking a missing output. Tasks have
very different numbers of rows, so the JAX core works on *padded* arrays of shape
``(S, N, ...)``: task and row slots at bucketed sizes, with boolean masks
(:class:`._padded.Padded`). They are built here, once; nothing downstream pads from
NaN again.

Every real row is also mapped to a point of a shared input *grid*: the sorted
unique input rows of the data. MagmaClust's mean processes live on that grid,
and the per-task mappings let the core gather grid quantities for each task.
Floating-point noise in the inputs (``0.1 + 0.2`` versus ``0.3``) would create
spurious distinct grid points, so inputs are first *snapped*: values closer
than a relative tolerance are merged.

With ``canonical=True`` the padded layout depends on the *content* of the data
only: tasks, and rows inside each task, are put in an order computed from their
values, so that a fit does not depend on how the caller ordered rows or tasks, nor
on the task ids. The caller's order is recovered through ``task_codes`` /
``row_pos`` (rows) and ``task_index`` (tasks).

This module is pure NumPy (no pandas, no JAX) and fully vectorised: there is no
Python-level loop over rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ._padded import Padded, scatter

__all__ = [
    "TaskData",
    "build_grid",
    "build_task_data",
    "encode_task_ids",
    "map_to_grid",
    "snap_inputs",
]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class TaskData:
    """Caller rows laid out as padded tasks, and the way back.

    Instances are built by :func:`build_task_data`. ``T`` is the number of tasks, ``G``
    the grid size and ``n`` the number of caller rows.

    Parameters
    ----------
    tasks : Padded
        The tasks at bucketed shapes with their masks (:mod:`._padded`): snapped inputs,
        in caller row order inside each task (in canonical order with
        ``canonical=True``); outputs and the observed mask when built with outputs;
        grid indices (``mappings``) when built with a grid.
    grid : ndarray of shape (G, I), dtype float64, or None
        Unique input rows sorted lexicographically (column 0 first); None when built
        without a grid.
    task_codes : ndarray of shape (n,), dtype int64
        Task slot (``0 .. T-1``) of each caller row, in caller row order. Equal to the
        task codes given to :func:`build_task_data` unless it was called with
        ``canonical=True``.
    row_pos : ndarray of shape (n,), dtype int64
        Row slot of each caller row inside its task.
    n_points : ndarray of shape (T,), dtype int64
        Number of rows of each task (by slot).
    task_index : ndarray of shape (T,), dtype int64
        Task slot of each task code given to :func:`build_task_data`: task code ``c``
        is laid out in slot ``task_index[c]``. The identity unless built with
        ``canonical=True``.
    """

    tasks: Padded
    grid: np.ndarray | None
    task_codes: np.ndarray
    row_pos: np.ndarray
    n_points: np.ndarray
    task_index: np.ndarray

    @property
    def n_tasks(self) -> int:
        """int: Number of tasks ``T``."""
        return int(self.n_points.shape[0])

    @property
    def n_grid(self) -> int:
        """int: Number of grid points ``G`` (0 without a grid)."""
        return 0 if self.grid is None else int(self.grid.shape[0])

    @property
    def task_order(self) -> np.ndarray:
        """ndarray of shape (T,), int64: task code laid out in each task slot.

        The inverse permutation of :attr:`task_index`: ``task_order[t]`` is the code
        of task slot ``t``, so ``per_code = per_slot[task_index]`` and
        ``per_slot = per_code[task_order]``.
        """
        order = np.empty_like(self.task_index)
        order[self.task_index] = np.arange(self.task_index.size, dtype=np.int64)
        return order

    def to_rows(self, values: np.ndarray) -> np.ndarray:
        """Gather per-slot values back into caller row order.

        Parameters
        ----------
        values : array-like of shape (S, N, ...)
            Values laid out like the tasks (e.g. predictions), for at least the ``T``
            real tasks and exactly the ``N`` row slots.

        Returns
        -------
        ndarray of shape (n, ...)
            ``values[task_codes[r], row_pos[r]]`` for every caller row ``r``.

        Raises
        ------
        ValueError
            If ``values`` does not cover the tasks and row slots.
        """
        values = np.asarray(values)
        n_rows = self.tasks.n_rows
        if values.ndim < 2 or values.shape[0] < self.n_tasks or values.shape[1] != n_rows:
            raise ValueError(
                f"values must have leading shape ({self.n_tasks} or more, {n_rows}), "
                f"got shape {values.shape}"
            )
        return values[self.task_codes, self.row_pos]

    def __repr__(self) -> str:
        # The default dataclass repr would print every array in full.
        p = self.tasks
        n_out = 0 if p.y is None else p.y.shape[-1]
        return (
            f"TaskData(n_tasks={self.n_tasks}, slots={p.x.shape[:2]}, "
            f"n_inputs={p.x.shape[-1]}, n_outputs={n_out}, n_grid={self.n_grid}, "
            f"n_rows={self.task_codes.size})"
        )


# --------------------------------------------------------------------------- task ids


def _is_missing_scalar(value: Any) -> bool:
    """Return True for None, float NaN and pandas/NumPy missing-value sentinels."""
    if value is None:
        return True
    if isinstance(value, float | np.floating | complex | np.complexfloating):
        return bool(np.isnan(value))
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    # pandas.NA / pandas.NaT without importing pandas: identified by type name.
    return type(value).__name__ in {"NAType", "NaTType"}


_is_missing_vec = np.frompyfunc(_is_missing_scalar, 1, 1)


def _missing_mask(ids: np.ndarray) -> np.ndarray:
    """Boolean mask of missing ids, dispatched on dtype to stay vectorised."""
    kind = ids.dtype.kind
    if kind in "fc":
        return np.isnan(ids)
    if kind in "mM":
        return np.isnat(ids)
    if kind == "O":
        # Object arrays may hold None, NaN or pd.NA, whose comparisons do not
        # reduce to plain booleans; a ufunc over a scalar predicate is robust.
        return _is_missing_vec(ids).astype(bool) if ids.size else np.zeros(0, dtype=bool)
    return np.zeros(ids.shape, dtype=bool)


def encode_task_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode task ids as integer codes in first-seen order.

    Parameters
    ----------
    ids : array-like of shape (n,)
        Task id of every row: strings, integers, floats or arbitrary hashable
        objects (e.g. the values of a pandas categorical converted with
        ``np.asarray``). A ``(n, 1)`` column is accepted and flattened.

    Returns
    -------
    codes : ndarray of shape (n,), dtype int64
        Code of each row; task ``t`` is the ``t``-th distinct id met when
        reading the rows from top to bottom.
    uniques : ndarray of shape (T,)
        The distinct ids in first-seen order (same dtype as ``ids``).

    Raises
    ------
    ValueError
        If ``ids`` is not one-dimensional, or if an id is missing (None, NaN,
        NaT or ``pd.NA``); the message names the first offending row.
    """
    ids = np.asarray(ids)
    if ids.ndim == 2 and ids.shape[1] == 1:
        ids = ids[:, 0]
    if ids.ndim != 1:
        raise ValueError(f"task ids must be one-dimensional, got shape {ids.shape}")
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64), ids.copy()
    if ids.dtype.kind == "O":
        # Hashing object ids is much faster than sorting them (Python-level
        # comparisons), and missing values need only be looked for among the
        # distinct ids.
        try:
            codes, uniques = _encode_by_hash(ids)
        except TypeError:
            codes, uniques = _encode_by_sorting(ids)
        bad = _missing_mask(uniques)
        if bad.any():
            row = int(np.flatnonzero(bad[codes])[0])
            raise ValueError(f"task id is missing (None/NaN) at row {row}")
        return codes, uniques
    missing = _missing_mask(ids)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ValueError(f"task id is missing (None/NaN) at row {row}")
    return _encode_by_sorting(ids)


def _encode_by_sorting(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First-seen encoding through ``np.unique`` (ids must be orderable)."""
    try:
        uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    except TypeError as exc:
        raise ValueError(f"task ids must be hashable or mutually orderable: {exc}") from exc
    # np.unique sorts; re-rank the distinct ids by their first occurrence.
    order = np.argsort(first, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size, dtype=np.int64)
    return rank[inverse.reshape(-1)], uniq[order]


def _encode_by_hash(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First-seen encoding of hashable ids through a dict (C-level iteration)."""
    values = ids.tolist()
    # dict.fromkeys keeps first-seen order; raises TypeError on unhashable ids.
    lookup = {value: code for code, value in enumerate(dict.fromkeys(values))}
    codes = np.fromiter(map(lookup.__getitem__, values), dtype=np.int64, count=len(values))
    # Codes are already in first-seen order, so sorted unique codes give first rows.
    _, first = np.unique(codes, return_index=True)
    return codes, ids[first]


# --------------------------------------------------------------------------- inputs and grid


def to_2d_float(a: Any, name: str) -> np.ndarray:
    """Convert to a float64 array of shape (n, d); a 1-D array becomes one column."""
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    return arr


def snap_inputs(x: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """Merge input values that differ only by floating-point noise.

    Each column is sorted; consecutive sorted values whose gap is at most
    ``rtol * scale`` (``scale`` = largest finite absolute value of that column,
    or 1 when it is 0) form a run, and every value of a run is replaced by the
    run's first (smallest) value. Runs chain (single linkage), so a long
    sequence of tiny steps collapses to one value; with the default tolerance
    this only merges representation noise such as ``0.1 + 0.2`` vs ``0.3``.

    Parameters
    ----------
    x : array-like of shape (n,) or (n, I)
        Inputs. NaN values are left untouched (each stays its own run).
    rtol : float, default=1e-12
        Relative merge tolerance; 0 merges exact duplicates only (no-op). About
        4500 units in the last place: far above representation noise, yet far
        below real spacings such as one second in POSIX timestamps (~1.7e9),
        which a looser tolerance would chain into a single input.

    Returns
    -------
    ndarray of the same shape as ``x``, dtype float64
        Snapped inputs.
    """
    if rtol < 0:
        raise ValueError(f"rtol must be non-negative, got {rtol}")
    arr = np.asarray(x, dtype=np.float64)
    squeeze = arr.ndim == 1
    arr2 = arr[:, None] if squeeze else arr
    if arr2.ndim != 2:
        raise ValueError(f"x must be 1-D or 2-D, got shape {arr.shape}")
    n = arr2.shape[0]
    if n == 0:
        return arr.copy()
    finite_abs = np.where(np.isfinite(arr2), np.abs(arr2), 0.0)
    scale = finite_abs.max(axis=0)
    tol = rtol * np.where(scale > 0, scale, 1.0)
    order = np.argsort(arr2, axis=0, kind="stable")
    s = np.take_along_axis(arr2, order, axis=0)
    # `~(gap <= tol)` (not `gap > tol`) so that NaN gaps start a new run.
    new_run = np.ones_like(s, dtype=bool)
    new_run[1:] = ~(np.diff(s, axis=0) <= tol)
    # Index of the first element of each element's run: running max of run starts.
    starts = np.where(new_run, np.arange(n)[:, None], 0)
    np.maximum.accumulate(starts, axis=0, out=starts)
    snapped_sorted = np.take_along_axis(s, starts, axis=0)
    out = np.empty_like(arr2)
    np.put_along_axis(out, order, snapped_sorted, axis=0)
    return out[:, 0] if squeeze else out


def _row_keys(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense lexicographic rank of each row of ``x`` (n, I).

    Returns the rank of every row (equal rows share a rank, ranks follow the
    lexicographic order with column 0 most significant) and, for each rank,
    the index of one row holding it. Columns are combined one at a time and
    re-densified, so the combined key never exceeds ``n**2`` (no overflow).
    """
    key = np.zeros(x.shape[0], dtype=np.int64)
    for j in range(x.shape[1]):  # loop over input dimensions, not rows
        _, col = np.unique(x[:, j], return_inverse=True)
        col = col.reshape(-1).astype(np.int64)
        combined = key * (int(col.max(initial=0)) + 1) + col
        _, key = np.unique(combined, return_inverse=True)
        key = key.reshape(-1).astype(np.int64)
    _, first = np.unique(key, return_index=True)
    return key, first


def build_grid(x: np.ndarray) -> np.ndarray:
    """Sorted unique input rows.

    Parameters
    ----------
    x : array-like of shape (n,) or (n, I)
        Inputs, already snapped with :func:`snap_inputs` and finite.

    Returns
    -------
    ndarray of shape (G, I), dtype float64
        Distinct rows of ``x`` in lexicographic order (column 0 first).
    """
    arr = to_2d_float(x, "x")
    if arr.shape[0] == 0:
        return arr.copy()
    _, first = _row_keys(arr)
    return arr[first]


def _lookup_rows(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of each row of ``x`` in ``grid`` by exact match, -1 when absent."""
    n_grid = grid.shape[0]
    keys, _ = _row_keys(np.concatenate([grid, x], axis=0))
    table = np.full(int(keys.max(initial=-1)) + 1, -1, dtype=np.int64)
    # Reversed assignment so that, for duplicated grid rows, the first one wins.
    table[keys[:n_grid][::-1]] = np.arange(n_grid - 1, -1, -1, dtype=np.int64)
    return table[keys[n_grid:]]


def map_to_grid(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of each input row in the grid.

    Parameters
    ----------
    x : array-like of shape (n,) or (n, I)
        Snapped inputs.
    grid : array-like of shape (G,) or (G, I)
        Grid, e.g. from :func:`build_grid`.

    Returns
    -------
    ndarray of shape (n,), dtype int64
        ``grid[result[r]] == x[r]`` for every row ``r`` (exact equality).

    Raises
    ------
    ValueError
        If the input dimensions differ, or if a row of ``x`` is not a grid row
        (the message names the first such row).
    """
    arr = to_2d_float(x, "x")
    grd = to_2d_float(grid, "grid")
    if arr.shape[1] != grd.shape[1]:
        raise ValueError(f"x has {arr.shape[1]} input columns but grid has {grd.shape[1]}")
    idx = _lookup_rows(arr, grd)
    off = idx < 0
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(f"input row {row} ({arr[row].tolist()}) is not on the grid")
    return idx


# --------------------------------------------------------------------------- padding


def first_bad_row(bad: np.ndarray) -> int | None:
    """Index of the first row with any True entry, or None."""
    rows = bad.reshape(bad.shape[0], -1).any(axis=1)
    return int(np.argmax(rows)) if rows.any() else None


def _content_ranks(content: np.ndarray) -> np.ndarray:
    """Dense rank of each row of ``content`` (n, d) in lexicographic order.

    Column 0 is most significant; NaN sorts after every number and equals NaN, so
    missing outputs are ordered deterministically. Equal rows share a rank.
    """
    n = content.shape[0]
    by_content = np.lexsort(content.T[::-1])  # lexsort's last key is the primary one
    s = content[by_content]
    same = (s[1:] == s[:-1]) | (np.isnan(s[1:]) & np.isnan(s[:-1]))
    new_value = np.ones(n, dtype=bool)
    new_value[1:] = ~same.all(axis=1)
    ranks = np.empty(n, dtype=np.int64)
    ranks[by_content] = np.cumsum(new_value) - 1
    return ranks


def _canonical_layout(
    codes: np.ndarray, n_tasks: int, content: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Content-only order of the tasks and of the rows inside each task.

    Rows of a task are ordered by their content (lexicographic, see
    :func:`_content_ranks`); tasks are ordered by the lexicographic order of their
    sorted row contents, a task that is a prefix of another coming first. Only
    tasks with exactly the same rows tie; they keep their relative code order,
    which cannot matter since their data are identical.

    Returns ``task_index`` (padded index of each code, shape (T,)) and ``order``
    (caller rows sorted by padded task, then by content, shape (n,)).
    """
    n = codes.size
    ranks = _content_ranks(content)
    # Rows grouped by code, by content inside; one int64 key (< n**2) sorts faster
    # than a two-key lexsort.
    by_task = np.argsort(codes * n + ranks, kind="stable")
    counts = np.bincount(codes, minlength=n_tasks)
    starts = np.cumsum(counts) - counts
    pos = np.arange(n, dtype=np.int64) - starts[codes[by_task]]
    # One row per task: its sorted content ranks, padded with -1 (a prefix sorts
    # first). The matrix is the size of the padded data.
    keys = np.full((n_tasks, int(counts.max(initial=0))), -1, dtype=np.int64)
    keys[codes[by_task], pos] = ranks[by_task]
    task_order = np.lexsort(keys.T[::-1]) if keys.shape[1] else np.arange(n_tasks)
    task_index = np.empty(n_tasks, dtype=np.int64)
    task_index[task_order] = np.arange(n_tasks, dtype=np.int64)
    order = np.argsort(task_index[codes] * n + ranks, kind="stable")
    return task_index, order


def build_task_data(
    task_codes: np.ndarray,
    n_tasks: int,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    canonical: bool = False,
    with_grid: bool = True,
) -> TaskData:
    """Lay ragged task rows out as padded tasks (:mod:`._padded`) indexed on a grid.

    Parameters
    ----------
    task_codes : array-like of int, shape (n,)
        Task code of every row, in ``0 .. n_tasks-1`` (see
        :func:`encode_task_ids`). Tasks without rows are allowed (fully padded).
    n_tasks : int
        Number of tasks ``T``.
    x : array-like of shape (n,) or (n, I)
        Inputs; must be finite. Duplicated inputs inside a task are kept.
    y : array-like of shape (n,) or (n, O), optional
        Outputs; NaN marks a missing output (the row is kept), infinities are
        rejected.
    canonical : bool, default=False
        Lay tasks and rows out in an order that depends only on the data, not on
        the caller's row order or task codes: rows of a task sorted
        lexicographically by snapped inputs then outputs (NaN last), tasks sorted
        lexicographically by their sorted rows. Then the padded arrays, hence
        anything computed from them, are the same for any shuffle of the rows and
        any relabelling of the tasks. ``task_codes``, ``row_pos`` and
        ``task_index`` of the result map back to the caller's rows and codes.
    with_grid : bool, default=True
        Build the grid of the inputs and every row's index on it (predictions need
        neither).

    Returns
    -------
    TaskData
        Padded tasks; rows keep their caller order inside each task, and tasks
        their code order, unless ``canonical`` is True.

    Raises
    ------
    ValueError
        On inconsistent shapes or lengths, task codes out of range, non-finite
        inputs or infinite outputs; messages name the first offending row.
    """
    codes = np.asarray(task_codes)
    if codes.ndim != 1:
        raise ValueError(f"task_codes must be one-dimensional, got shape {codes.shape}")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"task_codes must be integers, got dtype {codes.dtype}")
    codes = codes.astype(np.int64, copy=False)
    n_tasks = int(n_tasks)
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be at least 1, got {n_tasks}")
    n = codes.size
    if n == 0:
        raise ValueError("cannot build task data from zero rows")
    bad_code = (codes < 0) | (codes >= n_tasks)
    if bad_code.any():
        row = int(np.argmax(bad_code))
        raise ValueError(f"task code {codes[row]} at row {row} is outside [0, {n_tasks})")

    xa = to_2d_float(x, "x")
    if xa.shape[0] != n:
        raise ValueError(f"x has {xa.shape[0]} rows but task_codes has {n}")
    row = first_bad_row(~np.isfinite(xa))
    if row is not None:
        raise ValueError(f"x must be finite; row {row} contains {xa[row].tolist()}")
    ya: np.ndarray | None = None
    if y is not None:
        ya = to_2d_float(y, "y")
        if ya.shape[0] != n:
            raise ValueError(f"y has {ya.shape[0]} rows but task_codes has {n}")
        row = first_bad_row(np.isinf(ya))
        if row is not None:
            raise ValueError(f"y must not contain infinities; row {row} is {ya[row].tolist()}")
    xs = snap_inputs(xa)
    mapping = grd = None
    if with_grid:
        mapping, first = _row_keys(xs)
        grd = xs[first]

    if canonical:
        content = xs if ya is None else np.concatenate([xs, ya], axis=1)
        task_index, order = _canonical_layout(codes, n_tasks, content)
        codes = task_index[codes]
    else:
        task_index = np.arange(n_tasks, dtype=np.int64)
        # Stable sort by task keeps caller order inside each task.
        order = np.argsort(codes, kind="stable")
    n_points = np.bincount(codes, minlength=n_tasks).astype(np.int64)
    starts = np.cumsum(n_points) - n_points
    row_pos = np.empty(n, dtype=np.int64)
    row_pos[order] = np.arange(n, dtype=np.int64) - starts[codes[order]]
    # Empty slots hold a real input: the first grid point, or the first row's.
    placeholder = xs[0] if grd is None else grd[0]
    tasks = scatter(codes, row_pos, n_tasks, xs, ya, mapping, placeholder)
    return TaskData(
        tasks=tasks,
        grid=grd,
        task_codes=codes,
        row_pos=row_pos,
        n_points=n_points,
        task_index=task_index,
    )
