"""The variational EM loop: VE-step, VM-step, ELBO and convergence.

One EM iteration is a single jit-compiled function of fixed-shape arrays, so a fit
compiles once per data shape; the outer loop runs in Python only to test convergence,
report progress and recover from numerical failures.

Functions taking a ``batch: Batch`` also take a batch in parts (:mod:`.parts`): tasks
grouped into parts of their own padded length, stacked part after part on every task
axis (``tau``, task NLLs, task-specific hyperparameters).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .accelerate import squarem_point
from .approx import prior_offsets
from .compile import jit, to_device
from .hyperposterior import (
    Hyperposterior,
    cluster_index,
    posterior_from_sums,
    precision_sums,
    prior_kl,
)
from .likelihood import (
    LOG_2PI,
    cluster_nlls,
    masked_factor,
    task_nlls,
    task_nlls_from_precisions,
)
from .linalg import is_projection, logdet_from_chol, masked_inverse
from .memberships import entropy_term, responsibilities
from .mstep import m_step, mixture_weights
from .parallel import map_chunks, map_tasks, sum_over_chunks, to_host
from .params import (
    Params,
    TaskBatch,
    per_task_params,
    prior_on_grid,
    real_clusters_only,
    shared_fast_path,
    task_covariance_one,
    task_covariances,
)
from .parts import (
    Batch,
    as_parts,
    first,
    part_params,
    part_sizes,
    split_tasks,
    subsample_tasks,
    task_weights,
)

__all__ = [
    "EMResult",
    "task_precisions",
    "precision_sums_of",
    "e_step",
    "elbo",
    "elbo_from_nll",
    "elbo_from_objective",
    "em_iteration",
    "run_em",
    "subsample_start",
    "SUBSAMPLE_TASKS",
    "SUBSAMPLE_MIN_TASKS",
    "NumericalFailure",
]


class NumericalFailure(RuntimeError):
    """Raised when an EM iteration keeps producing non-finite values."""


# Smallest relative jitter tried after a numerical failure (when the user's is 0).
_MIN_RETRY_JITTER = 1e-10
# SQUAREM step-length bound: starting value, and the factor by which it grows after a
# kept step that reached it (and shrinks after a dropped one).
_SQUAREM_MAX_STEP = 4.0
_SQUAREM_GROWTH = 4.0


def _precision_fn(params: Params, batch: TaskBatch, jitter: float):
    """``(xs, one)``: the per-task hyperparameters to map over and ``one(x_i, m_i, p_i)``,
    the masked precision ``(Kt, O, N, N)`` and log-determinants ``(Kt, O)`` of one task."""
    o = batch.mask.shape[-1]
    xs_params, get_params = per_task_params(params)

    def one(x_i, m_i, p_i):
        kernel, log_noise = get_params(p_i)
        cov = task_covariance_one(kernel, log_noise, x_i)  # (Kt, Ot, N, N)
        kt, _, n, _ = cov.shape
        cov = jnp.broadcast_to(cov, (kt, o, n, n))
        m = jnp.broadcast_to(m_i, (kt, o, n))
        chol = masked_factor(cov, m, jitter)
        return masked_inverse(chol, m), logdet_from_chol(chol)

    return xs_params, one


def task_precisions(
    params: Params, batch: TaskBatch, jitter: float
) -> tuple[Float[Array, "Ts Kt O N N"], Float[Array, "T Kt O N"], Float[Array, "Ts Kt O"]]:
    """Masked task precisions ``Psi_i^{-1}``, ``Psi_i^{-1} y_i`` (zero on padding) and
    the log-determinants ``log|Psi_i|`` of the real blocks.

    On the shared-input fast path (:func:`.params.shared_fast_path`) the precision is
    computed once and returned with a leading axis of size ``Ts = 1``; otherwise
    ``Ts = T`` and the factorisations run ``batch.task_chunk`` tasks at a time (the
    result holds ``T N^2`` values per cluster: the VE-step itself never forms it, see
    :func:`precision_sums_of`).
    """
    mask_t = jnp.swapaxes(batch.mask, 1, 2)  # (T, O, N)
    y_t = jnp.swapaxes(batch.y, 1, 2)  # (T, O, N)
    xs_params, one = _precision_fn(params, batch, jitter)
    if shared_fast_path(params, batch):
        prec, logdet = one(batch.x[0], mask_t[0], None)
        # Padded tasks hold y = 0, so their weighted outputs vanish as on the general path.
        return prec[None], jnp.einsum("konm,tom->tkon", prec, y_t), logdet[None]
    prec, logdet = map_tasks(lambda a: one(*a), (batch.x, mask_t, xs_params), batch.task_chunk)
    return prec, jnp.einsum("tkonm,tom->tkon", prec, y_t), logdet


def precision_sums_of(
    params: Params, tau: Float[Array, "T K"], batch: TaskBatch, n_grid: int, jitter: float
) -> tuple[Float[Array, "K O G G"], Float[Array, "K O G"]]:
    """:func:`.hyperposterior.precision_sums` of all tasks of ``batch``, ``batch.task_chunk``
    tasks at a time: each chunk's precisions are formed, scattered onto the grid and
    dropped, so memory holds one chunk's ``N x N`` blocks whatever ``T`` is."""
    mask_t = jnp.swapaxes(batch.mask, 1, 2)  # (T, O, N)
    y_t = jnp.swapaxes(batch.y, 1, 2)  # (T, O, N)
    xs_params, one = _precision_fn(params, batch, jitter)
    offsets = prior_offsets(params, batch)
    kidx = cluster_index(tau.shape[1], params.log_noise.shape[1])

    def chunk_sums(args):
        x, m, p, y, tau_c, maps, off = args
        prec, _ = jax.vmap(one)(x, m, p)
        wy = jnp.einsum("tkonm,tom->tkon", prec, y)
        off_wy = None if off is None else (prec[:, kidx] @ off[..., None])[..., 0]
        return precision_sums(tau_c, prec, wy, maps, n_grid, offset_wy=off_wy)

    xs = (batch.x, mask_t, xs_params, y_t, tau, batch.mappings, offsets)
    return sum_over_chunks(chunk_sums, xs, batch.task_chunk, batch.task_shards)


