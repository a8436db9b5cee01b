"""VM-step: mixture weights in closed form, hyperparameters by L-BFGS (optimistix).

With ``q`` fixed, the ELBO separates into a mean-process objective (``gamma``, prior
mean parameters) and a task objective (``theta``, noise). Both are written through
second moments (ALGORITHM.md §2.3), so one factorisation per distinct covariance is
enough per evaluation. Positivity comes from kernax's log parametrisation and the
log-noise, so the optimiser works on unconstrained reals.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from .approx import prior_offsets
from .hyperposterior import Hyperposterior
from .likelihood import LOG_2PI, factorable_cov, logdet_and_factored_trace, moment_nll
from .linalg import cholesky, gather_matrix, gather_vector, solve_lower
from .optimise import minimise
from .parallel import map_tasks, sum_with_gradient
from .params import (
    Params,
    TaskBatch,
    batch_shape,
    index_module,
    per_task_params,
    prior_means_on_grid,
    prior_on_grid,
    real_clusters_only,
    shared_fast_path,
    task_covariance_one,
)
from .parts import Batch, as_parts, part_params, split_tasks, task_weights

__all__ = [
    "mixture_weights",
    "posterior_factor",
    "cluster_objective",
    "task_moments",
    "task_objective",
    "streamed_task_objective",
    "minimise",
    "total_objective",
    "part_moments",
    "prior_mean_step",
    "m_step",
]


def mixture_weights(
    tau: Float[Array, "T K"], task_weight: Float[Array, " T"]
) -> Float[Array, " K"]:
    """Closed-form mixture proportions ``pi_k = mean_i tau_ik`` over real tasks.

    Written with array methods, so that numpy inputs stay on the host (no small
    program compiled per shape when called outside ``jit``)."""
    return (task_weight[:, None] * tau).sum(axis=0) / task_weight.sum()


def posterior_factor(
    post: Hyperposterior, kc: int, oc: int, mask: Array | None = None
) -> Float[Array, "Kc Oc G G"]:
    """Lower factors of the hyperposterior covariances summed over the axes the prior
    covariances share (``kc``/``oc`` = 1: shared across clusters/outputs), padded
    clusters (``mask`` False, :attr:`.params.Params.cluster_mask`) left out of the sums.

    The VM-step holds ``q`` fixed, so :func:`cluster_objective` takes these once per
    VM-step instead of factorising in every L-BFGS evaluation. The sums are symmetric
    positive definite; should rounding make one fail, it is factorised again with a
    relative jitter of 1e-12.
    """
    cov = post.cov
    if kc == 1:
        cov = jnp.sum(real_clusters_only(cov, mask), axis=0, keepdims=True)
    if oc == 1:
        cov = jnp.sum(cov, axis=1, keepdims=True)
    chol = cholesky(cov)

    def retry():
        scale = jnp.trace(cov, axis1=-2, axis2=-1)[..., None, None] / cov.shape[-1]
        return cholesky(cov + 1e-12 * scale * jnp.eye(cov.shape[-1], dtype=cov.dtype))

    return lax.cond(jnp.all(jnp.isfinite(chol)), lambda: chol, retry)


def _residual_columns(
    post_mean: Float[Array, "K O G"],
    prior_mean: Float[Array, "K Om G"],
    kc: int,
    oc: int,
    mask: Array | None = None,
) -> Array:
    """Residuals ``mu_hat_k - m_k`` as ``(Kc, Oc, G, R)`` columns, one group per distinct
    prior covariance (``R = K/Kc * O/Oc`` mean processes share it); 0 for padded
    clusters (``mask`` False)."""
    k, o, g = post_mean.shape
    r = real_clusters_only(post_mean - jnp.broadcast_to(prior_mean, (k, o, g)), mask)
    r = r.reshape(kc, k // kc, oc, o // oc, g)
    return r.transpose(0, 2, 4, 1, 3).reshape(kc, oc, g, (k // kc) * (o // oc))


def cluster_objective(
    params: Params,
    post: Hyperposterior,
    grid: Float[Array, "G I"],
    grid_mask: Array,
    jitter: float,
    factor: Float[Array, "Kc Oc G G"] | None = None,
) -> Float[Array, ""]:
    """``sum_k J^mu_k``: expected NLL of the hyperposteriors under their priors.

    ``E_q[(mu_k - m_k)(mu_k - m_k)^T] = C_hat_k + r_k r_k^T`` enters through the factor
    of the summed ``C_hat_k`` (:func:`posterior_factor`, computed here when ``factor`` is
    None) and the residual columns ``r_k`` (:func:`.likelihood.logdet_and_factored_trace`).
    Padded clusters (:attr:`.params.Params.cluster_mask`) add nothing.
    """
    # The factor that prior_on_grid also returns is unused here, so XLA drops it.
    cov, mean, _ = prior_on_grid(params, grid, grid_mask, jitter)
    kc, oc, g, _ = cov.shape
    k, o, _ = post.mean.shape
    mask = params.cluster_mask
    if factor is None:
        factor = posterior_factor(post, kc, oc, mask)
    columns = _residual_columns(post.mean, mean, kc, oc, mask)
    logdet, trace = logdet_and_factored_trace(cov, factor, columns)
    count = (k // kc) * (o // oc)
    if mask is not None:
        # Real mean processes per prior covariance; a covariance of padded ones only
        # (cluster-specific kernels) drops out, its trace too.
        count = jnp.sum(mask.reshape(kc, k // kc), axis=1)[:, None] * (o // oc)
        trace = jnp.where(count > 0, trace, 0.0)
    return 0.5 * jnp.sum(count * (logdet + g * LOG_2PI) + trace)


def task_moments(
    batch: TaskBatch,
    tau: Float[Array, "T K"],
    post: Hyperposterior,
    n_task_clusters: int,
    shared: bool = False,
    offsets: Float[Array, "T K O N"] | None = None,
) -> tuple[Float[Array, "Ts Kt O N N"], Float[Array, "Ts Kt"]]:
    """Per-task second moments ``S_i = sum_k tau_ik E_q[(y_i - mu_k)(y_i - mu_k)^T]``.

    With cluster-specific task covariances (``Kt = K``) the moments stay per cluster,
    each weighted by ``tau_ik``; the returned weights multiply the log-determinants.

    ``shared=True`` (shared-input fast path, :func:`.params.shared_fast_path`): all
    real tasks share one covariance, so ``sum_i tr(Psi^{-1} S_i) = tr(Psi^{-1} sum_i S_i)``
    and the moments are summed over tasks (``Ts = 1``); the weights become the
    ``task_weight``-weighted sums, since padded tasks add nothing on the general path.

    ``offsets``: prior-mean offsets of the approximate grid (:mod:`.approx`), added to
    the task means; None on the exact grid.
    """
    mask_t = jnp.swapaxes(batch.mask, 1, 2)  # (T, O, N)
    if shared:
        m0 = mask_t[0]  # (O, N)
        mu = gather_vector(post.mean, batch.mappings[0])  # (K, O, N)
        cov_hat = gather_matrix(post.cov, batch.mappings[0])  # (K, O, N, N)
        resid = jnp.where(m0, jnp.swapaxes(batch.y, 1, 2)[:, None] - mu[None], 0.0)
        if offsets is not None:
            resid = resid - offsets
        tw = batch.task_weight[:, None] * tau  # (T, K)
        mom = jnp.sum(tw, axis=0)[:, None, None, None] * cov_hat + jnp.einsum(
            "tk,tkon,tkom->konm", tw, resid, resid
        )
        both = m0[:, :, None] & m0[:, None, :]
        mom = jnp.where(both[None], mom, 0.0)  # (K, O, N, N)
        if n_task_clusters == 1:
            return jnp.sum(mom, axis=0)[None, None], jnp.sum(batch.task_weight)[None, None]
        return mom[None], jnp.sum(tw, axis=0)[None]

    def per_task(args):
        return _moment_one(*args, post.mean, post.cov, n_task_clusters)

    return map_tasks(per_task, (batch.y, mask_t, batch.mappings, tau, offsets), batch.task_chunk)


def _moment_one(y_i, m_i, map_i, tau_i, off_i, post_mean, post_cov, n_task_clusters: int):
    """Second moment ``(Kt, O, N, N)`` and its weights ``(Kt,)`` of ONE task
    (:func:`task_moments`); ``m_i`` is the ``(O, N)`` mask, ``y_i`` the ``(N, O)`` values."""
    mu = gather_vector(post_mean, map_i)  # (K, O, N)
    if off_i is not None:
        mu = mu + off_i
    cov_hat = gather_matrix(post_cov, map_i)  # (K, O, N, N)
    resid = jnp.where(m_i[None], y_i.T[None] - mu, 0.0)
    both = m_i[:, :, None] & m_i[:, None, :]
    mom = jnp.where(both[None], cov_hat + resid[..., :, None] * resid[..., None, :], 0.0)
    weighted = tau_i[:, None, None, None] * mom
    if n_task_clusters == 1:
        return jnp.sum(weighted, axis=0, keepdims=True), jnp.ones((1,), weighted.dtype)
    return weighted, tau_i


def task_objective(
    params: Params,
    batch: TaskBatch,
    moments: Float[Array, "Ts Kt O N N"],
    weights: Float[Array, "Ts Kt"],
    jitter: float,
) -> Float[Array, ""]:
    """``sum_i J^f_i``: expected NLL of the tasks given the mean-process posteriors.

    ``moments`` with ``Ts = 1`` (from :func:`task_moments` on the shared-input fast
    path) are evaluated with the one covariance of task 0's inputs; otherwise one
    factorisation per task, ``batch.task_chunk`` tasks at a time.
    """
    o = batch.mask.shape[-1]
    mask_t = jnp.swapaxes(batch.mask, 1, 2)  # (T, O, N)
    xs_params, get_params = per_task_params(params)

    def one(x_i, m_i, p_i, mom_i, w_i):
        kernel, log_noise = get_params(p_i)
        return _task_nll_one(kernel, log_noise, o, x_i, m_i, mom_i, w_i, jitter)

    if moments.shape[0] == 1 and batch.x.shape[0] > 1:
        return one(batch.x[0], mask_t[0], None, moments[0], weights[0])
    if batch.task_shards > 1:
        return _sharded_task_objective(params, batch, mask_t, moments, weights, jitter)
    per_task = map_tasks(
        lambda a: one(*a), (batch.x, mask_t, xs_params, moments, weights), batch.task_chunk
    )
    return jnp.sum(per_task)


def _split_task_hps(params: Params):
    """Task hyperparameters as :func:`.parallel.sum_with_gradient` takes them:
    ``(shared, per_task, static)``, one of the first two None (shared across tasks
    or one row per task), ``static`` the kernel's non-array part."""
    per_task_hp = params.log_noise.shape[0] > 1
    kernel = params.task_kernel if per_task_hp else index_module(params.task_kernel, 0)
    dynamic, static = eqx.partition(kernel, eqx.is_inexact_array)
    if per_task_hp:
        return None, (dynamic, params.log_noise), static
    return (dynamic, params.log_noise[0]), None, static


