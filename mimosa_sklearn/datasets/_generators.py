"""Simulation of data from the MagmaClust generative model."""

from __future__ import annotations

import itertools
import numbers

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

__all__ = ["make_magma_data"]

# Largest number of distinct inputs on which the mean processes are sampled
# exactly; beyond it they are sampled on a lattice and interpolated.
_EXACT_MAX = 2000
# Lattice resolution for one input dimension (per-dimension size shrinks for
# more dimensions so that the lattice keeps about _EXACT_MAX points).
_LATTICE_1D = 500
# Budget of kernel entries per batch of tasks (bounds memory for big tasks).
_BATCH_ENTRIES = 4_000_000
# Candidate grids up to this size are subsampled by sorting random keys.
_KEY_SORT_MAX = 4096


def _se_kernel(a: np.ndarray, b: np.ndarray, variance: float, lengthscale: float) -> np.ndarray:
    """Isotropic squared-exponential kernel between the last-but-one axes of a and b."""
    sq = ((a[..., :, None, :] - b[..., None, :, :]) ** 2).sum(axis=-1)
    return variance * np.exp(-0.5 * sq / lengthscale**2)


def _cholesky_jittered(cov: np.ndarray, variance: float) -> np.ndarray:
    """Cholesky factor of (a stack of) SE covariances with the smallest jitter that works.

    Smooth SE covariances are numerically singular; a diagonal jitter relative
    to the variance (at most 1e-4 of it, far below any sensible noise level)
    restores positive definiteness.
    """
    eye = np.eye(cov.shape[-1])
    for rel in (1e-10, 1e-8, 1e-6, 1e-4):
        try:
            return np.linalg.cholesky(cov + rel * variance * eye)
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("covariance is not positive definite even with jitter")


def _interp_lattice(axis: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Multilinear interpolation of lattice values.

    ``values`` (m**d, C) are given on the lattice ``axis`` x ... x ``axis``
    enumerated in C order; ``x`` is (n, d). Returns (n, C).
    """
    m, d = axis.size, x.shape[1]
    pos = (x - axis[0]) / (axis[1] - axis[0])
    low = np.clip(np.floor(pos).astype(np.int64), 0, m - 2)
    frac = np.clip(pos - low, 0.0, 1.0)
    strides = m ** np.arange(d - 1, -1, -1, dtype=np.int64)
    out = np.zeros((x.shape[0], values.shape[1]))
    for corner in itertools.product((0, 1), repeat=d):  # 2**d corners, not rows
        c = np.asarray(corner)
        flat = ((low + c) * strides).sum(axis=1)
        weight = np.prod(np.where(c == 1, frac, 1.0 - frac), axis=1)
        out += weight[:, None] * values[flat]
    return out


def _distinct_indices(
    rng: np.random.Generator, n_candidates: int, n_rows: int, n_take: int
) -> np.ndarray:
    """For each of ``n_rows`` rows, ``n_take`` distinct indices in ``[0, n_candidates)``."""
    if n_candidates <= _KEY_SORT_MAX or 4 * n_take > n_candidates:
        # Sorting random keys is an exact uniform draw without replacement.
        chunk = max(1, _BATCH_ENTRIES // n_candidates)
        parts = [
            np.argsort(rng.random((min(chunk, n_rows - s), n_candidates)), axis=1)[:, :n_take]
            for s in range(0, n_rows, chunk)
        ]
        return np.concatenate(parts, axis=0).astype(np.int64)
    # Large candidate set: draw with replacement and redraw collisions, which
    # are rare because n_take is small compared with n_candidates.
    idx = rng.integers(n_candidates, size=(n_rows, n_take))
    while True:
        order = np.argsort(idx, axis=1, kind="stable")
        srt = np.take_along_axis(idx, order, axis=1)
        dup_sorted = np.zeros_like(srt, dtype=bool)
        dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
        if not dup_sorted.any():
            return idx
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        idx[dup] = rng.integers(n_candidates, size=int(dup.sum()))


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Validate a positive (or non-negative) finite real parameter."""
    if not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)