def cluster_task_nll(
    params: Params,
    post: Hyperposterior,
    batch: Batch,
    jitter: float,
    precisions: tuple[Array, Array] | None = None,
) -> Float[Array, "T K"]:
    """``-l_ik``: full task NLL per (task, cluster), summed over outputs.

    ``precisions``: the ``(Psi_i^{-1}, log|Psi_i|)`` of :func:`task_precisions` at the
    same parameters and jitter, when the caller has them (no second factorisation);
    one pair per part for a batch in parts (:mod:`.parts`), whose NLLs are stacked.
    """
    if isinstance(batch, tuple):
        pairs = precisions if precisions is not None else (None,) * len(batch)
        nlls = [
            cluster_task_nll(p, post, b, jitter, pr)
            for p, b, pr in zip(part_params(params, batch), batch, pairs, strict=True)
        ]
        return nlls[0] if len(nlls) == 1 else jnp.concatenate(nlls)
    shared = shared_fast_path(params, batch)
    if precisions is not None:
        nll = task_nlls_from_precisions(
            batch.y,
            batch.mask,
            batch.mappings,
            post.mean,
            post.cov,
            *precisions,
            chunk=batch.task_chunk,
            shared_weight=batch.task_weight if shared else None,
            offsets=prior_offsets(params, batch),
        )
        return jnp.sum(nll, axis=-1)
    offsets = prior_offsets(params, batch)
    if shared:
        covs = task_covariances(params, batch.x[:1])
        nll = task_nlls(
            batch.y,
            batch.mask,
            batch.mappings,
            post.mean,
            post.cov,
            covs,
            jitter,
            shared_weight=batch.task_weight,
            offsets=offsets,
        )
        return jnp.sum(nll, axis=-1)
    xs_params, get_params = per_task_params(params)

    def chunk_nll(args):
        # The chunk's task covariances only: all T of them would hold T N^2 values.
        x, y, mask, maps, p, off = args
        covs = jax.vmap(lambda x_i, p_i: task_covariance_one(*get_params(p_i), x_i))(x, p)
        return task_nlls(y, mask, maps, post.mean, post.cov, covs, jitter, offsets=off)

    xs = (batch.x, batch.y, batch.mask, batch.mappings, xs_params, offsets)
    return jnp.sum(map_chunks(chunk_nll, xs, batch.task_chunk), axis=-1)