def _task_nll_one(kernel, log_noise, n_outputs: int, x_i, m_i, mom_i, w_i, jitter):
    """``J^f_i`` of ONE task from its second moments (kernel leaves and ``log_noise``
    ``(K*, O*)``, ``m_i`` the ``(O, N)`` mask)."""
    cov = task_covariance_one(kernel, log_noise, x_i)  # (Kt, Ot, N, N)
    kt, _, n, _ = cov.shape
    cov = factorable_cov(jnp.broadcast_to(cov, (kt, n_outputs, n, n)), m_i[None], jitter)
    n_real = jnp.sum(m_i, axis=-1).astype(cov.dtype)[None]  # (1, O)
    return jnp.sum(moment_nll(cov, mom_i, w_i[..., None], n_real))


def _sharded_task_objective(params, batch, mask_t, moments, weights, jitter):
    """:func:`task_objective` of a task axis split across devices: value and gradient
    chunk by chunk (:func:`.parallel.sum_with_gradient`), so that each device adds its
    own chunks and the devices' sums meet once per evaluation. Autodiff through the
    chunk loop added the devices' gradients in every step of its backward loop."""
    o = batch.mask.shape[-1]
    shared, per_task, static = _split_task_hps(params)

    def chunk_value(shared, per_task, jitter, xs):
        def one(x_i, m_i, mom_i, w_i, p_i):
            dyn, log_noise = shared if p_i is None else p_i
            kernel = eqx.combine(dyn, static)
            return _task_nll_one(kernel, log_noise, o, x_i, m_i, mom_i, w_i, jitter)

        return jnp.sum(jax.vmap(one)(*xs, per_task))

    xs = (batch.x, mask_t, moments, weights)
    jitter = jnp.asarray(jitter, moments.dtype)
    return sum_with_gradient(
        chunk_value, shared, per_task, jitter, xs, batch.task_chunk, batch.task_shards
    )


