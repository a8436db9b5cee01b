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
    "grid_rows",
    "moments_from_rows",
    "extend_hyperposterior",
    "task_params_of",
    "predict_training_task",
    "new_task_log_marginal",
    "predict_new_task",
    "fit_new_task_params",
    "mixture_moments",
    "extension_of",
    "mean_processes",
    "predict_training_tasks",
    "new_task_memberships",
    "fit_new_tasks_params",
    "predict_new_tasks",
    "typical_task_params",
]


class GridExtension(eqx.Module):
    """Inverse factors that extend ``q(mu_k)`` from the grid to any inputs.

    They depend on the fitted model only: computed once (:func:`grid_extension`) and
    shared by all tasks and all calls, so that a task then needs matrix products
    instead of triangular solves against the ``G x G`` factors.

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


def grid_rows(
    model: Model, x: Float[Array, "M I"], extension: GridExtension
) -> tuple[Float[Array, "K O M"], Float[Array, "K O M G"], Float[Array, "K O M G"]]:
    """The grid side of :func:`extend_hyperposterior` at ``x``, one row per input: the
    mean, ``Z^T = C(x, G) L^{-T}`` and ``(R^{-1} Z)^T``."""
    params, grid, grid_mask = model.params, model.grid, model.grid_mask
    k, o, g = extension.alpha.shape
    m = x.shape[0]
    cross = eval_kernel(params.mean_kernel, 2, x, grid)  # (Kc, Oc, M, G)
    cross = jnp.broadcast_to(jnp.where(grid_mask, cross, 0.0), (k, o, m, g))
    mx = jnp.broadcast_to(eval_mean(params.prior_mean, 2, x), (k, o, m))
    z_t = cross @ jnp.swapaxes(extension.chol_inv, -1, -2)  # (K, O, M, G)
    mean = mx + jnp.einsum("komg,kog->kom", z_t, extension.alpha)
    return mean, z_t, cross @ jnp.swapaxes(extension.whitened_inv, -1, -2)


def moments_from_rows(
    model: Model,
    rows: tuple[Float[Array, "K O M"], Float[Array, "K O M G"], Float[Array, "K O M G"]],
    x: Float[Array, "M I"],
) -> tuple[Float[Array, "K O M"], Float[Array, "K O M M"]]:
    """Hyperposterior mean and covariance at ``x`` from its :func:`grid_rows`."""
    mean, z_t, w_t = rows
    k, o, m = mean.shape
    kxx = jnp.broadcast_to(eval_kernel(model.params.mean_kernel, 2, x, x), (k, o, m, m))
    cov = kxx - z_t @ jnp.swapaxes(z_t, -1, -2) + w_t @ jnp.swapaxes(w_t, -1, -2)
    return mean, symmetrise(cov)


def extend_hyperposterior(
    model: Model, x: Float[Array, "M I"], extension: GridExtension | None = None
) -> tuple[Float[Array, "K O M"], Float[Array, "K O M M"]]:
    """Hyperposterior of every mean process of ``model`` at arbitrary inputs ``x``.

    With ``C = L L^T`` and ``Z = L^{-1} C(G, x)``: ``mean = m(x) + Z^T L^{-1}(m_hat - m)``
    and ``cov = C(x, x) - Z^T Z + (R^{-1} Z)^T (R^{-1} Z)``. Pass the ``extension`` of
    the hyperposterior when extending to the inputs of many tasks: it is computed here
    otherwise.
    """
    if extension is None:
        extension = grid_extension(model.post)
    return moments_from_rows(model, grid_rows(model, x, extension), x)


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
    moments: tuple[Array, Array] | None = None,
) -> tuple[Float[Array, "O P"], Float[Array, "O P P"]]:
    """Variational predictive of a training task (ALGORITHM.md §4.2).

    ``f_i | mu_k, y_i`` is GP conditioning on ``y_i - mu_k(t_i)``; averaging over
    ``q(mu_k)`` does not count ``y_i`` twice (it is already inside ``q``). ``moments``:
    the hyperposterior at ``x_pred`` then ``x_obs`` (:func:`extend_hyperposterior`),
    computed here when not given.
    """
    k, o, _ = model.post.mean.shape
    p, n = x_pred.shape[0], x_obs.shape[0]
    jitter = model.jitter
    x_all = jnp.concatenate([x_pred, x_obs], axis=0)
    mu, cov = extend_hyperposterior(model, x_all) if moments is None else moments
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
    params_task, weights, mu_obs, cov_obs, x_obs, y_obs, mask_obs, jitter, cluster_mask=None
) -> tuple[Float[Array, ""], Float[Array, " K"]]:
    """``log sum_k pi_k N(y*; m_hat_k(t*), Gamma_k)`` and the memberships ``tau*``
    (padded clusters, ``cluster_mask`` False, left out)."""
    _, _, logml, _ = _new_task_terms(
        params_task, mu_obs, cov_obs, x_obs, y_obs, mask_obs, 0, jitter
    )
    logits = log_weights(weights, cluster_mask) + jnp.sum(logml, axis=-1)
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
    moments: tuple[Array, Array] | None = None,
) -> tuple[Float[Array, "O P"], Float[Array, "O P P"], Float[Array, " K"]]:
    """Mixture predictive of a new task from its observed points (ALGORITHM.md §4.1).

    Memberships come from the marginal likelihood ``N(y*; m_hat_k, Psi* + C_hat_k)``;
    with no observation they equal the mixture weights and the prediction is the prior
    mixture of the mean processes plus the task kernel. ``moments``: as for
    :func:`predict_training_task`.
    """
    p = x_pred.shape[0]
    x_all = jnp.concatenate([x_pred, x_obs], axis=0)
    mu, cov = extend_hyperposterior(model, x_all) if moments is None else moments
    means, covs, logml, noise = _new_task_terms(
        params_task, mu, cov, x_all, y_obs, mask_obs, p, model.jitter
    )
    logits = log_weights(model.weights, model.params.cluster_mask) + jnp.sum(logml, axis=-1)
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
    moments: tuple[Array, Array] | None = None,
):
    """Hyperparameters of a new task maximising its mixture marginal likelihood.

    Direct L-BFGS on ``-log sum_k pi_k N(y*; m_hat_k(t*), Psi_theta + C_hat_k(t*))``
    (equivalent to the EM of the R reference, ALGORITHM.md §4.1b); the start is kept if
    the optimiser does not improve on it. ``moments``: the hyperposterior at ``x_obs``,
    computed here when not given.
    """
    mu, cov = extend_hyperposterior(model, x_obs) if moments is None else moments
    dynamic, static = eqx.partition(params_task0, eqx.is_inexact_array)
    mask = model.params.cluster_mask

    def fn(dyn, args):
        pt = eqx.combine(dyn, static)
        total, _ = new_task_log_marginal(
            pt, model.weights, mu, cov, x_obs, y_obs, mask_obs, model.jitter, mask
        )
        return -total

    best, _, _ = minimise(fn, dynamic, None, max_steps, tol)
    return eqx.combine(best, static)


# ---------------------------------------------------------------------- compiled programs
# The programs on tasks take the fitted model, its :class:`GridExtension` (computed once
# by :func:`extension_of`) and the distinct inputs ``u`` of their tasks, task inputs as
# indices into ``u``: the ``O(G^2)`` products per input are done once per distinct
# input. With ``shared`` inputs the hyperposterior is extended to all of ``u`` jointly
# (``O(G U^2)`` more) and every task gathers its block; otherwise each task multiplies
# its own rows (``O(G M^2)``). Tasks are mapped in chunks (``jax.lax.map``): the
# per-task work is a few small factorisations, and a chunked map bounds the memory of
# many tasks.

_CHUNK = 64
# Tolerance of the L-BFGS fit of a new task's own hyperparameters.
_NEW_TASK_TOL = 1e-5


def _over_tasks(
    model: Model, extension: GridExtension, u, shared: bool, per_task: Callable, *arrays
):
    """``per_task(moments_at, *task)`` for every task of ``arrays`` (leading axis), in
    chunks; ``moments_at(index)`` is the hyperposterior at ``u[index]``."""
    if shared:
        mean_u, cov_u = extend_hyperposterior(model, u, extension)

        def moments_at(index):
            return mean_u[..., index], cov_u[..., index, :][..., index]

    else:
        mean_u, z_u, w_u = grid_rows(model, u, extension)

        def moments_at(index):
            rows = (mean_u[..., index], z_u[..., index, :], w_u[..., index, :])
            return moments_from_rows(model, rows, u[index])

    return jax.lax.map(lambda task: per_task(moments_at, *task), arrays, batch_size=_CHUNK)


@jit
def extension_of(model: Model) -> GridExtension:
    """The :class:`GridExtension` of the model's hyperposterior."""
    return grid_extension(model.post)


