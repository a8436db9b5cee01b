"""Numpy-in, numpy-out facade over the JAX core (no pandas, no sklearn).

The estimator talks to the model only through :func:`fit_magma` and the methods of
:class:`FittedMagma`. Everything here runs the core inside ``jax.enable_x64(True)``
and returns float64 numpy arrays, so the user's global JAX configuration is never
changed.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _parts, _runtime
from .core import approx as core_approx
from .core import predict as core_predict
from .core.compile import jit, to_device
from .core.em import EMResult, NumericalFailure, run_em
from .core.hyperposterior import Hyperposterior
from .core.init import data_scales, init_responsibilities
from .core.parallel import auto_task_chunk, shard_tasks, task_mesh
from .core.params import Params, TaskBatch
from .kernels import (
    SharingLayout,
    build_params,
    count_trainable,
    default_kernel,
    default_prior_mean,
    kernel_hyperparameters,
)

__all__ = ["FitConfig", "FittedMagma", "Context", "fit_magma", "NumericalFailure", "bucket"]


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Everything :func:`fit_magma` needs besides the data.

    Kernels are kernax modules (or ``None`` for data-driven defaults); ``seed`` drives
    every random choice.
    """

    n_clusters: int = 3
    mean_kernel: object | None = None
    task_kernel: object | None = None
    prior_mean: object | None = None
    shared_task_hps: bool = True
    shared_cluster_hps: bool = True
    cluster_specific_task_hps: bool = False
    shared_output_hps: bool = True
    correlated_outputs: bool = False
    max_iter: int = 100
    tol: float = 1e-4
    n_init: int = 1
    init: str = "kmeans"
    jitter: float = 1e-6
    max_steps: int = 50
    optimiser_tol: float = 1e-3
    seed: int = 0
    # Tasks per chunk of the per-task N x N work (None: sized to keep each chunked
    # intermediate under 32 MiB; 0: never chunk).
    task_chunk: int | None = None
    # Shard the task axis across jax.devices() when there are several (not on CPU
    # devices of jaxlib 0.10.x, see _task_mesh; "force" skips that check).
    shard_tasks: bool | str = True
    # Most parts of different padded task lengths the EM may split the tasks into
    # (None: up to _parts.MAX_PARTS from _parts.MIN_TASKS tasks on, else 1; 1: every
    # task padded to the longest). Not with sharded tasks.
    task_parts: int | None = None
    # SQUAREM extrapolation of the EM iterations (core.accelerate); False: plain EM.
    accelerate: bool = True


@dataclasses.dataclass
class Context:
    """Observed points of new tasks and what conditioning learned about them."""

    x: np.ndarray  # (P, N, I) padded inputs (NaN rows on padding)
    y: np.ndarray  # (P, N, O) outputs (NaN where not observed)
    tau: np.ndarray  # (P, K) memberships
    task_params: object  # task hyperparameters, leaves (P or 1, K*, O*)


def bucket(n: int, step: int, minimum: int = 8) -> int:
    """Padded size for ``n``: a power of two (at least ``minimum``) up to ``4 * step``,
    then a multiple of ``step``, so that data sets of similar size share one compiled
    program (the relative padding, hence the wasted work, stays below ``1 / 4`` past
    small sizes).

    Task axes use ``minimum=1``: a padded task costs as much as a real one (an
    ``N x N`` factorisation per optimiser step), so one long task must not be padded
    to eight."""
    n = max(int(n), 1)
    if n <= 4 * step:
        return max(minimum, 1 << (n - 1).bit_length())
    return int(math.ceil(n / step)) * step


def _grid_step(g: int) -> int:
    # Small relative padding for large grids: the cost is cubic in G.
    return 8 if g <= 128 else 32 if g <= 1024 else 128


def _pad_axis(a: np.ndarray, axis: int, size: int, fill) -> np.ndarray:
    if a.shape[axis] == size:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, size - a.shape[axis])
    return np.pad(a, pad, constant_values=fill)


