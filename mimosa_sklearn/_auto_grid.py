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
from typing import Any

import numpy as np
from jaxtyping import Bool, Float

from ._data import TaskData, build_grid, first_bad_row, snap_inputs, to_2d_float

__all__ = [
    "EXACT_ALWAYS",
    "MAX_INDUCING",
    "MIN_INDUCING",
    "GridChoice",
    "choose_grid",
    "inducing_count",
    "inducing_inputs",
    "resolve_grid",
]

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


def _spacing(
    x: Float[np.ndarray, "T N I"], rows: Bool[np.ndarray, "T N"]
) -> Float[np.ndarray, " I"]:
    """Median gap between consecutive distinct values of each input inside a task.

    Only real ``rows`` count; an input with no gap anywhere (every task holds one value
    of it) gets NaN.
    """
    s = np.sort(np.where(rows[..., None], x, np.nan), axis=1)  # empty slots last
    gaps = np.diff(s, axis=1)  # (T, N-1, I); NaN next to padding
    out = np.full(x.shape[-1], np.nan)
    for d in range(x.shape[-1]):
        g = gaps[..., d]
        g = g[np.isfinite(g) & (g > 0)]
        if g.size:
            out[d] = float(np.median(g))
    return out


def inducing_count(x: Float[np.ndarray, "T N I"], rows: Bool[np.ndarray, "T N"]) -> int:
    """Number of inducing inputs for the data's range and resolution.

    Per input column ``d``: ``ceil(range_d / h_d) + 1`` lattice points with step
    ``h_d`` = the median gap between consecutive distinct values inside a task, divided
    by :data:`STEPS_PER_SPACING`; the product over columns, clipped to
    ``[MIN_INDUCING, MAX_INDUCING]``.
    """
    flat = x[rows]
    span = flat.max(axis=0) - flat.min(axis=0)
    step = _spacing(x, rows) / STEPS_PER_SPACING
    per_input = np.where(np.isfinite(step) & (step > 0), np.ceil(span / step) + 1, 1.0)
    total = float(np.prod(np.minimum(per_input, MAX_INDUCING)))
    return int(np.clip(total, MIN_INDUCING, MAX_INDUCING))


def choose_grid(
    x: Float[np.ndarray, "T N I"], rows: Bool[np.ndarray, "T N"], n_distinct: int
) -> GridChoice:
    """The rule of ``grid="auto"``.

    Parameters
    ----------
    x : ndarray of shape (T, N, I)
        Task inputs in row slots.
    rows : ndarray of shape (T, N), bool
        The real rows.
    n_distinct : int
        Number of distinct training inputs ``G``.

    Returns
    -------
    GridChoice
        The exact grid when ``G <= EXACT_ALWAYS``, or when ``G^3 <= sum_i N_i^3``: the
        grid costs no more work than the tasks, and then no more memory either (``G^2 <=
        sum_i N_i^2``, since ``||N||_3 <= ||N||_2``); otherwise ``M =
        inducing_count(x, rows)`` inducing inputs, unless ``M >= G``, where the exact grid is
        no larger.
    """
    g = int(n_distinct)
    # The work test implies the memory one: G^2 <= sum N_i^2, as ||N||_3 <= ||N||_2.
    work = float(np.sum(rows.sum(axis=1, dtype=np.float64) ** 3))
    exact = f"exact grid of {g} distinct inputs"
    if g <= EXACT_ALWAYS:
        return GridChoice("exact", g, g, f"{exact} (G <= {EXACT_ALWAYS})")
    if float(g) ** 3 <= work:
        return GridChoice("exact", g, g, f"{exact} (G^3 = {g**3:.3g} <= sum N_i^3 = {work:.3g})")
    m = inducing_count(x, rows)
    if m >= g:
        return GridChoice("exact", g, g, f"{exact} (no more than the {m} inducing inputs)")
    return GridChoice(
        "inducing",
        m,
        g,
        f"{m} inducing inputs from the inputs' range and half their spacing inside a task, "
        f"not the {exact} (G^3 = {g**3:.3g} > sum N_i^3 = {work:.3g})",
    )