@jit
def mean_processes(model: Model, x: Float[Array, "M I"]):
    """Hyperposterior mean ``(K, O, M)`` and covariance ``(K, O, M, M)`` at ``x``."""
    return extend_hyperposterior(model, x)


@jit
def predict_training_tasks(
    model: Model,
    extension: GridExtension,
    u: Float[Array, "U I"],
    shared: bool,
    index: Int[Array, " P"],
    obs_index: Int[Array, "P N"],
    pred_index: Int[Array, "P M"],
    include_noise: bool,
):
    """Predictive mean ``(P, O, M)`` and covariance ``(P, O, M, M)`` of the model's
    training tasks ``index`` at ``u[pred_index]``; ``u[obs_index]`` are their inputs."""
    tasks = model.tasks

    def one(moments_at, i, io, ip):
        x_obs, y_obs, mask_obs = tasks.x[i], tasks.y[i], tasks.mask[i]
        moments = moments_at(jnp.concatenate([ip, io]))
        return predict_training_task(
            model, i, model.tau[i], x_obs, y_obs, mask_obs, u[ip], include_noise, moments
        )

    return _over_tasks(model, extension, u, shared, one, index, obs_index, pred_index)


@jit
def new_task_memberships(
    model: Model,
    extension: GridExtension,
    u: Float[Array, "U I"],
    shared: bool,
    task_params,
    obs_index: Int[Array, "P N"],
    y_obs: Float[Array, "P N O"],
    mask_obs: Bool[Array, "P N O"],
) -> Float[Array, "P K"]:
    """Memberships of new tasks from their observations at ``u[obs_index]``
    (``task_params``: one leading row per task)."""

    def one(moments_at, pt, io, yo, mo):
        mu, cov = moments_at(io)
        mask = model.params.cluster_mask
        _, tau = new_task_log_marginal(
            pt, model.weights, mu, cov, u[io], yo, mo, model.jitter, mask
        )
        return tau

    return _over_tasks(model, extension, u, shared, one, task_params, obs_index, y_obs, mask_obs)