def _check_count(name: str, value: int, minimum: int = 1) -> int:
    """Validate an integer parameter with a lower bound."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def make_magma_data(
    n_tasks: int = 50,
    n_points: int | tuple[int, int] = 20,
    n_clusters: int = 3,
    *,
    input_dim: int = 1,
    n_outputs: int = 1,
    input_range: tuple[float, float] = (0.0, 10.0),
    grid_size: int | None = None,
    irregular: bool = True,
    mean_variance: float = 4.0,
    mean_lengthscale: float = 2.0,
    task_variance: float = 1.0,
    task_lengthscale: float = 1.0,
    noise: float = 0.1,
    cluster_offsets: ArrayLike | None = None,
    separation: float = 5.0,
    random_state: int | np.random.Generator | None = None,
) -> tuple[pd.DataFrame, pd.Series | pd.DataFrame, pd.Series]:
    """Generate multi-task data from the MagmaClust generative model.

    For clusters ``k = 0 .. K-1`` and tasks ``i = 0 .. T-1``:

    * mean process ``mu_k ~ GP(m_k, c)`` with constant prior mean ``m_k`` and
      squared-exponential (SE) covariance ``c`` (``mean_variance``,
      ``mean_lengthscale``);
    * cluster ``Z_i``: the tasks are split into clusters of sizes differing by
      at most one, in random order, so that no cluster is empty when
      ``n_tasks >= n_clusters``;
    * task deviation ``f_i ~ GP(0, s)`` with SE covariance ``s``
      (``task_variance``, ``task_lengthscale``);
    * observation ``y_i(x) = mu_{Z_i}(x) + f_i(x) + eps`` with
      ``eps ~ N(0, noise)``.

    With several outputs, every output has its own independent mean processes,
    deviations and noise; the cluster of a task is shared by its outputs. SE
    kernels are isotropic: ``k(x, x') = v * exp(-|x - x'|^2 / (2 l^2))``.

    Inputs are drawn as follows. When ``grid_size`` is None they are
    continuous, uniform on ``input_range`` in every dimension. When
    ``grid_size`` is given they lie on a regular grid of ``grid_size`` points
    per dimension spanning ``input_range`` (so ``grid_size ** input_dim``
    candidates) and each task uses distinct grid points. When ``irregular``,
    each task draws its own inputs; otherwise one draw is shared by all tasks.
    Inside each task the inputs are sorted (lexicographically when
    ``input_dim > 1``).

    The mean processes are sampled exactly (jointly) on the distinct inputs
    used when there are at most 2000 of them. Otherwise, e.g. for many tasks
    with continuous inputs, they are sampled on a regular lattice over
    ``input_range`` (500 points for one input dimension, about 2000 points in
    all for more) and interpolated (multi)linearly, which is accurate when the
    lattice step is small compared with ``mean_lengthscale``.

    Parameters
    ----------
    n_tasks : int, default=50
        Number of tasks ``T``.
    n_points : int or tuple of (int, int), default=20
        Number of points per task, or inclusive bounds ``(low, high)`` from
        which each task's number is drawn uniformly (variable task sizes;
        requires ``irregular=True``).
    n_clusters : int, default=3
        Number of clusters ``K``.
    input_dim : int, default=1
        Input dimension.
    n_outputs : int, default=1
        Number of outputs.
    input_range : tuple of (float, float), default=(0.0, 10.0)
        Range of every input dimension.
    grid_size : int, optional
        Number of grid points per input dimension; None for continuous inputs.
    irregular : bool, default=True
        Whether each task has its own inputs (True) or all tasks share them.
    mean_variance : float, default=4.0
        Variance of the mean processes' SE covariance.
    mean_lengthscale : float, default=2.0
        Lengthscale of the mean processes' SE covariance.
    task_variance : float, default=1.0
        Variance of the task deviations' SE covariance.
    task_lengthscale : float, default=1.0
        Lengthscale of the task deviations' SE covariance.
    noise : float, default=0.1
        Variance of the Gaussian observation noise (0 for noiseless data).
    cluster_offsets : array-like of shape (K,) or (K, n_outputs), optional
        Prior means ``m_k`` of the mean processes. When None they are
        ``separation * (k - (K - 1) / 2)``, evenly spread around 0.
    separation : float, default=5.0
        Spacing between consecutive default prior means; ignored when
        ``cluster_offsets`` is given.
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator (passed to :func:`numpy.random.default_rng`); the
        output is deterministic given an int seed.

    Returns
    -------
    X : DataFrame
        ``"ID"`` (task id, str such as ``"task_007"``) followed by ``"Input"``
        when ``input_dim == 1`` or by ``"x0", "x1", ...`` otherwise. Rows are
        grouped by task and sorted by input inside each task.
    y : Series or DataFrame
        Series ``"Output"`` when ``n_outputs == 1``, otherwise a DataFrame with
        columns ``"y0", "y1", ...``; aligned with ``X``.
    clusters : Series
        True cluster (int, ``0 .. K-1``) of every task, named ``"Cluster"`` and
        indexed by task ID.

    Raises
    ------
    ValueError
        On invalid parameters, e.g. more points per task than grid points.

    Examples
    --------
    >>> from mimosa_sklearn.datasets import make_magma_data
    >>> X, y, clusters = make_magma_data(n_tasks=10, n_points=(5, 15), random_state=0)
    >>> list(X.columns), clusters.nunique()
    (['ID', 'Input'], 3)
    """
    n_tasks = _check_count("n_tasks", n_tasks)
    n_clusters = _check_count("n_clusters", n_clusters)
    input_dim = _check_count("input_dim", input_dim)
    n_outputs = _check_count("n_outputs", n_outputs)
    mean_variance = _check_positive("mean_variance", mean_variance)
    mean_lengthscale = _check_positive("mean_lengthscale", mean_lengthscale)
    task_variance = _check_positive("task_variance", task_variance)
    task_lengthscale = _check_positive("task_lengthscale", task_lengthscale)
    noise = _check_positive("noise", noise, allow_zero=True)
    lo, hi = (float(v) for v in input_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"input_range must be finite with low < high, got {input_range!r}")
    if isinstance(n_points, tuple | list):
        if len(n_points) != 2:
            raise ValueError(f"n_points must be an int or a (low, high) pair, got {n_points!r}")
        low = _check_count("n_points[0]", n_points[0])
        high = _check_count("n_points[1]", n_points[1])
        if high < low:
            raise ValueError(f"n_points must satisfy low <= high, got {n_points!r}")
        if not irregular and high > low:
            raise ValueError("variable n_points requires irregular=True")
    else:
        low = high = _check_count("n_points", n_points)
    if grid_size is not None:
        grid_size = _check_count("grid_size", grid_size, minimum=2)
        n_candidates = grid_size**input_dim
        if high > n_candidates:
            raise ValueError(
                f"n_points (up to {high}) exceeds the {n_candidates} grid points available"
            )
    if cluster_offsets is None:
        separation = float(separation)
        offsets = separation * (np.arange(n_clusters) - (n_clusters - 1) / 2.0)
        offsets = np.repeat(offsets[:, None], n_outputs, axis=1)
    else:
        offsets = np.asarray(cluster_offsets, dtype=np.float64)
        if offsets.ndim == 1:
            offsets = np.repeat(offsets[:, None], n_outputs, axis=1)
        if offsets.shape != (n_clusters, n_outputs) or not np.isfinite(offsets).all():
            raise ValueError(
                f"cluster_offsets must be finite with shape ({n_clusters},) or "
                f"({n_clusters}, {n_outputs}), got shape {offsets.shape}"
            )

    rng = np.random.default_rng(random_state)
    sizes = rng.integers(low, high + 1, size=n_tasks) if high > low else np.full(n_tasks, low)
    n_max = int(sizes.max())
    clusters = rng.permutation(np.arange(n_tasks) % n_clusters)

    # --- inputs, padded to (T, n_max, d); valid[t, j] marks real points.
    valid = np.arange(n_max) < sizes[:, None]
    n_draw = n_tasks if irregular else 1
    # `point_id` identifies equal inputs with integers (grid index, or draw
    # position for continuous inputs, which are distinct almost surely); it is
    # much cheaper to deduplicate than float rows.
    if grid_size is None:
        pts = lo + (hi - lo) * rng.random((n_draw, n_max, input_dim))
        point_id = np.arange(n_draw * n_max).reshape(n_draw, n_max)
    else:
        point_id = _distinct_indices(rng, grid_size**input_dim, n_draw, n_max)
        axis = np.linspace(lo, hi, grid_size)
        coords = np.unravel_index(point_id, (grid_size,) * input_dim)
        pts = np.stack([axis[c] for c in coords], axis=-1)
    if not irregular:
        pts = np.broadcast_to(pts, (n_tasks, n_max, input_dim))
        point_id = np.broadcast_to(point_id, (n_tasks, n_max))
    # Sort each task's real points lexicographically; padding goes last.
    keys = np.where(valid[:, :, None], pts, np.inf)
    order = np.lexsort([keys[:, :, j] for j in range(input_dim - 1, -1, -1)], axis=-1)
    pts = np.take_along_axis(pts, order[:, :, None], axis=1)
    point_id = np.take_along_axis(point_id, order, axis=1)
    x_rows = pts[valid]  # (n, d), grouped by task
    task_rows = np.repeat(np.arange(n_tasks), sizes)

    # --- mean processes mu_k for every output, evaluated at every row.
    n_cols = n_clusters * n_outputs
    _, first, inverse = np.unique(point_id[valid], return_index=True, return_inverse=True)
    if first.size <= _EXACT_MAX:
        union = x_rows[first]
        chol = _cholesky_jittered(
            _se_kernel(union, union, mean_variance, mean_lengthscale), mean_variance
        )
        centred = (chol @ rng.standard_normal((union.shape[0], n_cols)))[inverse.reshape(-1)]
    else:
        per_dim = _LATTICE_1D if input_dim == 1 else max(2, int(_EXACT_MAX ** (1 / input_dim)))
        axis = np.linspace(lo, hi, per_dim)
        mesh = np.meshgrid(*([axis] * input_dim), indexing="ij")
        lattice = np.stack([m.reshape(-1) for m in mesh], axis=-1)
        chol = _cholesky_jittered(
            _se_kernel(lattice, lattice, mean_variance, mean_lengthscale), mean_variance
        )
        on_lattice = chol @ rng.standard_normal((lattice.shape[0], n_cols))
        centred = _interp_lattice(axis, on_lattice, x_rows)
    mu = centred.reshape(-1, n_clusters, n_outputs) + offsets[None]
    mu_rows = mu[np.arange(x_rows.shape[0]), clusters[task_rows]]  # (n, O)

    # --- task deviations f_i, sampled in batches of tasks (padding decoupled).
    dev = np.empty((n_tasks, n_max, n_outputs))
    batch = max(1, _BATCH_ENTRIES // (n_max * n_max))
    eye = np.eye(n_max, dtype=bool)
    for start in range(0, n_tasks, batch):  # loop over batches of tasks
        sl = slice(start, start + batch)
        pair = valid[sl, :, None] & valid[sl, None, :]
        cov = np.where(
            pair, _se_kernel(pts[sl], pts[sl], task_variance, task_lengthscale), eye * 1.0
        )
        chol = _cholesky_jittered(cov, task_variance)
        dev[sl] = chol @ rng.standard_normal((chol.shape[0], n_max, n_outputs))
    dev_rows = dev[valid]

    eps = np.sqrt(noise) * rng.standard_normal((x_rows.shape[0], n_outputs))
    y_rows = mu_rows + dev_rows + eps

    width = len(str(n_tasks - 1))
    names = np.array([f"task_{i:0{width}d}" for i in range(n_tasks)], dtype=object)
    in_cols = ["Input"] if input_dim == 1 else [f"x{j}" for j in range(input_dim)]
    X = pd.DataFrame(x_rows, columns=in_cols)
    X.insert(0, "ID", names[task_rows])
    if n_outputs == 1:
        y: pd.Series | pd.DataFrame = pd.Series(y_rows[:, 0], name="Output")
    else:
        y = pd.DataFrame(y_rows, columns=[f"y{o}" for o in range(n_outputs)])
    cluster_series = pd.Series(
        clusters.astype(np.int64), index=pd.Index(names, name="ID"), name="Cluster"
    )
    return X, y, cluster_series