def e_step(
    params: Params,
    weights: Float[Array, " K"],
    tau: Float[Array, "T K"],
    batch: Batch,
    jitter: float,
    update_tau: bool | Array = True,
) -> tuple[Hyperposterior, Float[Array, "T K"], Float[Array, "T K"] | None]:
    """VE-step: hyperposteriors with the current ``tau``, then new responsibilities.

    Returns the hyperposterior, the responsibilities and the ``(T, K)`` task NLLs
    ``-l_ik`` under the returned hyperposterior (None when ``update_tau`` is the
    constant False). ``update_tau`` may be a traced boolean, so skipping the first
    update does not cost a second compilation.
    """
    parts, params_p = as_parts(batch), part_params(params, batch)
    g0 = parts[0]
    g = g0.grid.shape[0]
    _, prior_mean, prior_chol = prior_on_grid(params, g0.grid, g0.grid_mask, jitter)
    w, b, pairs = 0.0, 0.0, []
    for p, part, tau_p in zip(params_p, parts, split_tasks(tau, batch), strict=True):
        if shared_fast_path(p, part):
            # One precision serves every task: keep it for the NLLs below.
            prec, wy, logdet = task_precisions(p, part, jitter)
            offsets = prior_offsets(p, part)
            off_wy = None
            if offsets is not None:
                kidx = cluster_index(tau.shape[1], prec.shape[1])
                off_wy = (prec[:, kidx] @ offsets[..., None])[..., 0]  # Psi_i^{-1} d_ik
            sums = precision_sums(tau_p, prec, wy, part.mappings, g, part.task_weight, off_wy)
            pairs.append((prec, logdet))
        else:
            # Per-task precisions exist a chunk at a time only; the NLLs factorise
            # again (one more Cholesky per task and E-step, instead of T N^2 memory).
            sums = precision_sums_of(p, tau_p, part, g, jitter)
            pairs.append(None)
        w, b = w + sums[0], b + sums[1]
    post = posterior_from_sums(w, b, prior_chol, prior_mean)
    if update_tau is False:
        return post, tau, None
    nll = cluster_task_nll(params, post, parts, jitter, precisions=tuple(pairs))
    new_tau = responsibilities(weights, nll, params.cluster_mask)
    return post, jnp.where(update_tau, new_tau, tau), nll


def elbo(
    params: Params,
    weights: Float[Array, " K"],
    tau: Float[Array, "T K"],
    post: Hyperposterior,
    batch: Batch,
    jitter: float,
) -> Float[Array, ""]:
    """Evidence lower bound (ALGORITHM.md §2.1), with the full KL constant, at any
    ``params`` (``post`` need not come from them)."""
    nll = cluster_task_nll(params, post, batch, jitter)  # (T, K)
    g0 = first(batch)
    prior_cov, prior_mean, _ = prior_on_grid(params, g0.grid, g0.grid_mask, jitter)
    g = g0.grid.shape[0]
    # The prior covariances already carry their jitter: do not add it twice.
    c_nll = cluster_nlls(post.mean, post.cov, prior_mean, prior_cov, 0.0, True)  # (K, O)
    kl = c_nll - 0.5 * g * LOG_2PI - 0.5 * g - 0.5 * post.logdet
    kl = real_clusters_only(kl, params.cluster_mask)
    return _data_term(nll, weights, tau, batch) - jnp.sum(kl)


def elbo_from_nll(
    nll: Float[Array, "T K"],
    weights: Float[Array, " K"],
    tau: Float[Array, "T K"],
    post: Hyperposterior,
    batch: Batch,
    params: Params,
) -> Float[Array, ""]:
    """:func:`elbo` given the task NLLs ``-l_ik`` under ``post``, when ``post`` was
    computed at the same hyperparameters (the VE-step computes the NLLs for the
    responsibilities, and the mean processes' KL comes from ``post``'s own factors,
    :func:`.hyperposterior.prior_kl`: no prior is factorised again). ``params`` only
    says which clusters are padded (:attr:`.params.Params.cluster_mask`)."""
    kl = real_clusters_only(prior_kl(post), params.cluster_mask)
    return _data_term(nll, weights, tau, batch) - jnp.sum(kl)