def inducing_inputs(
    x: np.ndarray, grid: Any, *, seed: int = 0, rtol: float = 1e-9
) -> np.ndarray | None:
    """Inducing inputs of the approximate grid (``MagmaClusterRegressor(grid=...)``).

    Parameters
    ----------
    x : array-like of shape (n,) or (n, I)
        Training inputs (finite).
    grid : int or array-like of shape (M, I) or (M,)
        An int ``M >= 2`` picks ``M`` inputs from the data: a regular lattice from the
        smallest to the largest input when ``I = 1`` (uniform resolution, the range
        covered end to end), k-means centres of the distinct inputs (columns
        standardised) when ``I > 1``. An array gives the inducing inputs themselves;
        (near-)duplicate rows are merged since they would make ``c(u, u)`` singular.
    seed : int, default=0
        Seed of the k-means initialisation.
    rtol : float, default=1e-9
        Tolerance of :func:`snap_inputs` for counting distinct inputs.

    Returns
    -------
    ndarray of shape (M, I) or None
        Inducing inputs sorted lexicographically, or None when an int ``M`` is at least
        the number of distinct training inputs: the exact union grid is then no larger,
        so it is used instead.

    Raises
    ------
    ValueError
        For an int below 2, a non-integer scalar, an array with the wrong number of
        columns, non-finite values or no rows.
    """
    xa = to_2d_float(x, "x")
    n_in = xa.shape[1]
    if isinstance(grid, bool | np.bool_) or (np.ndim(grid) == 0 and not _is_int(grid)):
        raise ValueError(
            f"grid must be None, an int >= 2 (number of inducing inputs) or an array of "
            f"inducing inputs with {n_in} column(s); got {grid!r}"
        )
    if np.ndim(grid) == 0:
        m = int(grid)
        if m < 2:
            raise ValueError(
                f"grid={m}: an int grid is a number of inducing inputs and must be >= 2"
            )
        uniq = build_grid(snap_inputs(xa, rtol))
        if m >= uniq.shape[0]:
            return None
        if n_in == 1:
            lo, hi = float(uniq[0, 0]), float(uniq[-1, 0])
            return np.linspace(lo, hi, m)[:, None]
        centre, scale = uniq.mean(axis=0), uniq.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        # Imported here: the core brings JAX in, and importing the package must not.
        from .core.init import kmeans

        points = (uniq - centre) / scale
        labels = kmeans(points, m, np.random.default_rng(seed), n_restarts=1, n_iter=25)
        centres = np.stack([points[labels == k].mean(axis=0) for k in range(m)])
        return build_grid(centres * scale + centre)
    try:
        arr = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"grid must be numeric: {exc}") from exc
    if arr.ndim == 1 and n_in == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != n_in:
        raise ValueError(
            f"grid must have one column per input ({n_in}), got an array of shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError("grid has no rows: give at least one inducing input")
    row = first_bad_row(~np.isfinite(arr))
    if row is not None:
        raise ValueError(f"grid must be finite; grid row {row} is {arr[row].tolist()}")
    return build_grid(snap_inputs(arr, rtol))


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def resolve_grid(
    grid: Any, inputs: np.ndarray, td: TaskData, *, joint: bool, seed: int
) -> tuple[GridChoice, np.ndarray | None]:
    """The grid of a fit from the estimator's ``grid`` parameter.

    Parameters
    ----------
    grid : "auto", None, int or array-like
        As ``MagmaClusterRegressor(grid=...)``.
    inputs : ndarray of shape (n, I)
        The training inputs, one row per observation.
    td : TaskData
        The training tasks laid out on their exact grid.
    joint : bool
        Correlated outputs, which need the exact grid (``"auto"`` keeps it).
    seed : int
        Seed of the k-means that places inducing inputs with several input columns.

    Returns
    -------
    choice : GridChoice
        The grid chosen, with the reason.
    inducing : ndarray of shape (M, I) or None
        The inducing inputs; None for the exact grid.
    """
    g = int(td.grid.shape[0])
    exact = f"exact grid of {g} distinct inputs"
    if isinstance(grid, str):  # "auto"
        if joint:
            return GridChoice("exact", g, g, f"{exact} (correlated outputs need it)"), None
        choice = choose_grid(td.tasks.x, td.tasks.rows, g)
        if choice.kind == "exact":
            return choice, None
        inducing = inducing_inputs(inputs, choice.size, seed=seed)
        if inducing is None:
            return GridChoice("exact", g, g, f"{exact} (grid='auto')"), None
        return choice, inducing
    if grid is None:
        return GridChoice("exact", g, g, f"{exact} (grid=None)"), None
    given = f"grid={int(grid)}" if np.ndim(grid) == 0 else "inducing inputs given as grid"
    inducing = inducing_inputs(inputs, grid, seed=seed)
    if inducing is None:  # an int M at least the number of distinct inputs
        return GridChoice("exact", g, g, f"{exact} ({given})"), None
    m = int(inducing.shape[0])
    return GridChoice("inducing", m, g, f"{m} inducing inputs ({given})"), inducing