def streamed_task_objective(
    params: Params,
    batch: TaskBatch,
    tau: Float[Array, "T K"],
    post: Hyperposterior,
    jitter: float,
    offsets: Float[Array, "T K O N"] | None = None,
) -> Float[Array, ""]:
    """:func:`task_objective` of the :func:`task_moments` of ``(tau, post)``, in memory
    bounded by ``batch.task_chunk`` tasks.

    Each chunk forms its tasks' second moments (a gather from the ``G x G``
    hyperposterior covariances: cheap next to the factorisations) instead of reading
    ``T N^2`` stored ones, and its gradient in the task hyperparameters is taken with
    its value (:func:`.parallel.sum_with_gradient`), so the L-BFGS runs of the VM-step
    keep no per-task residuals of all chunks. Not for the shared-input fast path, whose
    moments sum over tasks into one block.
    """
    o = batch.mask.shape[-1]
    kt = params.log_noise.shape[1]
    shared, per_task, static = _split_task_hps(params)

    def chunk_value(shared, per_task, consts, xs):
        post_mean, post_cov, jitter = consts

        def one(x_i, y_i, m_i, map_i, tau_i, off_i, p_i):
            mom, w = _moment_one(y_i, m_i, map_i, tau_i, off_i, post_mean, post_cov, kt)
            dyn, log_noise = shared if p_i is None else p_i
            return _task_nll_one(eqx.combine(dyn, static), log_noise, o, x_i, m_i, mom, w, jitter)

        return jnp.sum(jax.vmap(one)(*xs, per_task))

    mask_t = jnp.swapaxes(batch.mask, 1, 2)  # (T, O, N)
    xs = (batch.x, batch.y, mask_t, batch.mappings, tau, offsets)
    consts = (post.mean, post.cov, jnp.asarray(jitter, post.mean.dtype))
    return sum_with_gradient(
        chunk_value, shared, per_task, consts, xs, batch.task_chunk, batch.task_shards
    )


