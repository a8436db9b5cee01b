"""Brute-force numpy references and small synthetic problems for the core tests.

Everything here is deliberately naive: dense selection matrices ``P_i``, explicit
inverses, ``slogdet``, Python loops over tasks, clusters and outputs. None of it calls
the code under test, except :func:`random_params` (which only *builds* a
:class:`~mimosa_sklearn.core.params.Params`, whose values are then read back as plain
numpy arrays by :class:`NpParams`).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import kernax
import numpy as np

from mimosa_sklearn._kernels import SharingLayout, build_params
from mimosa_sklearn.core.params import TaskBatch

LOG_2PI = float(np.log(2.0 * np.pi))


# --------------------------------------------------------------------------- matrices


def spd(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    """Random, well-conditioned, dense SPD matrix (almost surely non-commuting with others)."""
    a = rng.standard_normal((n, n))
    return scale * (a @ a.T / n + 0.3 * np.eye(n))


def random_mask(rng: np.random.Generator, n: int, n_real: int) -> np.ndarray:
    """Boolean mask with ``n_real`` True entries at random positions."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, n_real, replace=False)] = True
    return mask


def embed(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Put a ``(R, R)`` block at the True rows/columns of an ``(N, N)`` zero matrix."""
    out = np.zeros((mask.size, mask.size))
    out[np.ix_(mask, mask)] = block
    return out


def selection(mapping: np.ndarray, mask: np.ndarray, n_grid: int) -> np.ndarray:
    """Dense ``P_i`` of shape ``(R, G)``: one row per real entry, a 1 at its grid index."""
    rows = mapping[mask]
    p = np.zeros((rows.size, n_grid))
    p[np.arange(rows.size), rows] = 1.0
    return p


def gaussian_nll(y: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """``-log N(y; mean, cov)`` with an explicit solve and ``slogdet``."""
    resid = y - mean
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return 0.5 * float(resid @ np.linalg.solve(cov, resid) + logdet + resid.size * LOG_2PI)


def se(x1: np.ndarray, x2: np.ndarray, variance: float, length_scale: float) -> np.ndarray:
    """Squared-exponential kernel ``v exp(-|x - x'|^2 / (2 l^2))``."""
    d2 = ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1)
    return variance * np.exp(-0.5 * d2 / length_scale**2)


# --------------------------------------------------------------------------- tasks


@dataclasses.dataclass
class Tasks:
    """Padded ragged tasks; padding rows sit at random positions inside each task.

    x : (T, N, I) inputs, ``grid[0]`` on padded rows (finite placeholder).
    y : (T, N, O) outputs, 0 where not observed.
    mask : (T, N, O) observed entries.
    row : (T, N) real rows.
    mappings : (T, N) grid index of each row, ``G`` on padded rows.
    grid : (G, I) sorted grid.
    """

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    row: np.ndarray
    mappings: np.ndarray
    grid: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, N, O)``."""
        return self.y.shape  # type: ignore[return-value]

    def nan_x(self) -> np.ndarray:
        """Inputs with NaN rows on padding (the fit's convention)."""
        return np.where(self.row[..., None], self.x, np.nan)

    def nan_y(self) -> np.ndarray:
        """Outputs with NaN where not observed (the fit's convention)."""
        return np.where(self.mask, self.y, np.nan)

    def points(self, i: int, o: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Observed ``(x, y, grid index)`` of task ``i``, output ``o`` (in storage order)."""
        m = self.mask[i, :, o]
        return self.x[i][m], self.y[i, m, o], self.mappings[i][m]


def make_tasks(
    rng: np.random.Generator,
    n_tasks: int,
    n_pad: int,
    grid: np.ndarray,
    n_min: int,
    n_max: int,
    n_outputs: int = 1,
    hole_prob: float = 0.0,
    offsets: np.ndarray | None = None,
) -> Tasks:
    """Random ragged tasks on a grid: ``n_min..n_max`` distinct grid points per task,
    stored at random slots among ``n_pad`` (so padding is not trailing), with per-output
    missing values (every task keeps at least one observation per output).

    The outputs are ``offset_i + sin(x) + 0.2 noise`` so that EM fits are meaningful.
    """
    g = grid.shape[0]
    x = np.repeat(np.repeat(grid[:1][None], n_pad, axis=1), n_tasks, axis=0)
    mappings = np.full((n_tasks, n_pad), g, dtype=np.int64)
    row = np.zeros((n_tasks, n_pad), dtype=bool)
    if offsets is None:
        offsets = rng.normal(size=n_tasks)
    for i in range(n_tasks):
        n_i = int(rng.integers(n_min, n_max + 1))
        slots = rng.choice(n_pad, n_i, replace=False)
        gidx = rng.choice(g, n_i, replace=False)
        x[i, slots] = grid[gidx]
        mappings[i, slots] = gidx
        row[i, slots] = True
    signal = offsets[:, None] + np.sin(x.sum(-1))
    y = signal[..., None] + 0.2 * rng.standard_normal((n_tasks, n_pad, n_outputs))
    mask = row[..., None] & (rng.random((n_tasks, n_pad, n_outputs)) >= hole_prob)
    for i in range(n_tasks):
        for o in range(n_outputs):
            if not mask[i, :, o].any():
                mask[i, np.flatnonzero(row[i])[0], o] = True
    y = np.where(mask, y, 0.0)
    return Tasks(x=x, y=y, mask=mask, row=row, mappings=mappings, grid=grid)


def to_batch(tasks: Tasks, grid_pad: int = 0, task_weight: np.ndarray | None = None) -> TaskBatch:
    """A :class:`TaskBatch` of ``tasks``, optionally with ``grid_pad`` padded grid points."""
    g = tasks.grid.shape[0]
    gp = g + grid_pad
    grid = np.concatenate([tasks.grid, np.repeat(tasks.grid[:1], grid_pad, axis=0)], axis=0)
    mappings = np.where(tasks.row, tasks.mappings, gp)
    weight = np.ones(tasks.y.shape[0]) if task_weight is None else task_weight
    return TaskBatch(
        x=jnp.asarray(tasks.x),
        y=jnp.asarray(tasks.y),
        mask=jnp.asarray(tasks.mask),
        mappings=jnp.asarray(mappings, dtype=jnp.int32),
        grid=jnp.asarray(grid),
        grid_mask=jnp.asarray(np.arange(gp) < g),
        task_weight=jnp.asarray(weight, dtype=jnp.float64),
    )


# --------------------------------------------------------------------------- params


def _pick(arr: np.ndarray, idx: tuple[int, ...]):
    """``arr[idx]`` where size-1 (shared) axes are read at 0."""
    return arr[tuple(j if n > 1 else 0 for j, n in zip(idx, arr.shape, strict=True))]


@dataclasses.dataclass
class NpParams:
    """Plain numpy values of an SE x variance parametrisation (see :func:`random_params`)."""

    mean_var: np.ndarray  # (K*, O*)
    mean_ls: np.ndarray  # (K*, O*)
    prior: np.ndarray  # (K, O*)
    task_var: np.ndarray  # (T*, K*, O*)
    task_ls: np.ndarray  # (T*, K*, O*)
    noise: np.ndarray  # (T*, K*, O*)

    def mean_cov(self, k: int, o: int, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        """Mean-process kernel ``c_{gamma_k, o}(x1, x2)``."""
        return se(x1, x2, _pick(self.mean_var, (k, o)), _pick(self.mean_ls, (k, o)))

    def prior_mean(self, k: int, o: int, n: int) -> np.ndarray:
        """Constant prior mean ``m_{k, o}`` at ``n`` points."""
        return np.full(n, _pick(self.prior, (k, o)))

    def task_kernel(self, i: int, k: int, o: int, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        """Noise-free task kernel ``s_{theta_ik, o}(x1, x2)``."""
        return se(x1, x2, _pick(self.task_var, (i, k, o)), _pick(self.task_ls, (i, k, o)))

    def task_noise(self, i: int, k: int, o: int) -> float:
        """Noise variance ``sigma^2_{ik, o}``."""
        return float(_pick(self.noise, (i, k, o)))

    def task_cov(self, i: int, k: int, o: int, x: np.ndarray) -> np.ndarray:
        """``Psi_{ik, o} = s(x, x) + sigma^2 I``."""
        return self.task_kernel(i, k, o, x, x) + self.task_noise(i, k, o) * np.eye(x.shape[0])


def random_params(
    rng: np.random.Generator,
    layout: SharingLayout,
    mean_var: tuple[float, float] = (0.5, 2.0),
    mean_ls: tuple[float, float] = (1.0, 2.0),
    task_var: tuple[float, float] = (0.2, 1.0),
    task_ls: tuple[float, float] = (0.6, 1.5),
    noise: tuple[float, float] = (0.05, 0.3),
):
    """Params (variance x SE kernels, constant prior means) with distinct random values
    along every non-shared axis, and the same values as :class:`NpParams`."""
    vals = NpParams(
        mean_var=rng.uniform(*mean_var, size=layout.mean),
        mean_ls=rng.uniform(*mean_ls, size=layout.mean),
        prior=rng.normal(size=layout.prior),
        task_var=rng.uniform(*task_var, size=layout.task),
        task_ls=rng.uniform(*task_ls, size=layout.task),
        noise=rng.uniform(*noise, size=layout.task),
    )
    return params_from_values(layout, vals), vals


def params_from_values(layout: SharingLayout, vals: NpParams):
    """Build the Params holding exactly the values of ``vals``."""
    kernel = kernax.VarianceKernel(1.0) * kernax.SEKernel(1.0)
    prm = build_params(layout, kernel, kernax.ConstantMean(0.0), kernel, 1.0)
    log = lambda a: jnp.log(jnp.asarray(a, jnp.float64))  # noqa: E731
    prm = eqx.tree_at(lambda p: p.mean_kernel.left._variance, prm, log(vals.mean_var))
    prm = eqx.tree_at(lambda p: p.mean_kernel.right._length_scale, prm, log(vals.mean_ls))
    prm = eqx.tree_at(lambda p: p.task_kernel.left._variance, prm, log(vals.task_var))
    prm = eqx.tree_at(lambda p: p.task_kernel.right._length_scale, prm, log(vals.task_ls))
    prm = eqx.tree_at(lambda p: p.prior_mean.constant, prm, jnp.asarray(vals.prior, jnp.float64))
    return eqx.tree_at(lambda p: p.log_noise, prm, log(vals.noise))


# --------------------------------------------------------------------------- model


def hyperposterior(
    vals: NpParams, tasks: Tasks, tau: np.ndarray, jitter: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Direct precision form ``C_hat = (C^-1 + sum_i tau_ik P_i^T Psi_i^-1 P_i)^-1``.

    ``jitter`` is added (absolute) to the diagonal of the prior covariance.
    Returns ``mean (K, O, G)`` and ``cov (K, O, G, G)``.
    """
    t, _, o_n = tasks.shape
    k_n = tau.shape[1]
    grid = tasks.grid
    g = grid.shape[0]
    mean = np.zeros((k_n, o_n, g))
    cov = np.zeros((k_n, o_n, g, g))
    for k in range(k_n):
        for o in range(o_n):
            c = vals.mean_cov(k, o, grid, grid) + jitter * np.eye(g)
            prec = np.linalg.inv(c)
            rhs = prec @ vals.prior_mean(k, o, g)
            for i in range(t):
                x_i, y_i, _ = tasks.points(i, o)
                p = selection(tasks.mappings[i], tasks.mask[i, :, o], g)
                psi_inv = np.linalg.inv(vals.task_cov(i, k, o, x_i))
                prec = prec + tau[i, k] * p.T @ psi_inv @ p
                rhs = rhs + tau[i, k] * p.T @ psi_inv @ y_i
            cov[k, o] = np.linalg.inv(prec)
            mean[k, o] = cov[k, o] @ rhs
    return mean, cov


def expected_loglik(
    vals: NpParams, tasks: Tasks, post_mean: np.ndarray, post_cov: np.ndarray
) -> np.ndarray:
    """``l_ik = sum_o E_q[log N(y_io; mu_ko(t_i), Psi_iko)]``, shape ``(T, K)``."""
    t, _, o_n = tasks.shape
    k_n = post_mean.shape[0]
    out = np.zeros((t, k_n))
    for i in range(t):
        for k in range(k_n):
            for o in range(o_n):
                x_i, y_i, idx = tasks.points(i, o)
                psi = vals.task_cov(i, k, o, x_i)
                c_hat = post_cov[k, o][np.ix_(idx, idx)]
                out[i, k] -= gaussian_nll(y_i, post_mean[k, o, idx], psi)
                out[i, k] -= 0.5 * np.trace(np.linalg.solve(psi, c_hat))
    return out


def kl_gauss(m1: np.ndarray, s1: np.ndarray, m0: np.ndarray, s0: np.ndarray) -> float:
    """``KL(N(m1, s1) || N(m0, s0))``."""
    d = m1 - m0
    _, ld0 = np.linalg.slogdet(s0)
    _, ld1 = np.linalg.slogdet(s1)
    return 0.5 * float(
        np.trace(np.linalg.solve(s0, s1)) + d @ np.linalg.solve(s0, d) - d.size + ld0 - ld1
    )


def elbo(
    vals: NpParams,
    tasks: Tasks,
    weights: np.ndarray,
    tau: np.ndarray,
    post_mean: np.ndarray,
    post_cov: np.ndarray,
    jitter: float = 0.0,
) -> float:
    """ELBO of ALGORITHM.md §2.1 (full KL constant), by loops."""
    ell = expected_loglik(vals, tasks, post_mean, post_cov)
    safe = np.where(tau > 0, tau, 1.0)
    data = np.sum(np.where(tau > 0, tau * (ell + np.log(weights)[None] - np.log(safe)), 0.0))
    grid = tasks.grid
    g = grid.shape[0]
    kl = 0.0
    for k in range(post_mean.shape[0]):
        for o in range(post_mean.shape[1]):
            c = vals.mean_cov(k, o, grid, grid) + jitter * np.eye(g)
            kl += kl_gauss(post_mean[k, o], post_cov[k, o], vals.prior_mean(k, o, g), c)
    return float(data - kl)


def magma_log_marginal(vals: NpParams, tasks: Tasks) -> float:
    """Exact K = 1 log marginal likelihood of all tasks, summed over outputs:
    ``log N(y; (P_i m)_i, (P_i C P_j^T)_ij + blockdiag(Psi_i))``."""
    t, _, o_n = tasks.shape
    g = tasks.grid.shape[0]
    total = 0.0
    for o in range(o_n):
        c = vals.mean_cov(0, o, tasks.grid, tasks.grid)
        ps, ys, psis = [], [], []
        for i in range(t):
            x_i, y_i, _ = tasks.points(i, o)
            ps.append(selection(tasks.mappings[i], tasks.mask[i, :, o], g))
            ys.append(y_i)
            psis.append(vals.task_cov(i, 0, o, x_i))
        p = np.concatenate(ps)
        y = np.concatenate(ys)
        cov = p @ c @ p.T + _block_diag(psis)
        total -= gaussian_nll(y, p @ vals.prior_mean(0, o, g), cov)
    return total


def _block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    n = sum(b.shape[0] for b in blocks)
    out = np.zeros((n, n))
    start = 0
    for b in blocks:
        out[start : start + b.shape[0], start : start + b.shape[0]] = b
        start += b.shape[0]
    return out


def condition(
    mean: np.ndarray, cov: np.ndarray, obs: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian conditioning of ``N(mean, cov)`` on ``z[obs] = values``: the rest's moments."""
    rest = ~obs
    gain = np.linalg.solve(cov[np.ix_(obs, obs)], cov[np.ix_(obs, rest)]).T
    m = mean[rest] + gain @ (values - mean[obs])
    c = cov[np.ix_(rest, rest)] - gain @ cov[np.ix_(obs, rest)]
    return m, c
