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

__all__ = ["FullCov", "stack_observed", "stack_inputs", "unstack_spread"]

#: What a prediction returns beside the mean: variances (False), covariances between
#: the rows of each output (True), or, with correlated outputs, covariances across rows
#: and outputs ("joint").
FullCov = bool | Literal["joint"]


def stack_observed(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observed ``(row, output)`` pairs of every task as rows of a one-output problem.

    Parameters
    ----------
    x : array of shape (T, N, I)
        Inputs, NaN rows on padding.
    y : array of shape (T, N, O)
        Outputs, NaN where padded or not observed.

    Returns
    -------
    x_stacked : array of shape (T, Ns, I + 1)
        ``(x, p)`` of each observed pair, in (row, output) order inside each task, then
        NaN rows; ``Ns`` is the largest number of observed pairs of a task.
    y_stacked : array of shape (T, Ns, 1)
        The observed values, NaN on padding.
    """
    t, n, o = y.shape
    obs = (~np.isnan(x).any(-1))[..., None] & ~np.isnan(y)
    xs, ys = stack_inputs(x, o), y.reshape(t, n * o, 1)
    flat = obs.reshape(t, n * o)
    # Stable sort puts each task's observed pairs first, in their original order.
    order = np.argsort(~flat, axis=1, kind="stable")
    size = max(int(flat.sum(axis=1).max(initial=0)), 1)
    order = order[:, :size]
    keep = np.take_along_axis(flat, order, axis=1)
    xs = np.take_along_axis(xs, order[..., None], axis=1)
    ys = np.take_along_axis(ys, order[..., None], axis=1)
    xs[~keep] = np.nan
    ys[~keep] = np.nan
    return xs, ys


def stack_inputs(x: np.ndarray, n_outputs: int) -> np.ndarray:
    """Every output at every row: ``(..., M, I) -> (..., M * O, I + 1)``.

    Row ``m * O + p`` is ``(x_m, p)``; NaN rows (padding) stay NaN, output column
    included.
    """
    m = x.shape[-2]
    rep = np.repeat(x, n_outputs, axis=-2)
    ids = np.tile(np.arange(n_outputs, dtype=np.float64), m)
    ids = np.broadcast_to(ids, rep.shape[:-1]).copy()
    ids[np.isnan(rep).any(-1)] = np.nan
    return np.concatenate([rep, ids[..., None]], axis=-1)


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
