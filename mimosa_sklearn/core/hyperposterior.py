"""E-step for the K mean processes: the Gaussian hyperposteriors ``q(mu_k)`` on the grid.

Whitened form (ALGORITHM.md §2.2a): with ``C_k = L L^T`` and the data precision
``W_k = sum_i tau_ik P_i^T Psi_i^{-1} P_i``, ``M_k = I + L^T W_k L = R R^T`` has all
eigenvalues >= 1 (its factorisation never fails), ``C_hat = V^T V`` with
``V = R^{-1} L^T`` is symmetric PSD by construction, and ``C_k^{-1}`` is never formed.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .linalg import (
    cholesky,
    gram,
    is_projection,
    logdet_from_chol,
    lower_congruence,
    lower_inverse,
    scatter_matrix,
    scatter_vector,
    solve_lower,
)
from .parallel import chunk_under_budget, sum_over_chunks

__all__ = [
    "Hyperposterior",
    "precision_sums",
    "posterior_from_sums",
    "cluster_index",
    "prior_kl",
    "projected_precision",
]


class Hyperposterior(eqx.Module):
    """``q(mu_k) = N(mean_k, cov_k)`` on the grid, with the factors needed to extend it.

    Attributes
    ----------
    mean : (K, O, G) hyperposterior means.
    cov : (K, O, G, G) hyperposterior covariances.
    prior_mean : (K, O, G) prior means ``m_k`` on the grid.
    prior_chol : (K, O, G, G) lower factor ``L`` of the jittered prior covariance ``C_k``.
    whitened_chol : (K, O, G, G) lower factor ``R`` of ``M_k = I + L^T W_k L``.
    logdet : (K, O) ``log|C_hat_k|``.
    """

    mean: Float[Array, "K O G"]
    cov: Float[Array, "K O G G"]
    prior_mean: Float[Array, "K O G"]
    prior_chol: Float[Array, "K O G G"]
    whitened_chol: Float[Array, "K O G G"]
    logdet: Float[Array, "K O"]


def cluster_index(n_clusters: int, n_task_clusters: int) -> Array:
    """Which cluster-axis entry of the task covariances cluster ``k`` uses."""
    if n_task_clusters == n_clusters and n_task_clusters > 1:
        return jnp.arange(n_clusters)
    return jnp.zeros((n_clusters,), dtype=jnp.int32)


# Elements of one chunk's per-task (chunk, Kt, O, G, G) blocks in projected_precision:
# 2**20 float64 = 8 MiB, small enough to stay in cache-friendly sizes (measured on CPU
# with 3200 tasks and G = 104: 190 ms at 100 tasks per chunk, 300 ms at 800).
_PROJECTION_CHUNK_BUDGET = 1 << 20


def projected_precision(
    tau: Float[Array, "Ts K"],
    precisions: Float[Array, "Ts Kt O N N"],
    projection: Float[Array, "Ts N G"],
) -> Float[Array, "K O G G"]:
    """Data precisions of the approximate grid, ``W_ko = sum_i tau_ik A_i^T Psi_i^{-1} A_i``.

    Each task's ``(G, G)`` block ``A_i^T Psi_i^{-1} A_i`` is formed once, whatever the
    number of clusters, and the blocks are weighted and summed a chunk of tasks at a
    time. One einsum over all tasks per cluster (:func:`.linalg.scatter_matrix`) made
    XLA materialise a transposed ``(K G, T N)`` operand: 1.0 s for the swimmers (3200
    tasks of 32 points, ``G = 104``) against 0.19 s this way.
    """
    kt, o = precisions.shape[1:3]
    g = projection.shape[-1]
    chunk = chunk_under_budget(kt * o * g * g, _PROJECTION_CHUNK_BUDGET)

    def blocks(args):
        tau_c, prec_c, proj_c = args
        right = prec_c @ proj_c[:, None, None]  # (c, Kt, O, N, G)
        q = jnp.einsum("tng,tjonh->tjogh", proj_c, right)  # (c, Kt, O, G, G)
        if kt == 1:
            return jnp.einsum("tk,togh->kogh", tau_c, q[:, 0])
        return jnp.einsum("tk,tkogh->kogh", tau_c, q)

    return sum_over_chunks(blocks, (tau, precisions, projection), chunk)


def precision_sums(
    tau: Float[Array, "T K"],
    precisions: Float[Array, "Ts Kt O N N"],
    weighted_y: Float[Array, "T Kt O N"],
    mappings: Int[Array, "T N"],
    n_grid: int,
    task_weight: Float[Array, " T"] | None = None,
    offset_wy: Float[Array, "T K O N"] | None = None,
) -> tuple[Float[Array, "K O G G"], Float[Array, "K O G"]]:
    """The data terms of the hyperposteriors contributed by some tasks.

    ``W_ko = sum_i tau_ik P_i^T Psi_i^{-1} P_i`` and ``b_ko = sum_i tau_ik P_i^T
    Psi_i^{-1} (y_i - d_ik)``, both sums over tasks: the VE-step adds them up a chunk
    of tasks (and a part of a batch, :mod:`.parts`) at a time, so the task precisions
    of all tasks are never held at once; :func:`posterior_from_sums` turns the totals
    into the hyperposteriors.

    Parameters
    ----------
    tau : (T, K) responsibilities.
    precisions : (T, Kt, O, N, N) masked task precisions ``Psi_i^{-1}`` (zero on padding),
        or ``(1, Kt, O, N, N)`` on the shared-input fast path: the precision shared by
        every real task (inputs and mappings of task 0).
    weighted_y : (T, Kt, O, N) ``Psi_i^{-1} y_i`` (zero on padding).
    mappings : (T, N) grid index of every task point (``G`` on padding).
    n_grid : the grid size ``G``.
    task_weight : (T,) 1 on real tasks, 0 on padded ones; only used on the fast path,
        where padded tasks must not add the shared precision.
    offset_wy : (T, K, O, N) ``Psi_i^{-1} d_ik``, the prior-mean offsets of the
        approximate grid (:mod:`.approx`), subtracted from ``weighted_y``; None on the
        exact grid.
    """
    k = tau.shape[1]
    kt = weighted_y.shape[1]
    kidx = cluster_index(k, kt)
    if precisions.shape[0] == 1 and weighted_y.shape[0] > 1:
        # sum_i tau_ik P^T Psi^{-1} P = (sum_i w_i tau_ik) P^T Psi^{-1} P: one scatter.
        tw = jnp.ones(tau.shape[:1], tau.dtype) if task_weight is None else task_weight
        tau_prec = jnp.sum(tw[:, None] * tau, axis=0, keepdims=True)  # (1, K)
        map_prec = mappings[:1]
    else:
        tau_prec, map_prec = tau, mappings
    wy = weighted_y[:, kidx]
    if offset_wy is not None:
        wy = wy - offset_wy

    def scatter_b(tau_k, wy_k):
        return scatter_vector(tau_k[:, None] * wy_k, mappings, n_grid)

    b = jax.vmap(jax.vmap(scatter_b, in_axes=(None, 1)), in_axes=(1, 1))(tau, wy)
    if is_projection(mappings):
        return projected_precision(tau_prec, precisions, map_prec), b

    def scatter_w(tau_k, prec_k):
        return scatter_matrix(tau_k[:, None, None] * prec_k, map_prec, n_grid)

    over_outputs = jax.vmap(scatter_w, in_axes=(None, 1))
    return jax.vmap(over_outputs, in_axes=(1, 1))(tau_prec, precisions[:, kidx]), b


def posterior_from_sums(
    w: Float[Array, "K O G G"],
    b: Float[Array, "K O G"],
    prior_chol: Float[Array, "Kp Op G G"],
    prior_mean: Float[Array, "K Op G"],
) -> Hyperposterior:
    """Hyperposterior of every mean process from the data terms of
    :func:`precision_sums` (added up over all tasks) and the jittered prior factors."""
    k, o, g = b.shape
    prior_chol = jnp.broadcast_to(prior_chol, (k, o, g, g))
    prior_mean = jnp.broadcast_to(prior_mean, (k, o, g))
    eye = jnp.eye(g, dtype=prior_chol.dtype)

    def one(w, b, chol, m):
        r = cholesky(eye + lower_congruence(w, chol))
        v = solve_lower(r, chol.T)
        cov = gram(v)
        mean = m + cov @ (b - w @ m)
        logdet = logdet_from_chol(chol) - logdet_from_chol(r)
        return mean, cov, r, logdet

    mean, cov, r, logdet = jax.vmap(jax.vmap(one))(w, b, prior_chol, prior_mean)
    return Hyperposterior(
        mean=mean,
        cov=cov,
        prior_mean=prior_mean,
        prior_chol=prior_chol,
        whitened_chol=r,
        logdet=logdet,
    )


def prior_kl(post: Hyperposterior) -> Float[Array, "K O"]:
    """``KL(q(mu_k) || p(mu_k))`` of every mean process, from the whitened factors.

    With ``C = L L^T`` and ``M = I + L^T W L = R R^T``: ``C^{-1} C_hat`` is similar to
    ``M^{-1}``, so ``tr(C^{-1} C_hat) = ||R^{-1}||_F^2`` and ``log|C| - log|C_hat| =
    log|M|``. No covariance is factorised again: the ELBO of an E-step reuses its
    hyperposterior's factors (padded grid points, prior = posterior, add nothing).
    """
    g = post.mean.shape[-1]

    def one(mean, prior_mean, chol, r):
        white = solve_lower(chol, (mean - prior_mean)[:, None])[:, 0]
        trace = jnp.sum(lower_inverse(r) ** 2)
        return 0.5 * (trace + jnp.sum(white**2) - g + logdet_from_chol(r))

    return jax.vmap(jax.vmap(one))(post.mean, post.prior_mean, post.prior_chol, post.whitened_chol)