def _repeat_first(a: np.ndarray, size: int) -> np.ndarray:
    """Pad the leading axis to ``size`` with copies of the first entry (any trailing shape)."""
    if a.shape[0] >= size:
        return a
    return np.concatenate([a, np.repeat(a[:1], size - a.shape[0], axis=0)], axis=0)


def shared_inputs(x: np.ndarray, y: np.ndarray, mappings: np.ndarray | None = None) -> bool:
    """Whether every task has the same inputs and the same observed pattern as task 0.

    Checked on the caller's arrays, before bucketing: the padded tasks added by
    :func:`make_batch` (all-False masks, zero ``task_weight``) do not count, the core
    handles them through ``task_weight``.
    """
    if x.shape[0] < 2:
        return False
    observed = ~np.isnan(y) & ~np.isnan(x).any(-1)[..., None]
    same = np.array_equal(x, np.broadcast_to(x[:1], x.shape), equal_nan=True) and (
        observed == observed[:1]
    ).all()
    if same and mappings is not None:
        rows = ~np.isnan(x).any(-1)
        same = bool((np.where(rows, mappings, -1) == np.where(rows[:1], mappings[:1], -1)).all())
    return bool(same)


def make_batch(
    x: np.ndarray,
    y: np.ndarray,
    mappings: np.ndarray | None,
    grid: np.ndarray,
    *,
    task_chunk: int = 0,
    task_multiple: int = 1,
) -> TaskBatch:
    """Padded numpy tasks (NaN = padding/missing) -> a bucketed, NaN-free :class:`TaskBatch`.

    ``task_chunk`` sets ``TaskBatch.task_chunk``; the padded number of tasks is a
    multiple of ``task_multiple`` (the device count when the task axis is sharded).
    Shared inputs are detected here (:func:`shared_inputs`) and flagged on the batch.
    """
    t, n, _ = x.shape
    g = grid.shape[0]
    tb, nb, gb = bucket(t, 8, 1), bucket(n, 8), bucket(g, _grid_step(g))
    tb = -(-tb // task_multiple) * task_multiple
    shared = shared_inputs(x, y, mappings)
    if mappings is None:  # approximate grid: the projection replaces the mappings
        mappings = np.full((t, n), gb)
    placeholder = grid[0]
    row_real = ~np.isnan(x).any(axis=-1)
    mask = ~np.isnan(y) & row_real[..., None]
    xf = np.where(row_real[..., None], x, placeholder)
    yf = np.where(mask, y, 0.0)
    maps = np.where(row_real, mappings, gb).astype(np.int32)
    xf = _pad_axis(_pad_axis(xf, 1, nb, 0.0), 0, tb, 0.0)
    xf[~_pad_axis(_pad_axis(row_real, 1, nb, False), 0, tb, False)] = placeholder
    yf = _pad_axis(_pad_axis(yf, 1, nb, 0.0), 0, tb, 0.0)
    mask = _pad_axis(_pad_axis(mask, 1, nb, False), 0, tb, False)
    maps = _pad_axis(_pad_axis(maps, 1, nb, gb), 0, tb, gb)
    grid_p = np.concatenate([grid, np.repeat(placeholder[None], gb - g, axis=0)], axis=0)
    grid_mask = np.arange(gb) < g
    weight = (np.arange(tb) < t).astype(np.float64)
    return TaskBatch(
        x=to_device(xf),
        y=to_device(yf),
        mask=to_device(mask),
        mappings=to_device(maps),
        grid=to_device(grid_p),
        grid_mask=to_device(grid_mask),
        task_weight=to_device(weight),
        shared_inputs=shared,
        task_chunk=int(task_chunk),
    )


def _default_params(batch_np, layout: SharingLayout, config: FitConfig, tau: np.ndarray) -> Params:
    x, y, mask, row_mask = batch_np
    span, var = data_scales(x, y, mask, row_mask)
    n_inputs = x.shape[-1]
    var_mean = float(np.mean(var))
    mean_kernel = config.mean_kernel or default_kernel(var_mean, span / 4.0, n_inputs)
    task_kernel = config.task_kernel or default_kernel(0.25 * var_mean, span / 10.0, n_inputs)
    prior = config.prior_mean or default_prior_mean(0.0)
    # Start every cluster's constant prior mean at the average of its initial tasks.
    k = tau.shape[1]
    o = layout.prior[1]
    vals = np.where(mask, y, 0.0)
    cnt = mask.sum(axis=1)  # (T, O)
    tot = vals.sum(axis=1)
    num = tau.T @ tot
    den = np.maximum(tau.T @ cnt, 1e-12)
    start = num / den  # (K, O)
    start = start.mean(axis=1, keepdims=True) if o == 1 else start
    return build_params(layout, mean_kernel, prior, task_kernel, 0.05 * var_mean, start[:k])


class FittedMagma:
    """A fitted MagmaClust model: numpy in, numpy out.

    Holds the trained hyperparameters, the hyperposteriors of the mean processes on
    the (padded) training grid and the training tasks, so that training tasks, new
    tasks conditioned on a few points and unseen tasks can all be predicted.
    """

    def __init__(
        self,
        result: EMResult,
        batch: TaskBatch,
        n_tasks: int,
        n_grid: int,
        layout: SharingLayout,
        config: FitConfig,
    ):
        self.params: Params = result.params
        self.post: Hyperposterior = result.post
        self.batch = batch
        self.n_tasks = n_tasks
        self.n_grid = n_grid
        self.layout = layout
        self.config = config
        self.jitter = result.jitter
        k = result.tau.shape[1]
        self.n_clusters = k
        self.tau = np.asarray(result.tau)[:n_tasks]
        self.weights = np.asarray(result.weights)
        self.elbo = result.elbo
        self.elbo_history = result.elbo_history
        self.n_iter = result.n_iter
        self.converged = result.converged
        self.n_inputs = int(batch.x.shape[-1])
        self.n_outputs = int(batch.y.shape[-1])

    # -- persistence: kernax kernels hold jitted functions that stdlib pickle rejects,
    # so arrays go to numpy and modules through cloudpickle.
    def __getstate__(self):
        import cloudpickle

        state = self.__dict__.copy()
        for key in ("params", "post", "batch", "config"):
            tree = jax.tree.map(
                lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, state[key]
            )
            state[key] = cloudpickle.dumps(tree)
        return state

    def __setstate__(self, state):
        import pickle

        for key in ("params", "post", "batch", "config"):
            state[key] = pickle.loads(state[key])
        with _runtime.x64():
            for key in ("params", "post", "batch"):
                state[key] = jax.tree.map(
                    lambda a: to_device(a) if isinstance(a, np.ndarray) else a, state[key]
                )
        self.__dict__.update(state)

    @property
    def grid(self) -> np.ndarray:
        """(G, I) training grid."""
        return np.asarray(self.batch.grid)[: self.n_grid]

    # -- inspection
    def mean_processes(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hyperposterior mean and variance of every mean process at ``x``: ``(K, O, M)``."""
        with _runtime.x64():
            mean, cov = _extend(
                self.params,
                self.post,
                self.batch.grid,
                self.batch.grid_mask,
                to_device(x, jnp.float64),
            )
            return np.asarray(mean), np.maximum(
                np.asarray(jnp.diagonal(cov, axis1=-2, axis2=-1)), 0.0
            )

    def hyperparameters(self) -> dict[str, np.ndarray]:
        """Readable hyperparameter values keyed ``"<group>.<name>"``.

        Shapes: mean kernel ``(K*, O*)``, prior mean ``(K, O*)``, task kernel and noise
        ``(T*, K*, O*)`` (size-1 axes are shared values).
        """
        out: dict[str, np.ndarray] = {}
        p = self.params
        for group, mod in (
            ("mean_kernel", p.mean_kernel),
            ("prior_mean", p.prior_mean),
            ("task_kernel", p.task_kernel),
        ):
            for name, val in kernel_hyperparameters(mod).items():
                out[f"{group}.{name}"] = val
        noise = np.exp(np.asarray(p.log_noise))
        out["noise"] = noise[: self.n_tasks] if noise.shape[0] > 1 else noise
        if out["task_kernel.variance" if "task_kernel.variance" in out else "noise"].shape[0] > 1:
            for key in [k for k in out if k.startswith("task_kernel.")]:
                out[key] = out[key][: self.n_tasks]
        return out

    def n_parameters(self) -> int:
        """Free parameters for VBIC (ALGORITHM.md §5), counted on real tasks only."""
        p = self.params
        task = count_trainable(p.task_kernel) + int(np.size(p.log_noise))
        if p.log_noise.shape[0] > 1:
            task = task * self.n_tasks // p.log_noise.shape[0]
        return (
            count_trainable(p.mean_kernel)
            + count_trainable(p.prior_mean)
            + task
            + self.n_clusters
            - 1
        )

    def vbic(self) -> float:
        """Variational BIC: ``ELBO - n_parameters / 2 * log(T)``."""
        return self.elbo - 0.5 * self.n_parameters() * math.log(max(self.n_tasks, 1))

    # -- prediction
    def _prep_pred(self, x_pred: np.ndarray):
        p, m, _ = x_pred.shape
        pb, mb = bucket(p, 8, 1), bucket(m, 8)
        real = ~np.isnan(x_pred).any(-1)
        xp = np.where(real[..., None], x_pred, np.asarray(self.batch.grid[0]))
        xp = _pad_axis(_pad_axis(xp, 1, mb, 0.0), 0, pb, 0.0)
        keep = _pad_axis(_pad_axis(real, 1, mb, False), 0, pb, False)
        xp[~keep] = np.asarray(self.batch.grid[0])
        return to_device(xp), real, pb

    def _finish(self, mean, cov, tau, real, full_cov: bool):
        p, m = real.shape
        mean = np.swapaxes(np.asarray(mean), 1, 2)[:p, :m]  # (P, M, O)
        cov = np.asarray(cov)[:p, :, :m, :m]
        mean = np.where(real[..., None], mean, 0.0)
        both = real[:, None, :, None] & real[:, None, None, :]
        cov = np.where(both, cov, 0.0)
        tau = np.asarray(tau)[:p]
        if full_cov:
            return mean, cov, tau
        var = np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 0.0)  # (P, O, M)
        return mean, np.swapaxes(var, 1, 2), tau

    def predict_train(
        self,
        task_index: np.ndarray,
        x_pred: np.ndarray,
        *,
        include_noise: bool = True,
        full_cov: bool = False,
    ):
        """Predictive of training tasks at ``x_pred`` (P, Np, I), NaN rows = padding.

        Returns ``(mean (P, Np, O), var (P, Np, O) or cov (P, O, Np, Np), tau (P, K))``.
        """
        task_index = np.asarray(task_index, dtype=np.int64)
        with _runtime.x64():
            xp, real, pb = self._prep_pred(np.asarray(x_pred, np.float64))
            idx = to_device(_pad_axis(task_index, 0, pb, 0).astype(np.int32))
            tau = to_device(_pad_axis(self.tau[task_index], 0, pb, 1.0 / self.n_clusters))
            jitter = to_device(self.jitter)
            mean, cov = _predict_train(
                self.params, self.post, self.batch, idx, tau, xp, jitter, include_noise
            )
            return self._finish(mean, cov, tau, real, full_cov)

    def _typical_task_params(self, n: int):
        """Task hyperparameters for ``n`` new tasks: the shared ones, or the average of
        the training tasks' unconstrained values when they are task-specific."""
        p = self.params
        kernel = jax.tree.map(
            lambda a: jnp.mean(a[: self.n_tasks], axis=0) if eqx.is_inexact_array(a) else a,
            p.task_kernel,
        )
        noise = jnp.mean(p.log_noise[: self.n_tasks], axis=0)
        return jax.tree.map(
            lambda a: jnp.broadcast_to(a, (n,) + a.shape) if eqx.is_inexact_array(a) else a,
            (kernel, noise),
        )

    def condition(self, x_obs: np.ndarray, y_obs: np.ndarray) -> Context:
        """Memberships (and own hyperparameters when task hyperparameters are not
        shared) of new tasks observed at ``x_obs`` (P, N, I) with ``y_obs`` (P, N, O)."""
        x_obs = np.asarray(x_obs, np.float64)
        y_obs = np.asarray(y_obs, np.float64)
        p = x_obs.shape[0]
        with _runtime.x64():
            xo, yo, mo, pb = self._prep_obs(x_obs, y_obs)
            start = self._typical_task_params(pb)
            if self.params.log_noise.shape[0] > 1:
                start = _fit_new(
                    self.params,
                    self.post,
                    self.batch,
                    start,
                    to_device(self.weights),
                    xo,
                    yo,
                    mo,
                    to_device(self.jitter),
                    self.config.max_steps,
                )
            tau = _new_tau(
                self.params,
                self.post,
                self.batch,
                start,
                to_device(self.weights),
                xo,
                yo,
                mo,
                to_device(self.jitter),
            )
            params_np = jax.tree.map(
                lambda a: np.asarray(a)[:p] if isinstance(a, jax.Array) else a, start
            )
            return Context(x=x_obs, y=y_obs, tau=np.asarray(tau)[:p], task_params=params_np)

    def _prep_obs(self, x_obs, y_obs):
        p, n, _ = x_obs.shape
        pb, nb = bucket(p, 8, 1), bucket(max(n, 1), 8)
        real = ~np.isnan(x_obs).any(-1)
        mask = real[..., None] & ~np.isnan(y_obs)
        ph = np.asarray(self.batch.grid[0])
        xo = np.where(real[..., None], x_obs, ph)
        xo = _pad_axis(_pad_axis(xo, 1, nb, 0.0), 0, pb, 0.0)
        keep = _pad_axis(_pad_axis(real, 1, nb, False), 0, pb, False)
        xo[~keep] = ph
        yo = _pad_axis(_pad_axis(np.where(mask, y_obs, 0.0), 1, nb, 0.0), 0, pb, 0.0)
        mo = _pad_axis(_pad_axis(mask, 1, nb, False), 0, pb, False)
        return to_device(xo), to_device(yo), to_device(mo), pb

    def predict_context(
        self,
        context: Context | None,
        x_pred: np.ndarray,
        *,
        include_noise: bool = True,
        full_cov: bool = False,
    ):
        """Predictive of new tasks (``context=None``: tasks with no data at all).

        Returns ``(mean (P, Np, O), var (P, Np, O) or cov (P, O, Np, Np), tau (P, K))``.
        """
        x_pred = np.asarray(x_pred, np.float64)
        p = x_pred.shape[0]
        with _runtime.x64():
            xp, real, pb = self._prep_pred(x_pred)
            if context is None:
                i = self.n_inputs
                x_obs = np.full((p, 1, i), np.nan)
                y_obs = np.full((p, 1, self.n_outputs), np.nan)
                task_params = self._typical_task_params(pb)
            else:
                x_obs, y_obs = context.x, context.y
                task_params = jax.tree.map(
                    lambda a: (
                        to_device(_repeat_first(np.asarray(a), pb))
                        if isinstance(a, np.ndarray)
                        else a
                    ),
                    context.task_params,
                )
            xo, yo, mo, _ = self._prep_obs(x_obs, y_obs)
            mean, cov, tau = _predict_new(
                self.params,
                self.post,
                self.batch,
                task_params,
                to_device(self.weights),
                xo,
                yo,
                mo,
                xp,
                to_device(self.jitter),
                include_noise,
            )
            return self._finish(mean, cov, tau, real, full_cov)

    @staticmethod
    def sample(mean: np.ndarray, cov: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
        """Draws from ``N(mean, cov)`` per task and output: ``(P, Np, O, n_samples)``.

        ``mean`` is (P, Np, O) and ``cov`` (P, O, Np, Np); padded rows (zero variance)
        give the mean. The factorisation is an eigendecomposition so that singular
        covariances (noise-free predictions at repeated inputs) still sample.
        """
        rng = np.random.default_rng(seed)
        p, m, o = mean.shape
        vals, vecs = np.linalg.eigh(cov)
        root = vecs * np.sqrt(np.maximum(vals, 0.0))[..., None, :]
        z = rng.standard_normal((p, o, m, n_samples))
        draws = root @ z  # (P, O, M, S)
        return np.swapaxes(draws, 1, 2) + mean[..., None]


def _task_mesh(shard: bool | str):
    """Mesh over all devices for sharding the task axis, or None for one device.

    jaxlib 0.10.x runs every CPU device's program on one intra-op pool with one thread
    per device (whatever :mod:`._runtime` does), and its batched LAPACK kernels block
    pool threads waiting for chunks scheduled on that same pool: with two CPU devices
    both threads block and the fit hangs (seen in our EM: both in
    ``jax::ParallelBatchMap`` under ``lapack_dtrsm_ffi``). Several CPU devices on such
    a jaxlib therefore run on one device, with a warning.
    """
    devices = jax.devices()
    if not shard or len(devices) < 2:
        return None
    if shard != "force" and devices[0].platform == "cpu" and _runtime.jaxlib_is_exposed():
        warnings.warn(
            f"Not sharding tasks across {len(devices)} CPU devices: jaxlib "
            f"{_jaxlib_version()} can deadlock in batched linear algebra there. Fitting "
            "on one device; upgrade jaxlib to shard.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return task_mesh(devices)


def _jaxlib_version() -> str:
    """Installed jaxlib version (for messages)."""
    import jaxlib

    return jaxlib.__version__


def _shard_batch(batch: TaskBatch, mesh) -> TaskBatch:
    """Split the task-axis arrays of ``batch`` across ``mesh``; replicate the grid."""
    tb = batch.x.shape[0]
    split = ("x", "y", "mask", "mappings", "task_weight")
    tasks = shard_tasks(tuple(getattr(batch, f) for f in split), mesh, tb)
    grid = shard_tasks((batch.grid, batch.grid_mask), mesh, -1)
    return eqx.tree_at(
        lambda b: tuple(getattr(b, f) for f in split) + (b.grid, b.grid_mask),
        batch,
        tasks + grid,
    )


# jit-compiled kernels of the facade (module level so the compile cache is shared)


@jit
def _with_projection(params, batch, jitter):
    return core_approx.with_projection(params, batch, jitter)


@jit
def _extend(params, post, grid, grid_mask, x):
    return core_predict.extend_hyperposterior(params, post, grid, grid_mask, x)


@jit
def _predict_train(params, post, batch, idx, tau, x_pred, jitter, include_noise):
    ext = core_predict.grid_extension(post)

    def one(args):
        i, tau_i, xp = args
        return core_predict.predict_training_task(
            params,
            post,
            batch.grid,
            batch.grid_mask,
            i,
            tau_i,
            batch.x[i],
            batch.y[i],
            batch.mask[i],
            xp,
            jitter,
            include_noise,
            ext,
        )

    return jax.lax.map(one, (idx, tau, x_pred), batch_size=64)


@jit
def _predict_new(params, post, batch, task_params, weights, xo, yo, mo, xp, jitter, include_noise):
    ext = core_predict.grid_extension(post)

    def one(args):
        pt, x_o, y_o, m_o, x_p = args
        return core_predict.predict_new_task(
            params,
            post,
            batch.grid,
            batch.grid_mask,
            pt,
            weights,
            x_o,
            y_o,
            m_o,
            x_p,
            jitter,
            include_noise,
            ext,
        )

    return jax.lax.map(one, (task_params, xo, yo, mo, xp), batch_size=64)


@jit
def _new_tau(params, post, batch, task_params, weights, xo, yo, mo, jitter):
    ext = core_predict.grid_extension(post)

    def one(args):
        pt, x_o, y_o, m_o = args
        mu, cov = core_predict.extend_hyperposterior(
            params, post, batch.grid, batch.grid_mask, x_o, ext
        )
        return core_predict.new_task_log_marginal(pt, weights, mu, cov, x_o, y_o, m_o, jitter)[1]

    return jax.lax.map(one, (task_params, xo, yo, mo), batch_size=64)


@jit
def _fit_new(params, post, batch, start, weights, xo, yo, mo, jitter, max_steps):
    ext = core_predict.grid_extension(post)

    def one(args):
        pt, x_o, y_o, m_o = args
        return core_predict.fit_new_task_params(
            params,
            post,
            batch.grid,
            batch.grid_mask,
            pt,
            weights,
            x_o,
            y_o,
            m_o,
            jitter,
            max_steps,
            1e-5,
            ext,
        )

    return jax.lax.map(one, (start, xo, yo, mo), batch_size=64)


def _max_parts(config: FitConfig, n_tasks: int) -> int:
    if config.task_parts is not None:
        return max(1, int(config.task_parts))
    return _parts.MAX_PARTS if n_tasks >= _parts.MIN_TASKS else 1


def make_parts(
    x: np.ndarray,
    y: np.ndarray,
    mappings: np.ndarray | None,
    grid: np.ndarray,
    config: FitConfig,
    max_parts: int,
) -> tuple[tuple[TaskBatch, ...], np.ndarray] | None:
    """A ragged batch (:mod:`.core.ragged`) of tasks grouped by length, or None when one
    part is best (:func:`._parts.length_parts`).

    Returns the parts and ``src``: the caller's index of every stacked task row (-1 on
    padded tasks).
    """
    lengths = (~np.isnan(x).any(axis=-1)).sum(axis=1)
    candidates = np.array([bucket(n, 8) for n in lengths])
    sizes = _parts.length_parts(lengths, candidates, max_parts)
    if len(sizes) == 1:
        return None
    parts, src = [], []
    for xp, yp, mp, tasks in _parts.split_by_length(x, y, mappings, sizes):
        chunk = config.task_chunk
        if chunk is None:
            chunk = auto_task_chunk(xp.shape[1], config.n_clusters, y.shape[-1])
        part = make_batch(xp, yp, mp, grid, task_chunk=chunk)
        parts.append(part)
        src.append(_pad_axis(tasks, 0, part.x.shape[0], -1))
    return tuple(parts), np.concatenate(src)


def _unstack_result(result: EMResult, src: np.ndarray, n_rows: int) -> EMResult:
    """``result`` of a ragged EM with its task axes (tau, task-specific hyperparameters)
    back in the caller's task order, padded to ``n_rows`` rows."""
    real = np.flatnonzero(src >= 0)
    rows = np.empty(n_rows, dtype=np.int64)
    rows[:] = np.flatnonzero(src < 0)[0] if real.size < src.size else 0
    rows[src[real]] = real
    tau = np.asarray(result.tau)[rows]
    params = result.params
    if params.log_noise.shape[0] > 1:
        idx = to_device(rows)
        params = eqx.tree_at(
            lambda p: (p.task_kernel, p.log_noise),
            params,
            jax.tree.map(
                lambda a: a[idx] if eqx.is_inexact_array(a) else a,
                (params.task_kernel, params.log_noise),
            ),
        )
    return dataclasses.replace(result, tau=tau, params=params)


def fit_magma(
    x: np.ndarray,
    y: np.ndarray,
    mappings: np.ndarray,
    grid: np.ndarray,
    config: FitConfig,
    callback: Callable[[int, float], None] | None = None,
    *,
    approximate: bool = False,
) -> FittedMagma:
    """Fit MagmaClust by variational EM on padded tasks.

    Parameters
    ----------
    x : array of shape (T, N, I)
        Task inputs, NaN rows on padding.
    y : array of shape (T, N, O)
        Outputs, NaN where padded or not observed (already normalised if wanted).
    mappings : int array of shape (T, N) or None
        Grid index of every row (anything on padded rows); ignored (may be None) when
        ``approximate``.
    grid : array of shape (G, I)
        Sorted unique training inputs, or the ``M`` inducing inputs when
        ``approximate``.
    config : FitConfig
        Model and optimisation settings.
    callback : callable, optional
        ``callback(iteration, elbo)`` after every EM iteration.
    approximate : bool, default=False
        Approximate grid (:mod:`.core.approx`): the mean processes live on the inducing
        inputs ``grid`` and reach task inputs through ``A = c(x, u) c(u, u)^{-1}``,
        recomputed from the current mean kernel before every EM iteration.

    Returns
    -------
    FittedMagma
        The best of ``config.n_init`` runs (highest final ELBO).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    grid = np.asarray(grid, np.float64)
    t, _, o = y.shape
    if approximate and config.correlated_outputs and o > 1:
        raise NotImplementedError("An approximate grid with correlated outputs is not available.")
    if config.correlated_outputs and o > 1:
        # Joint outputs run the same core on stacked (x, output) rows.
        from .stacking import fit_correlated

        return fit_correlated(x, y, mappings, grid, config, callback)
    layout = SharingLayout.from_flags(
        t if config.shared_task_hps is False else 1,
        config.n_clusters,
        o,
        shared_task_hps=config.shared_task_hps,
        shared_cluster_hps=config.shared_cluster_hps,
        cluster_specific_task_hps=config.cluster_specific_task_hps,
        shared_output_hps=config.shared_output_hps,
    )
    rng = np.random.default_rng(config.seed)
    best: FittedMagma | None = None
    with _runtime.x64():
        mesh = _task_mesh(config.shard_tasks)
        chunk = config.task_chunk
        if chunk is None:
            chunk = auto_task_chunk(x.shape[1], config.n_clusters, o)
        batch = make_batch(
            x,
            y,
            mappings,
            grid,
            task_chunk=chunk,
            task_multiple=1 if mesh is None else mesh.size,
        )
        tb = batch.x.shape[0]
        ragged = None
        if mesh is None:
            ragged = make_parts(x, y, mappings, grid, config, _max_parts(config, t))
        n_rows = tb if ragged is None else ragged[1].size
        # Task-specific hyperparameters: one row per stacked task during the EM, one per
        # padded task of the one-part batch afterwards.
        em_layout = layout
        if not config.shared_task_hps:
            layout = dataclasses.replace(layout, task=(tb,) + layout.task[1:])
            em_layout = dataclasses.replace(layout, task=(n_rows,) + layout.task[1:])
        row_mask = ~np.isnan(x).any(-1)
        obs = ~np.isnan(y) & row_mask[..., None]
        y0 = np.where(obs, y, 0.0)
        for _ in range(max(1, config.n_init)):
            tau0 = init_responsibilities(
                np.asarray(batch.y),
                np.asarray(batch.mask),
                config.n_clusters,
                rng,
                config.init,
                np.asarray(batch.task_weight),
            )
            params = _default_params((x, y0, obs, row_mask), em_layout, config, tau0[:t])
            em_light = batch
            if ragged is not None:
                em_light, src = ragged
                uniform = np.full((src.size, config.n_clusters), 1.0 / config.n_clusters)
                tau0 = np.where((src >= 0)[:, None], tau0[np.maximum(src, 0)], uniform)
            if mesh is not None:
                # Tasks split across devices, hyperparameters replicated.
                batch, tau0 = _shard_batch(batch, mesh), shard_tasks(tau0, mesh, tb)
                params = shard_tasks(params, mesh, -1)
            # The projection (T, N, M) is only needed by the EM: FittedMagma keeps the
            # light batch (predictions condition on the inducing inputs directly).
            refresh = None
            if approximate:
                # Always rebuilt from the light batch: one compiled program.
                def refresh(p, _b, j, light=em_light):
                    j = jnp.asarray(j, jnp.float64)
                    if isinstance(light, tuple):
                        return tuple(_with_projection(p, b, j) for b in light)
                    return _with_projection(p, light, j)

            em_batch = em_light if refresh is None else refresh(params, em_light, config.jitter)
            result = run_em(
                params,
                to_device(tau0),
                em_batch,
                max_iter=config.max_iter,
                tol=config.tol,
                jitter=config.jitter,
                max_steps=config.max_steps,
                optimiser_tol=config.optimiser_tol,
                callback=callback,
                refresh=refresh,
                accelerate=config.accelerate,
            )
            if ragged is not None:
                # Predictions use the one-part batch, in the caller's task order.
                result = _unstack_result(result, ragged[1], tb)
            fitted = FittedMagma(result, batch, t, grid.shape[0], layout, config)
            if best is None or fitted.elbo > best.elbo:
                best = fitted
    assert best is not None
    return best