@jit
def fit_new_tasks_params(
    model: Model,
    extension: GridExtension,
    u: Float[Array, "U I"],
    shared: bool,
    start,
    obs_index: Int[Array, "P N"],
    y_obs: Float[Array, "P N O"],
    mask_obs: Bool[Array, "P N O"],
    max_steps: int,
):
    """Own hyperparameters of new tasks (task-specific hyperparameters), from ``start``."""

    def one(moments_at, pt, io, yo, mo):
        moments = moments_at(io)
        return fit_new_task_params(model, pt, u[io], yo, mo, max_steps, _NEW_TASK_TOL, moments)

    return _over_tasks(model, extension, u, shared, one, start, obs_index, y_obs, mask_obs)


@jit
def predict_new_tasks(
    model: Model,
    extension: GridExtension,
    u: Float[Array, "U I"],
    shared: bool,
    task_params,
    obs_index: Int[Array, "P N"],
    y_obs: Float[Array, "P N O"],
    mask_obs: Bool[Array, "P N O"],
    pred_index: Int[Array, "P M"],
    include_noise: bool,
):
    """Predictive mean ``(P, O, M)``, covariance ``(P, O, M, M)`` and memberships
    ``(P, K)`` of new tasks at ``u[pred_index]`` from their observations at
    ``u[obs_index]`` (none: all of ``mask_obs`` False)."""

    def one(moments_at, pt, io, yo, mo, ip):
        moments = moments_at(jnp.concatenate([ip, io]))
        return predict_new_task(model, pt, u[io], yo, mo, u[ip], include_noise, moments)

    return _over_tasks(
        model, extension, u, shared, one, task_params, obs_index, y_obs, mask_obs, pred_index
    )


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
