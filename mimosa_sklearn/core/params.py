"""Hyperparameter containers and batched kernel evaluation.

Hyperparameter sharing is encoded in the *leading axes* of the kernel leaves (the
seed's convention): a mean-process kernel whose leaves have leading shape ``(K*, O*)``
is shared across clusters when ``K* = 1`` and across outputs when ``O* = 1``; task
kernels carry ``(T*, K*, O*)``. Size-1 axes are broadcast, never replicated, so each
distinct covariance is evaluated once.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .compile import to_device
from .likelihood import jitter_amount
from .linalg import cholesky, identity_on_padding

__all__ = [
    "Params",
    "stack_module",
    "to_float64",
    "batch_shape",
    "index_module",
    "eval_kernel",
    "eval_mean",
    "TaskBatch",
    "shared_fast_path",
    "task_covariance_one",
    "per_task_params",
    "task_covariances",
    "prior_on_grid",
    "prior_means_on_grid",
    "real_clusters_only",
    "TASK_AXIS_FIELDS",
]


class Params(eqx.Module):
    """All trainable hyperparameters of a MagmaClust model.

    Attributes
    ----------
    mean_kernel : eqx.Module
        kernax kernel of the mean processes, leaves with leading axes ``(K*, O*)``.
    prior_mean : eqx.Module
        kernax mean function of the mean processes, leaves with leading ``(K, O*)``.
    task_kernel : eqx.Module
        kernax kernel of the task deviations, leaves with leading ``(T*, K*, O*)``.
    log_noise : Array
        ``(T*, K*, O*)`` log noise variances of the tasks.
    cluster_mask : Array or None
        ``(K,)`` booleans, False on padded clusters (a fit run with more clusters than
        asked, so that nearby cluster counts share one compiled program; see
        :mod:`.clusters`). Padded clusters hold no task (zero responsibilities), add
        nothing to the ELBO or the VM-step objectives, and their hyperparameters get
        zero gradients. None: every cluster is real.
    """

    mean_kernel: eqx.Module
    prior_mean: eqx.Module
    task_kernel: eqx.Module
    log_noise: Float[Array, "Tt Kt Ot"]
    cluster_mask: Array | None = None


def real_clusters_only(values: Array, mask: Array | None) -> Array:
    """``values`` (leading axis ``K``) with the entries of padded clusters (``mask``
    False, :attr:`Params.cluster_mask`) set to 0; unchanged when ``mask`` is None."""
    if mask is None:
        return values
    return jnp.where(mask.reshape(mask.shape + (1,) * (values.ndim - 1)), values, 0.0)


def to_float64(module):
    """Cast every floating leaf to float64 (kernels built with x64 off hold float32).

    On the host (numpy, then :func:`.compile.to_device`): an eager ``jnp`` cast would
    compile a small program per leaf shape. Not for traced modules."""
    return jax.tree.map(
        lambda leaf: to_device(leaf, np.float64) if eqx.is_inexact_array(leaf) else leaf,
        module,
    )


def stack_module(module, shape: tuple[int, ...]):
    """Broadcast every inexact leaf of ``module`` to ``shape + leaf.shape`` (float64, on
    the host like :func:`to_float64`)."""
    return jax.tree.map(
        lambda leaf: (
            to_device(np.broadcast_to(np.asarray(leaf, np.float64), shape + np.shape(leaf)))
            if eqx.is_inexact_array(leaf)
            else leaf
        ),
        module,
    )


def batch_shape(module, n_axes: int) -> tuple[int, ...]:
    """Leading ``n_axes`` axes shared by the inexact leaves of a stacked module."""
    leaves = jax.tree.leaves(eqx.filter(module, eqx.is_inexact_array))
    if not leaves:
        return (1,) * n_axes
    return tuple(leaves[0].shape[:n_axes])


def index_module(module, index):
    """Index the leading axes of every inexact leaf (``module[index]``)."""
    return jax.tree.map(lambda leaf: leaf[index] if eqx.is_inexact_array(leaf) else leaf, module)


def _vmap_leading(fn: Callable, module, n_axes: int):
    """Call ``fn(unbatched_module)`` for every index of the ``n_axes`` leading axes.

    A module without array leaves (``kernax.ZeroMean``) has no axes to map over: it is
    called once and its result gets size-1 leading axes, which broadcast."""
    dynamic, static = eqx.partition(module, eqx.is_inexact_array)
    if not jax.tree.leaves(dynamic):
        out = fn(module)
        return jnp.reshape(out, (1,) * n_axes + jnp.shape(out))

    def call(dyn):
        return fn(eqx.combine(dyn, static))

    for _ in range(n_axes):
        call = jax.vmap(call)
    return call(dynamic)


def eval_kernel(
    kernel, n_axes: int, x1: Float[Array, "N I"], x2: Float[Array, "M I"]
) -> Float[Array, "... N M"]:
    """Evaluate a stacked kernel on ``(x1, x2)``: output ``batch + (N, M)``."""
    return _vmap_leading(lambda k: k(x1, x2), kernel, n_axes)


def eval_mean(mean, n_axes: int, x: Float[Array, "N I"]) -> Float[Array, "... N"]:
    """Evaluate a stacked mean function on ``x``: output ``batch + (N,)``."""

    def one(m):
        return jnp.broadcast_to(m(x), (x.shape[0],))

    return _vmap_leading(one, mean, n_axes)


class TaskBatch(eqx.Module):
    """Padded training tasks as the core sees them (no NaN anywhere).

    Attributes
    ----------
    x : (T, N, I) inputs; padded rows hold a finite placeholder.
    y : (T, N, O) outputs; 0 where not observed.
    mask : (T, N, O) ``True`` where an output is observed.
    mappings : (T, N) grid index of every row (``G`` on padded rows), or, on the
        approximate grid (:mod:`.approx`), the (T, N, G) float projection ``A_i`` of
        every task onto the inducing inputs (zero rows on padding); integer mappings
        are its one-hot special case.
    grid : (G, I) sorted unique training inputs, padded with placeholder points.
    grid_mask : (G,) ``True`` on real grid points. Padded grid points get an identity
        prior (exactly as padded task rows), which leaves the ELBO and the M-step
        unchanged, so grids of different sizes can share one compiled program.
    task_weight : (T,) 1 for real tasks, 0 for padded (dummy) tasks.
    shared_inputs : bool, static
        Every *real* task has the same inputs, mask and mappings as task 0 (padded
        tasks have an all-False mask and are accounted for by ``task_weight``). With
        task hyperparameters shared across tasks, one task covariance and one
        factorisation then serve all tasks (see :func:`shared_fast_path`).
    task_chunk : int, static
        Tasks per chunk of the per-task ``N x N`` work (:func:`.parallel.map_tasks`);
        0 computes all tasks in one ``vmap``.
    task_shards : int, static
        Devices the task axis is split across (:func:`.parallel.shard_tasks`); sums
        over tasks add each device's chunks locally first
        (:func:`.parallel.sum_over_chunks`).
    """

    x: Float[Array, "T N I"]
    y: Float[Array, "T N O"]
    mask: Array
    mappings: Array
    grid: Float[Array, "G I"]
    grid_mask: Array
    task_weight: Float[Array, " T"]
    shared_inputs: bool = eqx.field(static=True, default=False)
    task_chunk: int = eqx.field(static=True, default=0)
    task_shards: int = eqx.field(static=True, default=1)


#: The fields of :class:`TaskBatch` that lead with the task axis (the grid does not).
TASK_AXIS_FIELDS = ("x", "y", "mask", "mappings", "task_weight")


def shared_fast_path(params: Params, batch: TaskBatch) -> bool:
    """Whether all tasks share one task covariance: shared inputs and ``T* = 1``."""
    return bool(batch.shared_inputs) and params.log_noise.shape[0] == 1


def task_covariance_one(kernel, log_noise: Float[Array, "Kt Ot"], x: Float[Array, "N I"]):
    """``Psi = s_theta(x, x) + sigma^2 I`` of ONE task (kernel leaves ``(K*, O*)``):
    shape ``(K*, O*, N, N)``."""
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    return eval_kernel(kernel, 2, x, x) + jnp.exp(log_noise)[..., None, None] * eye


def per_task_params(params: Params):
    """Split the task hyperparameters for a map over tasks.

    Returns ``(xs, get)``: ``xs`` holds the arrays with a leading ``T`` axis (``None``
    when they are shared, ``T* = 1``) and ``get(xs_i)`` gives ``(kernel, log_noise)``
    of one task, leaves ``(K*, O*)``.
    """
    if params.log_noise.shape[0] == 1:
        shared = (index_module(params.task_kernel, 0), params.log_noise[0])
        return None, lambda _: shared
    dynamic, static = eqx.partition(params.task_kernel, eqx.is_inexact_array)
    return (dynamic, params.log_noise), lambda xs_i: (eqx.combine(xs_i[0], static), xs_i[1])


def task_covariances(params: Params, x: Float[Array, "T N I"]) -> Float[Array, "T Kt Ot N N"]:
    """Task covariances ``Psi_i = s_theta(t_i, t_i) + sigma^2 I`` (noise included)."""
    tt = params.log_noise.shape[0]
    n = x.shape[1]
    eye = jnp.eye(n, dtype=x.dtype)
    if tt == 1:
        kernel = index_module(params.task_kernel, 0)
        covs = jax.vmap(lambda xi: eval_kernel(kernel, 2, xi, xi))(x)
    else:
        covs = jax.vmap(lambda k, xi: eval_kernel(k, 2, xi, xi))(params.task_kernel, x)
    noise = jnp.exp(params.log_noise)
    noise = jnp.broadcast_to(noise, (x.shape[0],) + noise.shape[1:])
    return covs + noise[..., None, None] * eye


def prior_on_grid(
    params: Params, grid: Float[Array, "G I"], grid_mask: Array, jitter: float
) -> tuple[Float[Array, "Kc Oc G G"], Float[Array, "K Om G"], Float[Array, "Kc Oc G G"]]:
    """Prior covariances (jittered, identity on padded grid points), their lower factors
    and the prior means (0 on padded grid points)."""
    cov = eval_kernel(params.mean_kernel, 2, grid, grid)
    eps = jitter_amount(cov, jitter, grid_mask)[..., None, None]
    cov = identity_on_padding(cov, grid_mask, eps)
    chol = cholesky(cov)
    return cov, prior_means_on_grid(params.prior_mean, grid, grid_mask), chol


def prior_means_on_grid(
    prior_mean, grid: Float[Array, "G I"], grid_mask: Array
) -> Float[Array, "K Om G"]:
    """The stacked prior mean function on the grid, 0 on padded grid points."""
    return jnp.where(grid_mask, eval_mean(prior_mean, 2, grid), 0.0)