def _data_term(nll, weights, tau, batch):
    w = task_weights(batch)[:, None]
    return -jnp.sum(w * tau * nll) + entropy_term(w * tau, weights)


def elbo_from_objective(
    objective: Float[Array, ""],
    weights: Float[Array, " K"],
    tau: Float[Array, "T K"],
    post: Hyperposterior,
    batch: Batch,
    params: Params,
) -> Float[Array, ""]:
    """The ELBO from the VM-step objective at the same parameters and ``q``.

    :func:`.mstep.total_objective` is ``-E_q[log p(y, mu | Z, theta)]``, so the ELBO
    only adds ``E_q[log p(Z)]``, the entropy of ``q(Z)`` and the Gaussian entropy of
    ``q(mu)``. Equal to :func:`elbo` (tested), but free after an M-step: the optimiser
    already evaluated the objective, and one less copy of the NLLs gets compiled.
    ``params`` only says which clusters are padded (:attr:`.params.Params.cluster_mask`).
    """
    w = task_weights(batch)[:, None]
    g = first(batch).grid.shape[0]
    n_mu = post.logdet.size  # mean processes
    if params.cluster_mask is not None:
        n_mu = jnp.sum(params.cluster_mask) * post.logdet.shape[1]
    logdet = real_clusters_only(post.logdet, params.cluster_mask)
    entropy_mu = 0.5 * g * (LOG_2PI + 1.0) * n_mu + 0.5 * jnp.sum(logdet)
    return -objective + entropy_term(w * tau, weights) + entropy_mu


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves))


@jit
def em_iteration(
    params: Params,
    weights: Float[Array, " K"],
    tau: Float[Array, "T K"],
    batch: Batch,
    jitter: Float[Array, ""],
    update_tau: Array,
    max_steps: int,
    tol: float,
    update_params: Array | bool = True,
):
    """One VE-step + VM-step + ELBO.

    Returns ``(params, weights, tau, post, elbo, steps, finite)``; ``finite`` says
    whether the ELBO, the new hyperparameters, ``tau`` and the hyperposterior means
    are all finite.

    ``update_params`` (a traced boolean) skips the VM-step: the hyperparameters and
    mixture weights are returned unchanged and the ELBO is evaluated at them, from
    the VE-step's task NLLs (exact when ``update_tau`` is False, as in the final
    E-steps of :func:`run_em`; with ``update_tau`` the NLLs are those under the
    hyperposterior of the previous ``tau``). The final E-steps run this way, so a fit
    compiles one program instead of two (compilation dominates small fits).
    """
    post, tau, nll = e_step(params, weights, tau, batch, jitter, update_tau)
    dynamic, static = eqx.partition(params, eqx.is_inexact_array)

    def vm_step(dyn):
        new, w, steps, objective = m_step(
            eqx.combine(dyn, static), tau, post, batch, jitter, max_steps, tol
        )
        if not is_projection(first(batch).mappings):
            value = elbo_from_objective(objective, w, tau, post, batch, new)
        else:
            # The approximate grid's M-step holds the prior offsets fixed, so its
            # objective is not the ELBO at the new parameters: evaluate it directly.
            value = elbo(new, w, tau, post, batch, jitter)
        return eqx.filter(new, eqx.is_inexact_array), w, steps.astype(jnp.int32), value

    def hold(dyn):
        value = elbo_from_nll(nll, weights, tau, post, batch, params)
        return dyn, weights, jnp.zeros((), jnp.int32), value

    dynamic, weights, steps, value = jax.lax.cond(
        jnp.asarray(update_params), vm_step, hold, dynamic
    )
    new_params = eqx.combine(dynamic, static)
    finite = _all_finite((value, dynamic, tau, post.mean))
    return new_params, weights, tau, post, value, steps, finite


#: Tasks of the start iteration on a subsample (:func:`subsample_start`) ...
SUBSAMPLE_TASKS = 2048
#: ... which runs on fits of at least this many task slots: below, its own compiled
#: program would cost more than the L-BFGS steps it saves.
SUBSAMPLE_MIN_TASKS = 16 * SUBSAMPLE_TASKS