def total_objective(
    params: Params,
    post: Hyperposterior,
    batch: Batch,
    moments: Float[Array, "T Kt O N N"],
    mweights: Float[Array, "T Kt"],
    jitter: float,
    factor: Float[Array, "Kc Oc G G"] | None = None,
) -> Float[Array, ""]:
    """``sum_k J^mu_k + sum_i J^f_i``, the VM-step objective at ``params`` (the
    negative expected complete-data log-likelihood that :func:`m_step` lowers).

    For a batch in parts (:mod:`.parts`) ``moments`` and ``mweights`` are tuples with one
    entry per part (:func:`part_moments`), and the task objectives of the parts add up.
    ``factor``: :func:`posterior_factor` of ``post`` (computed here when None)."""
    if not isinstance(batch, tuple):
        batch, moments, mweights = (batch,), (moments,), (mweights,)
    g0 = batch[0]
    value = cluster_objective(params, post, g0.grid, g0.grid_mask, jitter, factor)
    return value + _parts_task_objective(params, batch, moments, mweights, jitter)


def _parts_task_objective(
    params: Params, parts: tuple, moments: tuple, mweights: tuple, jitter: float
) -> Float[Array, ""]:
    """:func:`task_objective` summed over the parts of a batch (tuples, one entry per
    part, as :func:`part_moments` returns them)."""
    terms = zip(part_params(params, parts), parts, moments, mweights, strict=True)
    return sum(task_objective(p, b, mom, mw, jitter) for p, b, mom, mw in terms)


def part_moments(
    params: Params, tau: Float[Array, "T K"], post: Hyperposterior, batch: Batch
) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
    """:func:`task_moments` of every part of a batch (one-tuples for a lone
    ``TaskBatch``), each with its own tasks' ``tau``, its shared-input fast path and, on
    the approximate grid, its prior-mean offsets at ``params``."""
    kt = params.log_noise.shape[1]
    moments, mweights = [], []
    parts = zip(part_params(params, batch), as_parts(batch), split_tasks(tau, batch), strict=True)
    for p, b, tau_p in parts:
        mom, mw = task_moments(b, tau_p, post, kt, shared_fast_path(p, b), prior_offsets(p, b))
        moments.append(mom)
        mweights.append(mw)
    return tuple(moments), tuple(mweights)


