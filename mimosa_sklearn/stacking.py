"""Correlated outputs: stack ``(x, output)`` pairs into one channel (numpy in, numpy out).

With ``correlated_outputs=True`` the ``O`` outputs of a task are modelled jointly by
multi-output kernels (ALGORITHM.md §6.2). Each observed pair ``(row, output p)`` becomes
one row of a single-output problem whose input is ``(x, p)``; unobserved pairs are no
rows at all, so heterotopic data (an output missing at some inputs) cost nothing. The
JAX core then runs unchanged with ``O = 1``, on kernels from
:mod:`mimosa_sklearn.core.multioutput`.

:class:`StackedMagma` is a :class:`~mimosa_sklearn.engine.FittedMagma` on the stacked
problem that speaks the caller's layout: inputs ``(P, N, I)``, outputs ``(P, N, O)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import kernax
import numpy as np

from . import _runtime
from .core.compile import to_device
from .core.em import run_em
from .core.init import data_scales, init_responsibilities
from .core.multioutput import PerOutputMean, StackedOutputKernel
from .core.params import Params, stack_module, to_float64
from .data import build_grid, map_to_grid
from .engine import FitConfig, FittedMagma, _pad_axis, make_batch
from .kernels import SharingLayout, build_params

__all__ = [
    "stack_observed",
    "stack_inputs",
    "correlated_kernel",
    "correlated_prior_mean",
    "StackedMagma",
    "fit_correlated",
]

# kernax kernels that already take ``output_ids`` and give cross-output covariances.
_MULTI_OUTPUT_KERNELS = (kernax.ICMKernel, kernax.LCMKernel, kernax.ConvolutionKernel)


# ---------------------------------------------------------------------- layout


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


def _unstack_second(second: np.ndarray, n_outputs: int, full_cov: bool | str) -> np.ndarray:
    """Stacked variances or covariance back to the caller's output layout.

    ``(P, M*O, 1)`` -> ``(P, M, O)``; ``(P, 1, M*O, M*O)`` -> ``(P, O, M, M)`` (blocks
    of each output) or, for ``full_cov="joint"``, ``(P, M, O, M, O)``.
    """
    p = second.shape[0]
    if not full_cov:
        return second.reshape(p, -1, n_outputs)
    joint = second[:, 0].reshape(p, -1, n_outputs, second.shape[-1] // n_outputs, n_outputs)
    if full_cov == "joint":
        return joint
    blocks = np.diagonal(joint, axis1=2, axis2=4)  # (P, M, M, O)
    return np.moveaxis(blocks, -1, 1)


# ---------------------------------------------------------------------- kernels


def _inner_kernel(length_scale: float | np.ndarray, n_inputs: int):
    """Unit-variance SE (ARD with several inputs): ``B`` carries the variances."""
    if n_inputs == 1:
        return kernax.SEKernel(float(np.ravel(length_scale)[0]))
    scales = np.broadcast_to(np.asarray(length_scale, dtype=float), (n_inputs,)).copy()
    unit = kernax.SEKernel(
        1.0, length_scale_parametrisation=kernax.parametrisations.NonTrainableParametrisation()
    )
    return kernax.ARDKernel(unit, scales)


def correlated_kernel(
    kernel, variances: np.ndarray, length_scale: float | np.ndarray, n_inputs: int
) -> StackedOutputKernel:
    """Multi-output kernel on stacked inputs for ``len(variances)`` outputs.

    Parameters
    ----------
    kernel : kernax kernel or None
        None: the ICM ``B k(x, x')`` with a unit-variance SE ``k`` (ARD length scales
        over the inputs when ``n_inputs >= 2``) and a full-rank ``B = W W^T +
        diag(kappa)`` starting diagonal (independent outputs, ``variances`` on the
        diagonal), so correlations are learned from the data. A kernax multi-output
        kernel (ICM, LCM, convolution) is used as is; any other kernax kernel becomes
        the ``k`` of such an ICM.
    variances : array of shape (O,)
        Starting variance of each output.
    length_scale : float or array of shape (I,)
        Starting length scale(s) of the default ``k``.
    n_inputs : int
        Input dimension ``I`` (without the output column).
    """
    n_out = int(np.size(variances))
    if isinstance(kernel, StackedOutputKernel):
        return kernel
    if isinstance(kernel, _MULTI_OUTPUT_KERNELS):
        if getattr(kernel, "n_outputs", n_out) != n_out:
            raise ValueError(
                f"The multi-output kernel has {kernel.n_outputs} outputs but y has {n_out}."
            )
        return StackedOutputKernel(kernel, n_out)
    half = 0.5 * np.asarray(variances, dtype=float)
    if kernel is None:
        inner = _inner_kernel(length_scale, n_inputs)
    else:  # the user's kernel keeps its own variance: B starts at the identity
        inner, half = kernel, np.full(n_out, 0.5)
    icm = kernax.ICMKernel(inner, n_out, n_out, kappa=half).replace(W=np.diag(np.sqrt(half)))
    return StackedOutputKernel(icm, n_out)


def correlated_prior_mean(mean, n_outputs: int) -> PerOutputMean:
    """One copy of a single-output kernax mean per output (None: a learned constant)."""
    if isinstance(mean, PerOutputMean):
        return mean
    mean = kernax.ConstantMean(0.0) if mean is None else mean
    return PerOutputMean(stack_module(to_float64(mean), (n_outputs,)), n_outputs)


def _start_levels(tau: np.ndarray, y0: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """``(K, O)`` average of every output over each cluster's initial tasks."""
    num = tau.T @ np.where(obs, y0, 0.0).sum(axis=1)
    den = np.maximum(tau.T @ obs.sum(axis=1), 1e-12)
    return num / den