def subsample_start(
    params: Params,
    weights: Float[Array, " K"],
    tau: Float[Array, "T K"],
    batch: Batch,
    jitter: float,
    max_steps: int,
    tol: float,
    refresh: Callable[[Params, TaskBatch, Array], TaskBatch] | None = None,
) -> Params:
    """Hyperparameters to start a large fit from: one EM iteration on a subsample.

    The first VM-step moves the hyperparameters from their defaults to the optimum
    given the initial responsibilities, and takes most of a large fit's time: 14-25
    L-BFGS steps over all tasks (a million tasks: 65% of a five-iteration fit), where
    later VM-steps take about 2. The same iteration on :data:`SUBSAMPLE_TASKS` tasks
    spread over the batch (:func:`.parts.subsample_tasks`) costs a small fraction of
    one full evaluation and lands close to that optimum: the shared task
    hyperparameters are estimated from some 10^4-10^5 observations, the mean processes
    from hundreds of tasks per cluster. The full first VM-step then starts there, and
    its own optimum is the same as without the start (only the path to it changes).

    With the tasks split across devices or processes, every device gathers the
    subsample and runs the iteration whole (it is small); the new hyperparameters are
    placed as the old ones were. ``refresh`` (the approximate grid, see
    :func:`run_em`) rebuilds the batch at ``params`` before the subsample is taken.

    Returns ``params`` unchanged when the start does not apply: fewer than
    :data:`SUBSAMPLE_MIN_TASKS` task slots, task-specific hyperparameters (their
    leaves have a task axis), or a non-finite result on the subsample (the full
    iteration then handles the failure as usual).
    """
    if sum(part_sizes(batch)) < SUBSAMPLE_MIN_TASKS or params.log_noise.shape[0] != 1:
        return params
    if refresh is not None:
        batch = refresh(params, batch, to_device(jitter))
    sub_batch, sub_tau = subsample_tasks(batch, tau, SUBSAMPLE_TASKS)
    no, yes = to_device(False), to_device(True)
    args = (to_device(jitter), no, max_steps, tol, yes)
    new_params, *_, finite = em_iteration(params, weights, sub_tau, sub_batch, *args)
    if not bool(finite):
        return params
    return jax.tree.map(
        lambda new, old: jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else new,
        new_params,
        params,
    )


@dataclasses.dataclass
class EMResult:
    """Outcome of :func:`run_em`."""

    params: Params
    weights: np.ndarray
    tau: np.ndarray
    post: Hyperposterior
    elbo: float
    elbo_history: np.ndarray
    n_iter: int
    converged: bool
    jitter: float


