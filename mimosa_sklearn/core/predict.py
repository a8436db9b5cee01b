"""Posterior predictive distributions for training tasks and new tasks.

The hyperposterior ``q(mu_k)`` lives on the training grid; any other input is reached
by GP conditioning on the grid (ALGORITHM.md §4.1a), reusing the factors ``L`` of the
prior covariance and ``R`` of the whitened precision, so no refit is ever needed.

The formulas work on one task; the compiled programs at the end map them over many
tasks and take the fitted :class:`~.model.Model` as one argument.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .compile import jit
from .hyperposterior import Hyperposterior, cluster_index
from .likelihood import LOG_2PI, masked_factor
from .linalg import cho_solve, logdet_from_chol, lower_inverse, solve_lower, symmetrise
from .memberships import log_weights
from .model import Model
from .optimise import minimise
from .params import Params, eval_kernel, eval_mean, index_module

__all__ = [
    "GridExtension",
    "grid_extension",
    "extend_hyperposterior",
    "task_params_of",
    "predict_training_task",
    "new_task_log_marginal",
    "predict_new_task",
    "fit_new_task_params",
    "mixture_moments",
    "mean_processes",
    "predict_training_tasks",
    "new_task_memberships",
    "fit_new_tasks_params",
    "predict_new_tasks",
    "typical_task_params",
]


class GridExtension(eqx.Module):
    """Inverse factors that extend ``q(mu_k)`` from the grid to any inputs.

    Computed once per prediction call (:func:`grid_extension`) and shared by all tasks:
    each task then needs two matrix products instead of two triangular solves against
    the ``G x G`` factors, the slowest kernel of a prediction.

    Attributes
    ----------
    chol_inv : (K, O, G, G) ``L^{-1}``, inverse of the prior covariance's factor.
    whitened_inv : (K, O, G, G) ``R^{-1} L^{-1}``.
    alpha : (K, O, G) ``L^{-1} (m_hat - m)``.
    """

    chol_inv: Float[Array, "K O G G"]
    whitened_inv: Float[Array, "K O G G"]
    alpha: Float[Array, "K O G"]


def grid_extension(post: Hyperposterior) -> GridExtension:
    """The :class:`GridExtension` of a hyperposterior."""
    chol_inv = lower_inverse(post.prior_chol)
    return GridExtension(
        chol_inv=chol_inv,
        whitened_inv=solve_lower(post.whitened_chol, chol_inv),
        alpha=jnp.einsum("kogh,koh->kog", chol_inv, post.mean - post.prior_mean),
    )


def extend_hyperposterior(
    model: Model, x: Float[Array, "M I"], extension: GridExtension | None = None
) -> tuple[Float[Array, "K O M"], Float[Array, "K O M M"]]:
    """Hyperposterior of every mean process of ``model`` at arbitrary inputs ``x``.

    With ``C = L L^T`` and ``Z = L^{-1} C(G, x)``: ``mean = m(x) + Z^T L^{-1}(m_hat - m)``
    and ``cov = C(x, x) - Z^T Z + (R^{-1} Z)^T (R^{-1} Z)``. Pass the ``extension`` of
    the hyperposterior when extending to the inputs of many tasks: it is computed here
    otherwise.
    """
    params, post, grid, grid_mask = model.params, model.post, model.grid, model.grid_mask
    if extension is None:
        extension = grid_extension(post)
    k, o, g = post.mean.shape
    m = x.shape[0]
    cross = eval_kernel(params.mean_kernel, 2, x, grid)  # (Kc, Oc, M, G)
    cross = jnp.where(grid_mask, cross, 0.0)
    cross_t = jnp.swapaxes(jnp.broadcast_to(cross, (k, o, m, g)), -1, -2)  # (K, O, G, M)
    kxx = jnp.broadcast_to(eval_kernel(params.mean_kernel, 2, x, x), (k, o, m, m))
    mx = jnp.broadcast_to(eval_mean(params.prior_mean, 2, x), (k, o, m))
    z = extension.chol_inv @ cross_t  # (K, O, G, M)
    mean = mx + jnp.einsum("kogm,kog->kom", z, extension.alpha)
    u = extension.whitened_inv @ cross_t
    cov = kxx - jnp.swapaxes(z, -1, -2) @ z + jnp.swapaxes(u, -1, -2) @ u
    return mean, symmetrise(cov)


def task_params_of(params: Params, index) -> tuple[object, Float[Array, "Kt Ot"]]:
    """Task kernel and log-noise of one task (leaves ``(K*, O*)``)."""
    tt = params.log_noise.shape[0]
    i = index if tt > 1 else 0
    return index_module(params.task_kernel, i), params.log_noise[i]


def _task_blocks(kernel, log_noise, x, n_clusters: int, n_outputs: int):
    """Noise-free task kernel ``(K, O, M, M)`` and noise ``(K, O)`` for one task."""
    s = eval_kernel(kernel, 2, x, x)  # (Kt, Ot, M, M)
    kidx = cluster_index(n_clusters, s.shape[0])
    s = s[kidx]
    noise = jnp.exp(log_noise)[kidx]
    m = x.shape[0]
    return (
        jnp.broadcast_to(s, (n_clusters, n_outputs, m, m)),
        jnp.broadcast_to(noise, (n_clusters, n_outputs)),
    )


def mixture_moments(
    tau: Float[Array, " K"], means: Float[Array, "K O P"], covs: Float[Array, "K O P P"]
) -> tuple[Float[Array, "O P"], Float[Array, "O P P"]]:
    """Mean and covariance of a Gaussian mixture (law of total covariance)."""
    mean = jnp.einsum("k,kop->op", tau, means)
    dev = means - mean[None]
    cov = jnp.einsum("k,kopq->opq", tau, covs + dev[..., :, None] * dev[..., None, :])
    return mean, cov


def predict_training_task(
    model: Model,
    task_index,
    tau: Float[Array, " K"],
    x_obs: Float[Array, "N I"],
    y_obs: Float[Array, "N O"],
    mask_obs: Bool[Array, "N O"],
    x_pred: Float[Array, "P I"],
    include_noise: bool,
    extension: GridExtension | None = None,
) -> tuple[Float[Array, "O P"], Float[Array, "O P P"]]:
    """Variational predictive of a training task (ALGORITHM.md §4.2).

    ``f_i | mu_k, y_i`` is GP conditioning on ``y_i - mu_k(t_i)``; averaging over
    ``q(mu_k)`` does not count ``y_i`` twice (it is already inside ``q``).
    """
    k, o, _ = model.post.mean.shape
    p, n = x_pred.shape[0], x_obs.shape[0]
    jitter = model.jitter
    x_all = jnp.concatenate([x_pred, x_obs], axis=0)
    mu, cov = extend_hyperposterior(model, x_all, extension)
    kernel, log_noise = task_params_of(model.params, task_index)
    s, noise = _task_blocks(kernel, log_noise, x_all, k, o)
    mask_t = mask_obs.T  # (O, N)
    both = mask_t[:, :, None] & mask_t[:, None, :]

    def one(mu_ko, cov_ko, s_ko, noise_ko, y_o, m_o, both_o):
        s_oo = jnp.where(both_o, s_ko[p:, p:], 0.0) + noise_ko * jnp.eye(n)
        chol = masked_factor(s_oo, m_o, jitter)
        s_op = jnp.where(m_o[:, None], s_ko[p:, :p], 0.0)
        b = jnp.swapaxes(cho_solve(chol, s_op), 0, 1)  # (P, N)
        resid = jnp.where(m_o, y_o - mu_ko[p:], 0.0)
        mean = mu_ko[:p] + b @ resid
        c_pp, c_po, c_oo = cov_ko[:p, :p], cov_ko[:p, p:], cov_ko[p:, p:]
        c_po = jnp.where(m_o[None, :], c_po, 0.0)
        c_oo = jnp.where(both_o, c_oo, 0.0)
        var = c_pp - b @ c_po.T - c_po @ b.T + b @ c_oo @ b.T + s_ko[:p, :p] - b @ s_op
        if include_noise:
            var = var + noise_ko * jnp.eye(p)
        return mean, symmetrise(var)

    over_o = jax.vmap(one, in_axes=(0, 0, 0, 0, 1, 0, 0))
    means, covs = jax.vmap(over_o, in_axes=(0, 0, 0, 0, None, None, None))(
        mu, cov, s, noise, y_obs, mask_t, both
    )
    return mixture_moments(tau, means, covs)


def _new_task_terms(
    params_task: tuple[object, Array],
    mu: Float[Array, "K O M"],
    cov: Float[Array, "K O M M"],
    x_all: Float[Array, "M I"],
    y_obs: Float[Array, "N O"],
    mask_obs: Bool[Array, "N O"],
    n_pred: int,
    jitter: float,
):
    """Per-(cluster, output) Gaussian conditioning of a new task on its observations.

    Returns predictive means ``(K, O, P)``, noise-free covariances ``(K, O, P, P)``,
    the log marginal likelihoods ``(K, O)`` of the observations and the noise ``(K, O)``.
    """
    k, o, _ = mu.shape
    p = n_pred
    n = y_obs.shape[0]
    kernel, log_noise = params_task
    s, noise = _task_blocks(kernel, log_noise, x_all, k, o)
    mask_t = mask_obs.T
    both = mask_t[:, :, None] & mask_t[:, None, :]

    def one(mu_ko, cov_ko, s_ko, noise_ko, y_o, m_o, both_o):
        gam = cov_ko + s_ko
        g_oo = jnp.where(both_o, gam[p:, p:], 0.0) + noise_ko * jnp.eye(n)
        chol = masked_factor(g_oo, m_o, jitter)
        g_op = jnp.where(m_o[:, None], gam[p:, :p], 0.0)
        z = solve_lower(chol, g_op)  # (N, P)
        resid = jnp.where(m_o, y_o - mu_ko[p:], 0.0)
        a = solve_lower(chol, resid[:, None])[:, 0]
        mean = mu_ko[:p] + z.T @ a
        var = gam[:p, :p] - z.T @ z
        logml = -0.5 * (a @ a + logdet_from_chol(chol) + jnp.sum(m_o) * LOG_2PI)
        return mean, symmetrise(var), logml

    over_o = jax.vmap(one, in_axes=(0, 0, 0, 0, 1, 0, 0))
    means, covs, logml = jax.vmap(over_o, in_axes=(0, 0, 0, 0, None, None, None))(
        mu, cov, s, noise, y_obs, mask_t, both
    )
    return means, covs, logml, noise


def new_task_log_marginal(
    params_task, weights, mu_obs, cov_obs, x_obs, y_obs, mask_obs, jitter
) -> tuple[Float[Array, ""], Float[Array, " K"]]:
    """``log sum_k pi_k N(y*; m_hat_k(t*), Gamma_k)`` and the memberships ``tau*``."""
    _, _, logml, _ = _new_task_terms(
        params_task, mu_obs, cov_obs, x_obs, y_obs, mask_obs, 0, jitter
    )
    logits = log_weights(weights) + jnp.sum(logml, axis=-1)
    total = jax.nn.logsumexp(logits)
    tau = jnp.exp(logits - total)
    return total, tau / jnp.sum(tau)


def predict_new_task(
    model: Model,
    params_task,
    x_obs: Float[Array, "N I"],
    y_obs: Float[Array, "N O"],
    mask_obs: Bool[Array, "N O"],
    x_pred: Float[Array, "P I"],
    include_noise: bool,
    extension: GridExtension | None = None,
) -> tuple[Float[Array, "O P"], Float[Array, "O P P"], Float[Array, " K"]]:
    """Mixture predictive of a new task from its observed points (ALGORITHM.md §4.1).

    Memberships come from the marginal likelihood ``N(y*; m_hat_k, Psi* + C_hat_k)``;
    with no observation they equal the mixture weights and the prediction is the prior
    mixture of the mean processes plus the task kernel.
    """
    p = x_pred.shape[0]
    x_all = jnp.concatenate([x_pred, x_obs], axis=0)
    mu, cov = extend_hyperposterior(model, x_all, extension)
    means, covs, logml, noise = _new_task_terms(
        params_task, mu, cov, x_all, y_obs, mask_obs, p, model.jitter
    )
    logits = log_weights(model.weights) + jnp.sum(logml, axis=-1)
    tau = jax.nn.softmax(logits)
    if include_noise:
        covs = covs + noise[..., None, None] * jnp.eye(p)
    mean, cov_mix = mixture_moments(tau, means, covs)
    return mean, cov_mix, tau


def fit_new_task_params(
    model: Model,
    params_task0,
    x_obs: Float[Array, "N I"],
    y_obs: Float[Array, "N O"],
    mask_obs: Bool[Array, "N O"],
    max_steps: int,
    tol: float,
    extension: GridExtension | None = None,
):
    """Hyperparameters of a new task maximising its mixture marginal likelihood.

    Direct L-BFGS on ``-log sum_k pi_k N(y*; m_hat_k(t*), Psi_theta + C_hat_k(t*))``
    (equivalent to the EM of the R reference, ALGORITHM.md §4.1b); the start is kept if
    the optimiser does not improve on it.
    """
    mu, cov = extend_hyperposterior(model, x_obs, extension)
    dynamic, static = eqx.partition(params_task0, eqx.is_inexact_array)

    def fn(dyn, args):
        pt = eqx.combine(dyn, static)
        total, _ = new_task_log_marginal(
            pt, model.weights, mu, cov, x_obs, y_obs, mask_obs, model.jitter
        )
        return -total

    best, _, _ = minimise(fn, dynamic, None, max_steps, tol)
    return eqx.combine(best, static)


# ---------------------------------------------------------------------- compiled programs
# Tasks are mapped in chunks (``jax.lax.map``): the per-task work is a few small
# factorisations, and a chunked map bounds the memory of many tasks.

_CHUNK = 64
# Tolerance of the L-BFGS fit of a new task's own hyperparameters.
_NEW_TASK_TOL = 1e-5


def _over_tasks(model: Model, per_task: Callable, *arrays):
    """``per_task(extension, *task)`` for every task of ``arrays`` (leading axis), in
    chunks; the grid extension of the hyperposterior is computed once for all tasks."""
    ext = grid_extension(model.post)
    return jax.lax.map(lambda task: per_task(ext, *task), arrays, batch_size=_CHUNK)


@jit
def mean_processes(model: Model, x: Float[Array, "M I"]):
    """Hyperposterior mean ``(K, O, M)`` and covariance ``(K, O, M, M)`` at ``x``."""
    return extend_hyperposterior(model, x)


@jit
def predict_training_tasks(
    model: Model,
    index: Int[Array, " P"],
    x_pred: Float[Array, "P M I"],
    include_noise: bool,
):
    """Predictive mean ``(P, O, M)`` and covariance ``(P, O, M, M)`` of the model's
    training tasks ``index`` at ``x_pred``."""
    tasks = model.tasks

    def one(ext, i, xp):
        x_obs, y_obs, mask_obs = tasks.x[i], tasks.y[i], tasks.mask[i]
        tau = model.tau[i]
        return predict_training_task(model, i, tau, x_obs, y_obs, mask_obs, xp, include_noise, ext)

    return _over_tasks(model, one, index, x_pred)


@jit
def new_task_memberships(
    model: Model,
    task_params,
    x_obs: Float[Array, "P N I"],
    y_obs: Float[Array, "P N O"],
    mask_obs: Bool[Array, "P N O"],
) -> Float[Array, "P K"]:
    """Memberships of new tasks from their observations (``task_params``: one leading
    row per task)."""

    def one(ext, pt, xo, yo, mo):
        mu, cov = extend_hyperposterior(model, xo, ext)
        return new_task_log_marginal(pt, model.weights, mu, cov, xo, yo, mo, model.jitter)[1]

    return _over_tasks(model, one, task_params, x_obs, y_obs, mask_obs)


@jit
def fit_new_tasks_params(
    model: Model,
    start,
    x_obs: Float[Array, "P N I"],
    y_obs: Float[Array, "P N O"],
    mask_obs: Bool[Array, "P N O"],
    max_steps: int,
):
    """Own hyperparameters of new tasks (task-specific hyperparameters), from ``start``."""

    def one(ext, pt, xo, yo, mo):
        return fit_new_task_params(model, pt, xo, yo, mo, max_steps, _NEW_TASK_TOL, ext)

    return _over_tasks(model, one, start, x_obs, y_obs, mask_obs)


@jit
def predict_new_tasks(
    model: Model,
    task_params,
    x_obs: Float[Array, "P N I"],
    y_obs: Float[Array, "P N O"],
    mask_obs: Bool[Array, "P N O"],
    x_pred: Float[Array, "P M I"],
    include_noise: bool,
):
    """Predictive mean ``(P, O, M)``, covariance ``(P, O, M, M)`` and memberships
    ``(P, K)`` of new tasks from their observations (none: all of ``mask_obs`` False)."""

    def one(ext, pt, xo, yo, mo, xp):
        return predict_new_task(model, pt, xo, yo, mo, xp, include_noise, ext)

    return _over_tasks(model, one, task_params, x_obs, y_obs, mask_obs, x_pred)


@jit
def typical_task_params(params: Params, real: Bool[Array, " Tt"], n: int):
    """Task hyperparameters for ``n`` new tasks: the shared ones, or the average of the
    ``real`` (not padded) tasks' unconstrained values when they are task-specific.

    ``real`` is an array, so a fit on other tasks (another fold) reuses the program."""
    weight = real / jnp.sum(real)

    def average(a):
        if not eqx.is_inexact_array(a):
            return a
        if a.shape[0] == 1:  # shared: the value itself
            return a[0]
        return jnp.tensordot(weight, a, axes=1)

    kernel, noise = jax.tree.map(average, (params.task_kernel, params.log_noise))
    return jax.tree.map(
        lambda a: jnp.broadcast_to(a, (n,) + a.shape) if eqx.is_inexact_array(a) else a,
        (kernel, noise),
    )