def _correlated_params(
    layout: SharingLayout,
    config: FitConfig,
    x: np.ndarray,
    y0: np.ndarray,
    obs: np.ndarray,
    tau: np.ndarray,
) -> Params:
    row_mask = ~np.isnan(x).any(-1)
    span, var = data_scales(x, y0, obs, row_mask)
    n_in = x.shape[-1]
    mean_kernel = correlated_kernel(config.mean_kernel, var, span / 4.0, n_in)
    task_kernel = correlated_kernel(config.task_kernel, 0.25 * var, span / 10.0, n_in)
    prior = correlated_prior_mean(config.prior_mean, y0.shape[-1])
    params = build_params(layout, mean_kernel, prior, task_kernel, 0.05 * float(np.mean(var)))
    if config.prior_mean is None:  # start each cluster's levels at its initial tasks
        levels = to_device(_start_levels(tau, y0, obs)[:, None, :], jnp.float64)
        params = eqx.tree_at(lambda p: p.prior_mean.mean.constant, params, levels)
    return params


# ---------------------------------------------------------------------- fitted model


class StackedMagma(FittedMagma):
    """A MagmaClust model with correlated outputs, fitted on stacked ``(x, p)`` rows.

    Same interface as :class:`~mimosa_sklearn.engine.FittedMagma` in the caller's
    layout: inputs ``(P, N, I)``, outputs ``(P, N, O)``. ``full_cov="joint"`` in the
    predict methods gives the covariance across rows *and* outputs, ``(P, N, O, N, O)``.
    """

    def __init__(self, *args, n_outputs: int, input_grid: np.ndarray, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_joint_outputs = int(n_outputs)
        self.input_grid = np.asarray(input_grid, np.float64)

    @property
    def grid(self) -> np.ndarray:
        """(G, I) training inputs (without the output column)."""
        return self.input_grid

    def mean_processes(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hyperposterior mean and variance of every mean process at ``x``: ``(K, O, M)``."""
        o, m = self.n_joint_outputs, x.shape[0]
        mean, var = super().mean_processes(stack_inputs(np.asarray(x, np.float64), o))
        k = mean.shape[0]
        return (
            np.swapaxes(mean.reshape(k, m, o), 1, 2),
            np.swapaxes(var.reshape(k, m, o), 1, 2),
        )

    def hyperparameters(self) -> dict[str, np.ndarray]:
        """As :meth:`FittedMagma.hyperparameters`, plus the coregionalisation matrices
        ``B = W W^T + diag(kappa)`` of ICM kernels (``"<group>.coregionalisation"``)."""
        out = super().hyperparameters()
        for group in ("mean_kernel", "task_kernel"):
            w, kappa = out.get(f"{group}.kernel.W"), out.get(f"{group}.kernel.kappa")
            if w is not None and kappa is not None:
                b = np.einsum("...pr,...qr->...pq", w, w)
                out[f"{group}.coregionalisation"] = b + kappa[..., None] * np.eye(w.shape[-2])
        return out

    def _unstack(self, out, full_cov: bool | str):
        mean, second, tau = out
        o = self.n_joint_outputs
        return mean.reshape(mean.shape[0], -1, o), _unstack_second(second, o, full_cov), tau

    def predict_train(self, task_index, x_pred, *, include_noise=True, full_cov=False):
        """Predictive of training tasks at ``x_pred`` (P, Np, I).

        Returns ``(mean (P, Np, O), var (P, Np, O) or cov, tau (P, K))`` with ``cov``
        ``(P, O, Np, Np)`` (``full_cov=True``) or ``(P, Np, O, Np, O)`` (``"joint"``).
        """
        xs = stack_inputs(np.asarray(x_pred, np.float64), self.n_joint_outputs)
        out = super().predict_train(
            task_index, xs, include_noise=include_noise, full_cov=bool(full_cov)
        )
        return self._unstack(out, full_cov)

    def condition(self, x_obs: np.ndarray, y_obs: np.ndarray):
        """Memberships of new tasks observed at ``x_obs`` (P, N, I) with ``y_obs``
        (P, N, O); the context keeps the stacked observations."""
        xs, ys = stack_observed(np.asarray(x_obs, np.float64), np.asarray(y_obs, np.float64))
        return super().condition(xs, ys)

    def predict_context(self, context, x_pred, *, include_noise=True, full_cov=False):
        """Predictive of new tasks (``context`` from :meth:`condition`, or None); same
        shapes as :meth:`predict_train`."""
        xs = stack_inputs(np.asarray(x_pred, np.float64), self.n_joint_outputs)
        out = super().predict_context(
            context, xs, include_noise=include_noise, full_cov=bool(full_cov)
        )
        return self._unstack(out, full_cov)

    def sample(self, mean: np.ndarray, cov: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
        """Draws ``(P, Np, O, n_samples)``; a joint ``cov`` (P, Np, O, Np, O) keeps the
        correlations between outputs."""
        if cov.ndim != 5:
            return super().sample(mean, cov, n_samples, seed)
        p, m, o = mean.shape
        flat = cov.reshape(p, 1, m * o, m * o)
        draws = super().sample(mean.reshape(p, m * o, 1), flat, n_samples, seed)
        return draws.reshape(p, m, o, -1)


# ---------------------------------------------------------------------- fit


def fit_correlated(
    x: np.ndarray,
    y: np.ndarray,
    mappings: np.ndarray,
    grid: np.ndarray,
    config: FitConfig,
    callback: Callable[[int, float], None] | None = None,
) -> StackedMagma:
    """Fit MagmaClust with correlated outputs (arguments as :func:`engine.fit_magma`).

    The stacked grid holds the observed ``(grid point, output)`` pairs; the mean
    processes reach the others by GP conditioning at prediction time.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    row_mask = ~np.isnan(x).any(-1)
    if (np.asarray(mappings)[row_mask] < 0).any():
        raise NotImplementedError(
            "correlated_outputs=True needs every training input on the grid (grid=None)."
        )
    t, _, o = y.shape
    xs, ys = stack_observed(x, y)
    real = ~np.isnan(xs).any(-1)
    grid_s = build_grid(xs[real])
    maps = np.full(real.shape, grid_s.shape[0], dtype=np.int64)
    maps[real] = map_to_grid(xs[real], grid_s)
    obs = ~np.isnan(y) & row_mask[..., None]
    y0 = np.where(obs, y, 0.0)
    layout = SharingLayout.from_flags(
        t if not config.shared_task_hps else 1,
        config.n_clusters,
        1,
        shared_task_hps=config.shared_task_hps,
        shared_cluster_hps=config.shared_cluster_hps,
        cluster_specific_task_hps=config.cluster_specific_task_hps,
    )
    rng = np.random.default_rng(config.seed)
    best: StackedMagma | None = None
    with _runtime.x64():
        batch = make_batch(xs, ys, maps, grid_s)
        tb = batch.x.shape[0]
        if not config.shared_task_hps:
            layout = dataclasses.replace(layout, task=(tb,) + layout.task[1:])
        # k-means sees every output separately (the stacked channel would pool them).
        y_init, m_init = _pad_axis(y0, 0, tb, 0.0), _pad_axis(obs, 0, tb, False)
        for _ in range(max(1, config.n_init)):
            tau0 = init_responsibilities(
                y_init,
                m_init,
                config.n_clusters,
                rng,
                config.init,
                np.asarray(batch.task_weight),
            )
            params = _correlated_params(layout, config, x, y0, obs, tau0[:t])
            result = run_em(
                params,
                to_device(tau0),
                batch,
                max_iter=config.max_iter,
                tol=config.tol,
                jitter=config.jitter,
                max_steps=config.max_steps,
                optimiser_tol=config.optimiser_tol,
                callback=callback,
                accelerate=config.accelerate,
            )
            fitted = StackedMagma(
                result,
                batch,
                t,
                grid_s.shape[0],
                layout,
                config,
                n_outputs=o,
                input_grid=np.asarray(grid, np.float64),
            )
            if best is None or fitted.elbo > best.elbo:
                best = fitted
    assert best is not None
    return best