def run_em(
    params: Params,
    tau: Float[Array, "T K"],
    batch: Batch,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    jitter: float = 1e-6,
    max_steps: int = 50,
    optimiser_tol: float = 1e-3,
    skip_first_tau_update: bool = True,
    callback: Callable[[int, float], None] | None = None,
    max_jitter: float = 1e-1,
    refresh: Callable[[Params, TaskBatch, Array], TaskBatch] | None = None,
    accelerate: bool = True,
    subsample: bool = True,
) -> EMResult:
    """Run variational EM until the relative ELBO change is below ``tol``.

    Each VM-step is a partial one (at most ``max_steps`` L-BFGS steps), so a small ELBO
    change can also mean slow progress: the EM only stops when the change is below
    ``tol`` *and* the last VM-step's L-BFGS met its own tolerance within
    ``max_steps``, i.e. the hyperparameters have reached a stationary point.

    ``refresh(params, batch, jitter)``, when given, rebuilds the batch from the current
    hyperparameters before every iteration and before the final E-step (the approximate
    grid recomputes its projection this way, outside the M-step gradient).

    Non-finite values (a failed Cholesky gives NaN in JAX) trigger a retry of the same
    iteration with ten times the jitter and a :class:`RuntimeWarning`, up to
    ``max_jitter``; beyond that :class:`NumericalFailure` is raised. The loop never
    accepts a non-finite state.

    ``accelerate``: after every two plain iterations, try a SQUAREM extrapolation of
    the last three states (:mod:`.accelerate`) and keep the EM iteration applied to it
    only if its ELBO is at least the last one (a non-finite or lower result is
    dropped, uncounted, and the next extrapolation steps less far). ``n_iter`` counts
    the kept iterations, so at most ``max_iter`` of them, plus at most one dropped
    call per two kept ones.

    ``subsample``: on large fits, start from one EM iteration on a
    subsample of the tasks (:func:`subsample_start`). Off for warm starts, which
    already start near an optimum.
    """
    # On the host: eager jnp calls here would each compile a small program per shape.
    host_weight = np.concatenate([to_host(b.task_weight) for b in as_parts(batch)])
    weights = to_device(mixture_weights(to_host(tau), host_weight))
    if subsample:
        params = subsample_start(
            params, weights, tau, batch, jitter, max_steps, optimiser_tol, refresh
        )
    history: list[float] = []
    converged = False
    n_iter = 0
    yes, no = to_device(True), to_device(False)
    # States reached by plain iterations since the last extrapolation, oldest first.
    trail: list[tuple[Params, Array]] = []
    max_step = _SQUAREM_MAX_STEP
    weight_dev = to_device(host_weight) if accelerate else None
    while n_iter < max_iter:
        start, step = (params, weights, tau), None
        if accelerate and len(trail) == 3:
            *proposal, step_dev = squarem_point(tuple(trail), weight_dev, to_device(max_step))
            step = float(step_dev)
            if step < -1.0:
                start = tuple(proposal)
            else:  # the proposal is the last state: iterate plainly
                trail, step = trail[-1:], None
        update = to_device(not (skip_first_tau_update and n_iter == 0))
        if refresh is not None:
            batch = refresh(start[0], batch, to_device(jitter))
        out = em_iteration(*start, batch, to_device(jitter), update, max_steps, optimiser_tol, yes)
        new_params, new_weights, new_tau, post_i, value, steps, finite = out
        ok = np.isfinite(float(value)) and bool(finite)
        if step is not None:
            if not ok or float(value) < history[-1]:
                # Overshot: drop it (uncounted) and go on from the last plain state.
                trail, max_step = trail[-1:], max(1.0, -step / _SQUAREM_GROWTH)
                continue
            if step <= -max_step:
                max_step *= _SQUAREM_GROWTH
            trail = []
        if not ok:
            # From jitter=0, ten times nothing would retry forever: start at a floor.
            next_jitter = max(jitter * 10, _MIN_RETRY_JITTER)
            if next_jitter > max_jitter:
                raise NumericalFailure(
                    f"EM produced non-finite values at iteration {n_iter + 1} even with "
                    f"jitter={jitter:g}; check the data for extreme scales."
                )
            jitter = next_jitter
            trail = []  # the map changed with the jitter
            warnings.warn(
                f"Numerical failure at EM iteration {n_iter + 1}; retrying with jitter={jitter:g}.",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        params, weights, tau = new_params, new_weights, new_tau
        n_iter += 1
        # The starting state is never in the trail: the first iteration keeps its
        # responsibilities, a different map from the later ones.
        trail = [*trail[-2:], (params, tau)]
        history.append(float(value))
        if callback is not None:
            callback(n_iter, float(value))
        if len(history) > 1:
            change = abs(history[-1] - history[-2]) / max(abs(history[-1]), 1.0)
            if change < tol and int(steps) < max_steps:
                converged = True
                break
    if refresh is not None:
        batch = refresh(params, batch, to_device(jitter))
    # Final E-steps at the final hyperparameters: responsibilities from the current
    # q(mu), then q(mu) from those responsibilities, and the ELBO of the pair.
    args = (batch, to_device(jitter))
    _, _, tau, *_ = em_iteration(params, weights, tau, *args, yes, max_steps, optimiser_tol, no)
    _, _, _, post, value, *_ = em_iteration(
        params, weights, tau, *args, no, max_steps, optimiser_tol, no
    )
    return EMResult(
        params=params,
        weights=np.asarray(weights),
        tau=to_host(tau),
        post=post,
        elbo=float(value),
        elbo_history=np.asarray(history),
        n_iter=n_iter,
        converged=converged,
        jitter=jitter,
    )
