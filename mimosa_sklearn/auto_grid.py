"""The default ``grid="auto"``: the exact union grid while it is cheap, inducing inputs beyond.

With the exact grid the mean processes live on every distinct training input: an EM
iteration factorises ``G x G`` matrices (``O(G^3)`` work, ``O(G^2)`` memory), and ``G``
grows with the data when the inputs are continuous (patients seen at arbitrary times:
``G`` is then the number of rows). The tasks themselves cost ``O(N_i^3)`` work and
``O(N_i^2)`` memory each. :func:`choose_grid` keeps the exact grid while its cost stays
below the tasks' cost (or is negligible anyway), and otherwise puts the mean processes
on a regular lattice of inducing inputs fine enough for the data's resolution.

The choice reads only the padded task inputs, in which every task's rows are sorted: it
is the same for a data set whatever the order of its rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Float, Int

__all__ = ["EXACT_ALWAYS", "MAX_INDUCING", "MIN_INDUCING", "GridChoice", "choose_grid"]

#: An exact grid of at most this many points is always kept: ``256^3`` flops take
#: milliseconds, less than any task work worth comparing with.
EXACT_ALWAYS = 256
#: Fewest inducing inputs chosen: a coarser lattice saves nothing measurable.
MIN_INDUCING = 32
#: Most inducing inputs chosen: bounds the ``O(T N M^2 + K M^3)`` work of the
#: approximate grid (and the ``T x N x M`` interpolation weights) on data whose
#: spacing is far below its range.
MAX_INDUCING = 512
#: Lattice steps per typical spacing of a task's inputs (two: the mean processes are
#: resolved at half the spacing at which any one task is observed).
STEPS_PER_SPACING = 2


@dataclasses.dataclass(frozen=True)
class GridChoice:
    """Where the mean processes live, as chosen by ``grid="auto"`` (or forced).

    Attributes
    ----------
    kind : {"exact", "inducing"}
        ``"exact"``: the union of the training inputs; ``"inducing"``: ``size`` inducing
        inputs (the approximate grid).
    size : int
        Number of grid points: ``n_distinct_inputs`` for the exact grid, ``M`` otherwise.
    n_distinct_inputs : int
        Number of distinct training inputs, the size ``G`` of the exact grid.
    reason : str
        Why, in words, with the numbers compared.
    """

    kind: str
    size: int
    n_distinct_inputs: int
    reason: str


def _spacing(x: Float[np.ndarray, "T N I"]) -> Float[np.ndarray, " I"]:
    """Median gap between consecutive distinct values of each input inside a task.

    NaN rows (padding) are ignored; an input with no gap anywhere (every task holds one
    value of it) gets NaN.
    """
    s = np.sort(x, axis=1)  # NaN (padding) last
    gaps = np.diff(s, axis=1)  # (T, N-1, I); NaN next to padding
    out = np.full(x.shape[-1], np.nan)
    for d in range(x.shape[-1]):
        g = gaps[..., d]
        g = g[np.isfinite(g) & (g > 0)]
        if g.size:
            out[d] = float(np.median(g))
    return out


def inducing_count(x: Float[np.ndarray, "T N I"]) -> int:
    """Number of inducing inputs for the data's range and resolution.

    Per input column ``d``: ``ceil(range_d / h_d) + 1`` lattice points with step
    ``h_d`` = the median gap between consecutive distinct values inside a task, divided
    by :data:`STEPS_PER_SPACING`; the product over columns, clipped to
    ``[MIN_INDUCING, MAX_INDUCING]``.
    """
    flat = x.reshape(-1, x.shape[-1])
    flat = flat[~np.isnan(flat).any(axis=1)]
    span = flat.max(axis=0) - flat.min(axis=0)
    step = _spacing(x) / STEPS_PER_SPACING
    per_input = np.where(np.isfinite(step) & (step > 0), np.ceil(span / step) + 1, 1.0)
    total = float(np.prod(np.minimum(per_input, MAX_INDUCING)))
    return int(np.clip(total, MIN_INDUCING, MAX_INDUCING))


def choose_grid(
    x: Float[np.ndarray, "T N I"], n_points: Int[np.ndarray, " T"], n_distinct: int
) -> GridChoice:
    """The rule of ``grid="auto"``.

    Parameters
    ----------
    x : ndarray of shape (T, N, I)
        Task inputs, NaN on padded rows.
    n_points : ndarray of shape (T,)
        Number of rows of every task.
    n_distinct : int
        Number of distinct training inputs ``G``.

    Returns
    -------
    GridChoice
        The exact grid when ``G <= EXACT_ALWAYS``, or when ``G^3 <= sum_i N_i^3``: the
        grid costs no more work than the tasks, and then no more memory either (``G^2 <=
        sum_i N_i^2``, since ``||N||_3 <= ||N||_2``); otherwise ``M =
        inducing_count(x)`` inducing inputs, unless ``M >= G``, where the exact grid is
        no larger.
    """
    g = int(n_distinct)
    # The work test implies the memory one: G^2 <= sum N_i^2, as ||N||_3 <= ||N||_2.
    work = float(np.sum(np.asarray(n_points, dtype=np.float64) ** 3))
    exact = f"exact grid of {g} distinct inputs"
    if g <= EXACT_ALWAYS:
        return GridChoice("exact", g, g, f"{exact} (G <= {EXACT_ALWAYS})")
    if float(g) ** 3 <= work:
        return GridChoice("exact", g, g, f"{exact} (G^3 = {g**3:.3g} <= sum N_i^3 = {work:.3g})")
    m = inducing_count(x)
    if m >= g:
        return GridChoice("exact", g, g, f"{exact} (no more than the {m} inducing inputs)")
    return GridChoice(
        "inducing",
        m,
        g,
        f"{m} inducing inputs from the inputs' range and half their spacing inside a task, "
        f"not the {exact} (G^3 = {g**3:.3g} > sum N_i^3 = {work:.3g})",
    )
