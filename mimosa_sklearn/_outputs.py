"""Correlated outputs as a layout: ``(x, output)`` pairs stacked into one channel.

With ``correlated_outputs=True`` the ``O`` outputs of a task are modelled jointly by
multi-output kernels (ALGORITHM.md §6.2, :func:`mimosa_sklearn._kernels.correlated_kernel`).
Each observed pair ``(row, output p)`` becomes one row of a single-output problem whose
input is ``(x, p)``; unobserved pairs are no rows at all, so heterotopic data (an output
missing at some inputs) cost nothing. The fit and the JAX core then run unchanged with
``O = 1``; these functions move arrays between the caller's layout and the stacked one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ._padded import Padded, row_bucket, take

__all__ = ["FullCov", "stack_inputs", "stack_observed", "stack_rows", "unstack_spread"]

#: What a prediction returns beside the mean: variances (False), covariances between
#: the rows of each output (True), or, with correlated outputs, covariances across rows
#: and outputs ("joint").
FullCov = bool | Literal["joint"]


def stack_observed(tasks: Padded) -> Padded:
    """Observed ``(row, output)`` pairs of every task as rows of a one-output problem.

    Parameters
    ----------
    tasks : Padded
        Tasks with ``O`` outputs.

    Returns
    -------
    Padded
        Inputs ``(x, p)`` (``I + 1`` columns) and the value of each observed pair, in
        (row, output) order inside each task; row slots for the largest number of
        observed pairs of a task (bucketed), no grid indices.
    """
    s, n, o = tasks.y.shape
    flat = tasks.observed.reshape(s, n * o)
    # Stable sort puts each task's observed pairs first, in their original order.
    order = np.argsort(~flat, axis=1, kind="stable")
    size = row_bucket(int(flat.sum(axis=1).max(initial=0)))
    order = order[:, : min(size, n * o)]
    keep = np.take_along_axis(flat, order, axis=1)
    xs = np.take_along_axis(stack_inputs(tasks.x, o), order[..., None], axis=1)
    ys = np.take_along_axis(tasks.y.reshape(s, n * o, 1), order[..., None], axis=1)
    stacked = Padded(x=xs, rows=keep, n_tasks=tasks.n_tasks, y=ys, observed=keep[..., None])
    # More row slots than pairs (a bucket above n O): grow through take.
    return take(stacked, np.arange(tasks.n_tasks), n_rows=size, n_slots=s)


def stack_inputs(x: np.ndarray, n_outputs: int) -> np.ndarray:
    """Every output at every row: ``(..., M, I) -> (..., M * O, I + 1)``; row ``m * O +
    p`` is ``(x_m, p)``."""
    m = x.shape[-2]
    rep = np.repeat(x, n_outputs, axis=-2)
    ids = np.broadcast_to(np.tile(np.arange(n_outputs, dtype=np.float64), m), rep.shape[:-1])
    return np.concatenate([rep, ids[..., None]], axis=-1)


def stack_rows(tasks: Padded, n_outputs: int) -> Padded:
    """Prediction rows of every output: ``M`` row slots become ``M * O`` (inputs only)."""
    return Padded(
        x=stack_inputs(tasks.x, n_outputs),
        rows=np.repeat(tasks.rows, n_outputs, axis=1),
        n_tasks=tasks.n_tasks,
    )


def unstack_spread(spread: np.ndarray, n_outputs: int, full_cov: FullCov) -> np.ndarray:
    """Stacked variances or covariance back to the caller's output layout.

    ``(P, M*O, 1)`` -> ``(P, M, O)``; ``(P, 1, M*O, M*O)`` -> ``(P, O, M, M)`` (blocks
    of each output) or, for ``full_cov="joint"``, ``(P, M, O, M, O)``.
    """
    p = spread.shape[0]
    if not full_cov:
        return spread.reshape(p, -1, n_outputs)
    joint = spread[:, 0].reshape(p, -1, n_outputs, spread.shape[-1] // n_outputs, n_outputs)
    if full_cov == "joint":
        return joint
    blocks = np.diagonal(joint, axis1=2, axis2=4)  # (P, M, M, O)
    return np.moveaxis(blocks, -1, 1)
