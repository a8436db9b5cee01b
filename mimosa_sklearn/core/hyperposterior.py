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
    "hyperposterior",
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


def hyperposterior(
    tau: Float[Array, "T K"],
    precisions: Float[Array, "Ts Kt O N N"],
    weighted_y: Float[Array, "T Kt O N"],
    mappings: Int[Array, "T N"],
    prior_chol: Float[Array, "Kp Op G G"],
    prior_mean: Float[Array, "K Op G"],
    task_weight: Float[Array, " T"] | None = None,
    offset_wy: Float[Array, "T K O N"] | None = None,
) -> Hyperposterior:
    """Hyperposterior of every mean process given responsibilities and task precisions.

    Parameters
    ----------
    tau : (T, K) responsibilities.
    precisions : (T, Kt, O, N, N) masked task precisions ``Psi_i^{-1}`` (zero on padding),
        or ``(1, Kt, O, N, N)`` on the shared-input fast path: the precision shared by
        every real task (inputs and mappings of task 0).
    weighted_y : (T, Kt, O, N) ``Psi_i^{-1} y_i`` (zero on padding).
    mappings : (T, N) grid index of every task point (``G`` on padding).
    prior_chol : (K*, O*, G, G) factor of the jittered prior covariances.
    prior_mean : (K, O*, G) prior means on the grid.
    task_weight : (T,) 1 on real tasks, 0 on padded ones; only used on the fast path,
        where padded tasks must not add the shared precision.
    offset_wy : (T, K, O, N) ``Psi_i^{-1} d_ik``, the prior-mean offsets of the
        approximate grid (:mod:`.approx`), subtracted from ``weighted_y``; None on the
        exact grid.

    A batch in parts (:mod:`.parts`) passes ``tau``, ``precisions``, ``weighted_y``,
    ``mappings``, ``task_weight`` and ``offset_wy`` as tuples with one entry per part
    (``N`` and ``T`` may differ between parts): the data precisions of all parts add up.
    """
    many = isinstance(precisions, tuple)
    n_parts = len(precisions) if many else 1

    def parts(a):
        return a if many else (a,)

    taus, precs, wys, maps = parts(tau), parts(precisions), parts(weighted_y), parts(mappings)
    tws = parts(task_weight) if task_weight is not None else (None,) * n_parts
    offs = parts(offset_wy) if offset_wy is not None else (None,) * n_parts
    k = taus[0].shape[1]
    kt, o = wys[0].shape[1], wys[0].shape[2]
    g = prior_chol.shape[-1]
    prior_chol = jnp.broadcast_to(prior_chol, (k, o, g, g))
    prior_mean = jnp.broadcast_to(prior_mean, (k, o, g))
    kidx = cluster_index(k, kt)
    eye = jnp.eye(g, dtype=prior_chol.dtype)
    # Per part: (tau of the precision scatter, its mappings, tau, precisions, weighted y).
    tau_prec, map_prec, wy_parts = [], [], []
    for tau_p, prec_p, wy_p, map_p, tw_p, off_p in zip(
        taus, precs, wys, maps, tws, offs, strict=True
    ):
        t = wy_p.shape[0]
        if prec_p.shape[0] == 1 and t > 1:
            # sum_i tau_ik P^T Psi^{-1} P = (sum_i w_i tau_ik) P^T Psi^{-1} P: one scatter.
            tw = jnp.ones((t,), tau_p.dtype) if tw_p is None else tw_p
            tau_prec.append(jnp.sum(tw[:, None] * tau_p, axis=0, keepdims=True))  # (1, K)
            map_prec.append(map_p[:1])
        else:
            tau_prec.append(tau_p)
            map_prec.append(map_p)
        wy = wy_p[:, kidx]
        wy_parts.append(wy if off_p is None else wy - off_p)
    if is_projection(maps[0]):
        # Approximate grid: all data precisions at once, before the per-cluster vmap.
        w_all = sum(
            projected_precision(tp, pk, mp)
            for tp, pk, mp in zip(tau_prec, precs, map_prec, strict=True)
        )
        prec_parts = (None,) * n_parts
    else:
        w_all = None
        prec_parts = tuple(p[:, kidx] for p in precs)

    def one(tau_k, tau_prec_k, prec_k, wy_k, chol, m, w):
        # Per part: prec_k (Ts, N, N), wy_k (T, N); one cluster, one output.
        if w is None:
            w = sum(
                scatter_matrix(tp[:, None, None] * pk, mp, g)
                for tp, pk, mp in zip(tau_prec_k, prec_k, map_prec, strict=True)
            )
        b = sum(
            scatter_vector(tk[:, None] * wk, mk, g)
            for tk, wk, mk in zip(tau_k, wy_k, maps, strict=True)
        )
        r = cholesky(eye + lower_congruence(w, chol))
        v = solve_lower(r, chol.T)
        cov = gram(v)
        mean = m + cov @ (b - w @ m)
        logdet = logdet_from_chol(chol) - logdet_from_chol(r)
        return mean, cov, r, logdet

    over_outputs = jax.vmap(one, in_axes=(None, None, 1, 1, 0, 0, 0))
    over_clusters = jax.vmap(over_outputs, in_axes=(1, 1, 1, 1, 0, 0, 0))
    mean, cov, r, logdet = over_clusters(
        taus, tuple(tau_prec), prec_parts, tuple(wy_parts), prior_chol, prior_mean, w_all
    )
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