def prior_mean_step(
    params: Params, post: Hyperposterior, grid: Float[Array, "G I"], grid_mask: Array, jitter: float
) -> Params:
    """The prior-mean parameters after one Newton step on the cluster objective, the
    mean-process kernels fixed.

    The prior means enter the VM-step objective only through
    ``q = 0.5 sum_k (mu_hat_k - m_k)^T C_k^{-1} (mu_hat_k - m_k)``, quadratic in them
    when the mean function is linear in its parameters (kernax's constant and linear
    means): one Newton step is then their exact optimum. It costs one factorisation of
    each prior covariance and solves against vectors, a fraction of one L-BFGS
    evaluation, and it takes the poorly scaled direction out of the L-BFGS run that
    follows (the swimmers' second VM-step spent 24 evaluations moving the three prior
    constants while the kernels barely changed; 5 with this step). The step is kept only
    when it lowers ``q`` (a nonlinear mean function may make it overshoot).
    """
    _, _, chol = prior_on_grid(params, grid, grid_mask, jitter)
    kc, oc = chol.shape[:2]
    dynamic, static = eqx.partition(params.prior_mean, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(dynamic)
    if flat.size == 0:
        return params

    # Padded clusters (Params.cluster_mask) need no mask here: no task is theirs, so
    # their posterior mean is their prior mean and their residual and step are 0.
    def q(v):
        mean = prior_means_on_grid(eqx.combine(unravel(v), static), grid, grid_mask)
        return 0.5 * jnp.sum(solve_lower(chol, _residual_columns(post.mean, mean, kc, oc)) ** 2)

    grad = jax.grad(q)(flat)
    hess = jax.hessian(q)(flat)
    new = flat - jnp.linalg.solve(hess, grad)
    keep = jnp.all(jnp.isfinite(new)) & (q(new) <= q(flat))
    prior = eqx.combine(unravel(jnp.where(keep, new, flat)), static)
    return eqx.tree_at(lambda p: p.prior_mean, params, prior)


def _split_params(dynamic: Params) -> tuple[tuple, tuple]:
    """The mean-process leaves ``(mean_kernel, prior_mean)`` and the task leaves
    ``(task_kernel, log_noise)`` of a partitioned :class:`Params`."""
    return (dynamic.mean_kernel, dynamic.prior_mean), (dynamic.task_kernel, dynamic.log_noise)


def _join_params(cluster: tuple, task: tuple) -> Params:
    """The inverse of :func:`_split_params`."""
    (mean_kernel, prior_mean), (task_kernel, log_noise) = cluster, task
    return Params(
        mean_kernel=mean_kernel, prior_mean=prior_mean, task_kernel=task_kernel, log_noise=log_noise
    )


def _minimise_scaled(fn, dynamic, scale, max_steps: int, tol: float):
    """:func:`minimise` of ``fn(dynamic) / scale``; returns the new leaves, ``fn`` at
    them and the number of steps. A group without trainable leaves is left as is."""
    if not jax.tree.leaves(dynamic):
        return dynamic, fn(dynamic), jnp.zeros((), jnp.int32)
    new, value, steps = minimise(lambda d, _: fn(d) / scale, dynamic, None, max_steps, tol)
    return new, value * scale, steps


#: Most values of the per-task second moments a VM-step keeps whole (2^25 float64 =
#: 256 MiB): below it they are formed once per VM-step and read by every L-BFGS
#: evaluation; above it :func:`streamed_task_objective` forms them chunk by chunk in
#: every evaluation, so that memory does not grow with ``T N^2``.
STORED_MOMENTS_MAX = 1 << 25


def _moments_fit_in_memory(batch: TaskBatch, kt: int) -> bool:
    t, n, o = batch.mask.shape
    return t * kt * o * n * n <= STORED_MOMENTS_MAX


def m_step(
    params: Params,
    tau: Float[Array, "T K"],
    post: Hyperposterior,
    batch: Batch,
    jitter: float,
    max_steps: int,
    tol: float,
) -> tuple[Params, Float[Array, " K"], Int[Array, ""], Float[Array, ""]]:
    """One VM-step: new mixture weights and hyperparameters.

    With ``q`` fixed the objective separates into the mean-process part (mean kernel,
    prior mean; :func:`cluster_objective`) and the task part (task kernel, noise;
    :func:`task_objective`), so each gets its own L-BFGS run, on its part divided by
    its own number of values (``K * O * G`` mean-process values, or observations).
    One run on the sum divided by all values moved the mean-process hyperparameters
    too little: there their part weighed ``K * O * G / n_obs`` of its own scale (4% on
    the swimmers), the runs stopped on the task part's tolerance with the mean
    processes short of their optimum, and the EM stopped early (swimmers: ELBO
    -10170.9 at the stop against -10152.4 with two runs). Every step of the one run
    also paid for a task evaluation that the task part alone needs about half as often
    (1000 synthetic tasks: 13 task evaluations in the first VM-step instead of 24).

    Returns the new parameters, the weights, the larger of the two runs' step counts
    (the EM's stationarity test asks that both met their tolerance within
    ``max_steps``) and the objective :func:`total_objective` at the new parameters.
    """
    weights = mixture_weights(tau, task_weights(batch))
    # Approximate grid: the prior-mean offsets are held at their current value here
    # (a generalised EM step); the prior mean is fitted through the cluster objective.
    parts = as_parts(batch)
    kt = params.log_noise.shape[1]
    # Per part, what its task objective needs besides the parameters: the summed
    # moments on the shared-input fast path, else tau and the offsets (the moments of
    # all tasks would hold T N^2 values; streamed_task_objective forms them per chunk).
    terms, stored = [], []
    for p, b, tau_p in zip(part_params(params, batch), parts, split_tasks(tau, batch), strict=True):
        offsets = prior_offsets(p, b)
        shared = shared_fast_path(p, b)
        stored.append(shared or _moments_fit_in_memory(b, kt))
        if stored[-1]:
            terms.append(task_moments(b, tau_p, post, kt, shared, offsets))
        else:
            terms.append((tau_p, offsets))
    g0 = parts[0]
    params = prior_mean_step(params, post, g0.grid, g0.grid_mask, jitter)
    dynamic, static = eqx.partition(params, eqx.is_inexact_array)
    cluster_dyn, task_dyn = _split_params(dynamic)

    def rebuild(cluster, task):
        return eqx.combine(_join_params(cluster, task), static)

    # Each objective sums over its values, so its gradient grows with them. L-BFGS
    # starts from an identity Hessian: unscaled, its first step would be thousands of
    # units long and the line search would spend most of the budget halving it.
    # Per value, the first step is of the right size.
    k, o, _ = post.mean.shape
    if params.cluster_mask is not None:
        k = jnp.sum(params.cluster_mask)  # real clusters
    n_mean = jnp.maximum(k * o * jnp.sum(g0.grid_mask), 1).astype(tau.dtype)
    n_obs = jnp.maximum(sum(jnp.sum(b.mask) for b in parts), 1).astype(tau.dtype)
    factor = posterior_factor(post, *batch_shape(params.mean_kernel, 2), params.cluster_mask)

    def cluster_fn(cluster):
        p = rebuild(cluster, task_dyn)
        return cluster_objective(p, post, g0.grid, g0.grid_mask, jitter, factor)

    def task_fn(task):
        value = 0.0
        new_params = part_params(rebuild(cluster_dyn, task), parts)
        for p, b, term, keep in zip(new_params, parts, terms, stored, strict=True):
            if keep:
                value = value + task_objective(p, b, *term, jitter)
            else:
                value = value + streamed_task_objective(p, b, term[0], post, jitter, term[1])
        return value

    cluster, cluster_value, cluster_steps = _minimise_scaled(
        cluster_fn, cluster_dyn, n_mean, max_steps, tol
    )
    task, task_value, task_steps = _minimise_scaled(task_fn, task_dyn, n_obs, max_steps, tol)
    steps = jnp.maximum(cluster_steps, task_steps)
    return rebuild(cluster, task), weights, steps, cluster_value + task_value
