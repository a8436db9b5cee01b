"""Tasks grouped by their distinct inputs, for predictions on many tasks.

The mean processes' hyperposterior reaches an input through ``G x G`` products
(:func:`.core.predict.extend_to_inputs`), by far the largest cost of a prediction. Tasks
often share inputs (ages on a day grid, the months of a growth chart), so the programs
on tasks take the distinct inputs ``u`` of a group of tasks and every task's inputs as
indices into ``u``: the products are then done once per distinct input. A group grows,
task by task in order, while its distinct inputs stay within a cap, which bounds the
memory of the ``(K, O, U, G)`` and ``(K, O, U, U)`` arrays the group needs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._padded import grid_bucket

__all__ = ["InputGroup", "group_by_inputs"]


@dataclasses.dataclass(frozen=True)
class InputGroup:
    """Consecutive tasks and their distinct inputs.

    Attributes
    ----------
    tasks : slice
        The group's tasks (leading axis of the arrays given to :func:`group_by_inputs`).
    inputs : ndarray of shape (U, I)
        Distinct inputs, padded to a bucketed size with copies of the first one.
    index : list of ndarray of shape (n, N_j), int32
        For every array given, each of the group's rows as an index into ``inputs``.
    shared : bool
        Whether the tasks share enough inputs that the ``U x U`` covariance of all
        inputs takes fewer flops than every task's own ``M x M`` blocks: ``U^2 <= n
        M^2`` for ``n`` tasks of ``M = sum_j N_j`` rows.
    """

    tasks: slice
    inputs: np.ndarray
    index: list[np.ndarray]
    shared: bool


def group_by_inputs(parts: list[np.ndarray], cap: int) -> list[InputGroup]:
    """Split tasks into groups of consecutive tasks with at most ``cap`` distinct inputs.

    Parameters
    ----------
    parts : list of ndarray of shape (S, N_j, I)
        Inputs of the same ``S`` tasks (e.g. observed rows, then prediction rows); all
        rows count, padded ones included (they hold a real input).
    cap : int
        Most distinct inputs of a group; a task with more is a group of its own.

    Returns
    -------
    groups : list of InputGroup
        Covering the ``S`` tasks in order.
    """
    n_tasks = parts[0].shape[0]
    widths = [p.shape[1] for p in parts]
    rows = np.concatenate([p.reshape(n_tasks, -1, p.shape[-1]) for p in parts], axis=1)
    distinct, codes = np.unique(rows.reshape(-1, rows.shape[-1]), axis=0, return_inverse=True)
    codes = codes.reshape(n_tasks, -1)
    groups = []
    start, seen = 0, np.zeros(distinct.shape[0], dtype=bool)
    n_seen = 0
    for i in range(n_tasks):
        new = np.unique(codes[i][~seen[codes[i]]])
        if n_seen + new.size > cap and i > start:
            groups.append(_group(distinct, codes, widths, start, i))
            start, n_seen = i, 0
            seen[:] = False
            new = np.unique(codes[i])
        seen[new] = True
        n_seen += new.size
    groups.append(_group(distinct, codes, widths, start, n_tasks))
    return groups


def _group(distinct, codes, widths, start: int, stop: int) -> InputGroup:
    used, local = np.unique(codes[start:stop], return_inverse=True)
    local = local.reshape(stop - start, -1).astype(np.int32)
    size = grid_bucket(used.size)
    inputs = distinct[np.concatenate([used, np.full(size - used.size, used[0])])]
    bounds = np.cumsum([0, *widths])
    index = [local[:, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    shared = size**2 <= (stop - start) * local.shape[1] ** 2
    return InputGroup(tasks=slice(start, stop), inputs=inputs, index=index, shared=shared)
