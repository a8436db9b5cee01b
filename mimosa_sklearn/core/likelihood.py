"""Masked Gaussian negative log-likelihoods and the Magma trace correction.

Conventions: ``mask`` is ``True`` on real (observed) entries. Padding is removed
*before* any factorisation (identity rows/columns, zero residuals), so padded entries
never produce NaN values or NaN gradients.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from .linalg import (
    cho_solve,
    cholesky,
    gather_matrix,
    gather_vector,
    gram,
    identity_on_padding,
    inverse_from_chol,
    logdet_from_chol,
    masked_inverse,
    solve_lower,
    symmetrise,
)
from .parallel import map_tasks

__all__ = [
    "LOG_2PI",
    "jitter_amount",
    "factorable_cov",
    "masked_factor",
    "logdet_and_trace",
    "logdet_and_factored_trace",
    "masked_nll",
    "trace_correction",
    "full_nll",
    "cluster_nlls",
    "task_nlls",
    "task_nlls_from_precisions",
    "moment_nll",
]

LOG_2PI = math.log(2.0 * math.pi)


def jitter_amount(
    cov: Float[Array, "... N N"], jitter: float, mask: Bool[Array, "... N"] | None = None
) -> Array:
    """Absolute jitter ``jitter * max(mean(diag(cov_RR)), 1)``, shape ``(...,)``.

    The mean runs over the real entries only, so the jitter of the real block does not
    depend on how much padding surrounds it.
    """
    diag = jnp.diagonal(cov, axis1=-2, axis2=-1)
    if mask is None:
        scale = jnp.mean(diag, axis=-1)
    else:
        mask = jnp.broadcast_to(mask, diag.shape)
        count = jnp.maximum(jnp.sum(mask, axis=-1), 1)
        scale = jnp.sum(jnp.where(mask, diag, 0.0), axis=-1) / count
    return jitter * jnp.maximum(scale, 1.0)


def factorable_cov(
    cov: Float[Array, "... N N"], mask: Bool[Array, "... N"], jitter: float
) -> Float[Array, "... N N"]:
    """``cov`` ready to factorise: zero outside the real block, the relative jitter of
    :func:`jitter_amount` on it, and identity rows/columns on padding.

    Entries of ``cov`` outside the real block are never read, so they may hold
    anything, NaN included, without NaN values or gradients.
    """
    both = mask[..., :, None] & mask[..., None, :]
    cov = jnp.where(both, cov, 0.0)
    eps = jitter_amount(cov, jitter, mask)[..., None, None]
    return identity_on_padding(cov, mask, eps)


def masked_factor(
    cov: Float[Array, "... N N"], mask: Bool[Array, "... N"], jitter: float
) -> Float[Array, "... N N"]:
    """Lower factor of the identity-masked, jittered ``cov`` (:func:`factorable_cov`)."""
    return cholesky(factorable_cov(cov, mask, jitter))


def masked_nll(
    y: Float[Array, " N"],
    mean: Float[Array, " N"],
    cov: Float[Array, "N N"],
    mask: Bool[Array, " N"],
    jitter: float = 0.0,
    constant: bool = True,
) -> Float[Array, ""]:
    """``-log N(y_R; mean_R, cov_RR)`` over the real entries ``R`` of a padded vector.

    Parameters
    ----------
    y, mean : array of shape (N,)
        Values and mean; padded entries may hold anything (NaN included).
    cov : array of shape (N, N)
        Covariance; padded rows/columns may hold anything finite or not.
    mask : bool array of shape (N,)
        ``True`` on real entries.
    jitter : float
        Relative jitter added to the real block before factorising.
    constant : bool
        Include the ``n log(2 pi) / 2`` term (``n`` = number of real entries).
    """
    chol = masked_factor(cov, mask, jitter)
    resid = jnp.where(mask, y - mean, 0.0)
    alpha = solve_lower(chol, resid[:, None])[:, 0]
    out = 0.5 * (jnp.sum(alpha**2) + logdet_from_chol(chol))
    if constant:
        out = out + 0.5 * jnp.sum(mask) * LOG_2PI
    return out


def trace_correction(
    cov: Float[Array, "N N"],
    post_cov: Float[Array, "N N"],
    mask: Bool[Array, " N"],
    jitter: float = 0.0,
) -> Float[Array, ""]:
    """``0.5 tr(cov_RR^{-1} post_cov_RR)`` on the real entries of padded matrices.

    Uses the lower factor of ``cov`` only (``cho_solve`` against the zero-padded
    ``post_cov``), so it is exact for non-commuting matrices and needs no correction
    for padded indices.
    """
    both = mask[:, None] & mask[None, :]
    chol = masked_factor(cov, mask, jitter)
    post = jnp.where(both, post_cov, 0.0)
    return 0.5 * jnp.trace(cho_solve(chol, post))


def full_nll(
    y: Float[Array, " N"],
    mean: Float[Array, " N"],
    cov: Float[Array, "N N"],
    post_cov: Float[Array, "N N"],
    mask: Bool[Array, " N"],
    jitter: float = 0.0,
    constant: bool = True,
) -> Float[Array, ""]:
    """Magma NLL: ``masked_nll + trace_correction`` (expected NLL under an uncertain mean)."""
    return masked_nll(y, mean, cov, mask, jitter, constant) + trace_correction(
        cov, post_cov, mask, jitter
    )


def cluster_nlls(
    post_means: Float[Array, "K O G"],
    post_covs: Float[Array, "K O G G"],
    prior_means: Float[Array, "Kp Op G"],
    prior_covs: Float[Array, "Kp Op G G"],
    jitter: float = 0.0,
    constant: bool = True,
) -> Float[Array, "K O"]:
    """Full NLL of every mean process's hyperposterior under its prior, shape ``(K, O)``.

    Size-1 leading axes of the priors (shared hyperparameters) are broadcast.
    """
    k, o, g = post_means.shape
    prior_means = jnp.broadcast_to(prior_means, (k, o, g))
    prior_covs = jnp.broadcast_to(prior_covs, (k, o, g, g))
    mask = jnp.ones((g,), dtype=bool)

    def one(pm, pc, m, c):
        return full_nll(pm, m, c, pc, mask, jitter, constant)

    return jax.vmap(jax.vmap(one))(post_means, post_covs, prior_means, prior_covs)


def task_nlls(
    y: Float[Array, "T N O"],
    mask: Bool[Array, "T N O"],
    mappings: Int[Array, "T N"],
    post_means: Float[Array, "K O G"],
    post_covs: Float[Array, "K Oc G G"],
    task_covs: Float[Array, "Tt Kt Ot N N"],
    jitter: float = 0.0,
    constant: bool = True,
    chunk: int = 0,
    shared_weight: Float[Array, " T"] | None = None,
    offsets: Float[Array, "T K O N"] | None = None,
) -> Float[Array, "T K O"]:
    """Full NLL of every task under every cluster, for every output: shape ``(T, K, O)``.

    ``task_covs`` has size-1 axes where task hyperparameters are shared; the masked
    factor of each distinct task covariance is computed once and reused for all
    clusters. ``chunk`` tasks are processed at a time (:func:`.parallel.map_tasks`).

    ``shared_weight`` selects the shared-input fast path: every real task has task
    0's inputs, mask and mappings, ``task_covs`` has ``Tt = 1``, and ``shared_weight``
    (1 on real tasks, 0 on padded ones) zeroes the padded tasks' NLLs exactly as their
    all-False masks do on the general path. One factor and one trace term serve all
    tasks; only the quadratic terms are per task (one solve with ``T`` right-hand sides).

    ``mappings`` may be a float projection ``(T, N, G)`` (approximate grid, see
    :mod:`.linalg`); ``offsets`` (0 where not observed) are then its prior-mean offsets
    ``d_ik``, added to the task means.
    """
    t, n, o = y.shape
    k = post_means.shape[0]
    kt = task_covs.shape[1]
    post_covs = jnp.broadcast_to(post_covs, (k, o) + post_covs.shape[-2:])
    # Cluster k uses task covariance k when it is cluster-specific, else the shared one.
    idx = jnp.arange(k) if kt == k and kt > 1 else jnp.zeros((k,), dtype=int)

    def factors(mask_i, covs_i):
        # covs_i (Kt, O, N, N); mask_i (N, O)
        m_t = mask_i.T  # (O, N)
        chol = masked_factor(covs_i, m_t[None], jitter)  # (Kt, O, N, N)
        inv = masked_inverse(chol, m_t[None])
        return m_t, chol[idx], inv[idx], logdet_from_chol(chol)[idx]

    if shared_weight is not None:
        covs0 = jnp.broadcast_to(task_covs[0], (kt, o, n, n))
        m_t, chol_k, inv_k, logdet_k = factors(mask[0], covs0)
        mu = gather_vector(post_means, mappings[0])  # (K, O, N)
        trace = jnp.sum(inv_k * gather_matrix(post_covs, mappings[0]), axis=(-2, -1))
        resid = jnp.where(m_t, jnp.swapaxes(y, 1, 2)[:, None] - mu[None], 0.0)  # (T, K, O, N)
        if offsets is not None:
            resid = resid - offsets
        alpha = solve_lower(chol_k, jnp.moveaxis(resid, 0, -1))  # (K, O, N, T)
        quad = jnp.moveaxis(jnp.sum(alpha**2, axis=-2), -1, 0)  # (T, K, O)
        out = 0.5 * (quad + logdet_k + trace)
        if constant:
            out = out + 0.5 * jnp.sum(m_t, axis=-1) * LOG_2PI
        return shared_weight[:, None, None] * out

    task_covs = jnp.broadcast_to(task_covs, (t, kt, o, n, n))

    def per_task(args):
        y_i, mask_i, map_i, covs_i, off_i = args
        m_t, chol_k, inv_k, logdet_k = factors(mask_i, covs_i)
        mu = gather_vector(post_means, map_i)  # (K, O, N)
        if off_i is not None:
            mu = mu + off_i
        cov_hat = gather_matrix(post_covs, map_i)  # (K, O, N, N)
        resid = jnp.where(m_t[None], y_i.T[None] - mu, 0.0)  # (K, O, N)
        alpha = solve_lower(chol_k, resid[..., None])[..., 0]
        quad = jnp.sum(alpha**2, axis=-1)
        trace = jnp.sum(inv_k * cov_hat, axis=(-2, -1))
        out = 0.5 * (quad + logdet_k + trace)
        if constant:
            out = out + 0.5 * jnp.sum(m_t, axis=-1)[None] * LOG_2PI
        return out  # (K, O)

    return map_tasks(per_task, (y, mask, mappings, task_covs, offsets), chunk)


def task_nlls_from_precisions(
    y: Float[Array, "T N O"],
    mask: Bool[Array, "T N O"],
    mappings: Int[Array, "T N"],
    post_means: Float[Array, "K O G"],
    post_covs: Float[Array, "K Oc G G"],
    precisions: Float[Array, "Ts Kt O N N"],
    logdets: Float[Array, "Ts Kt O"],
    constant: bool = True,
    chunk: int = 0,
    shared_weight: Float[Array, " T"] | None = None,
    offsets: Float[Array, "T K O N"] | None = None,
) -> Float[Array, "T K O"]:
    """:func:`task_nlls` from task precisions the caller already has.

    The VE-step computes the masked precisions ``Psi_i^{-1}`` (zero on padding) and
    ``log|Psi_i|`` for the hyperposteriors; reusing them for the responsibilities saves
    a second factorisation of every task covariance. ``Ts = 1`` with ``shared_weight``
    is the shared-input fast path, as in :func:`task_nlls`.
    """
    t, n, o = y.shape
    k = post_means.shape[0]
    kt = precisions.shape[1]
    post_covs = jnp.broadcast_to(post_covs, (k, o) + post_covs.shape[-2:])
    idx = jnp.arange(k) if kt == k and kt > 1 else jnp.zeros((k,), dtype=int)

    def terms(m_t, prec_i, logdet_i, mu, cov_hat, resid):
        inv_k = prec_i[idx]  # (K, O, N, N)
        quad = jnp.einsum("...kon,konm,...kom->...ko", resid, inv_k, resid)
        trace = jnp.sum(inv_k * cov_hat, axis=(-2, -1))
        out = 0.5 * (quad + logdet_i[idx] + trace)
        if constant:
            out = out + 0.5 * jnp.sum(m_t, axis=-1) * LOG_2PI
        return out

    if shared_weight is not None:
        m_t = mask[0].T  # (O, N)
        mu = gather_vector(post_means, mappings[0])  # (K, O, N)
        resid = jnp.where(m_t, jnp.swapaxes(y, 1, 2)[:, None] - mu[None], 0.0)  # (T, K, O, N)
        if offsets is not None:
            resid = resid - offsets
        cov_hat = gather_matrix(post_covs, mappings[0])
        out = terms(m_t, precisions[0], logdets[0], mu, cov_hat, resid)
        return shared_weight[:, None, None] * out

    def per_task(args):
        y_i, mask_i, map_i, prec_i, logdet_i, off_i = args
        m_t = mask_i.T  # (O, N)
        mu = gather_vector(post_means, map_i)  # (K, O, N)
        if off_i is not None:
            mu = mu + off_i
        resid = jnp.where(m_t[None], y_i.T[None] - mu, 0.0)
        return terms(m_t, prec_i, logdet_i, mu, gather_matrix(post_covs, map_i), resid)

    return map_tasks(per_task, (y, mask, mappings, precisions, logdets, offsets), chunk)


@jax.custom_vjp
def logdet_and_trace(
    cov: Float[Array, "... N N"], second_moment: Float[Array, "... N N"]
) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """``(log|S|, tr(S^{-1} M))`` for symmetric positive definite ``S``.

    The VM-step objectives are sums of these two terms, and their gradients have a
    closed form through ``P = S^{-1}``: ``d log|S| = P`` and ``d tr(S^{-1} M) =
    -P M^T P`` (and ``P`` for ``M``). The custom VJP uses it, so a gradient costs two
    matrix products instead of the triangular solves that autodiff would trace back
    through the Cholesky factor and both solves (the M-step's hot loop).
    """
    out, _ = _logdet_and_trace_fwd(cov, second_moment)
    return out


def _logdet_and_trace_fwd(cov, second_moment):
    chol = cholesky(cov)
    prec = inverse_from_chol(chol)
    trace = jnp.sum(prec * second_moment, axis=(-2, -1))
    return (logdet_from_chol(chol), trace), (prec, second_moment)


def _logdet_and_trace_bwd(res, cotangents):
    prec, second_moment = res
    g_logdet, g_trace = cotangents
    g_logdet, g_trace = g_logdet[..., None, None], g_trace[..., None, None]
    inner = prec @ jnp.swapaxes(second_moment, -1, -2) @ prec
    return g_logdet * prec - g_trace * inner, g_trace * prec


logdet_and_trace.defvjp(_logdet_and_trace_fwd, _logdet_and_trace_bwd)


@jax.custom_vjp
def logdet_and_factored_trace(
    cov: Float[Array, "... G G"],
    fixed: Float[Array, "... G F"],
    columns: Float[Array, "... G R"],
) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """``(log|S|, tr(S^{-1} M))`` for ``M = F F^T + R R^T`` given as its factor columns.

    The mean-process objective of the VM-step at a large grid: ``M`` is the
    hyperposteriors' covariance (``F``, its factor, computed once per VM-step) plus the
    outer products of the residuals ``R``. With ``S = L L^T`` and ``Y = L^{-1} [F, R]``
    the trace is ``|Y|_F^2``, and the gradient in ``S``,
    ``a S^{-1} - b S^{-1} M S^{-1} = L^{-T} (a I - b Y Y^T) L^{-1}``, takes one matrix
    product and triangular solves, where :func:`logdet_and_trace` takes three products:
    LAPACK's solves run at about twice XLA's matrix-product speed per flop on CPU, so a
    1024-point evaluation costs about half as much.

    ``fixed`` is a constant: its cotangent is zero (the VM-step holds ``q`` fixed).
    """
    out, _ = _factored_fwd(cov, fixed, columns)
    return out


def _factored_fwd(cov, fixed, columns):
    chol = cholesky(cov)
    white = solve_lower(chol, jnp.concatenate([fixed, columns], axis=-1))
    trace = jnp.sum(white**2, axis=(-2, -1))
    return (logdet_from_chol(chol), trace), (chol, white, fixed)


def _factored_bwd(res, cotangents):
    chol, white, fixed = res
    n_fixed = fixed.shape[-1]
    g_logdet, g_trace = (c[..., None, None] for c in cotangents)
    eye = jnp.eye(chol.shape[-1], dtype=chol.dtype)
    inner = g_logdet * eye - g_trace * gram(jnp.swapaxes(white, -1, -2))
    # L^{-T} inner L^{-1}: a left solve with L^T, then a right solve with L.
    left = lax.linalg.triangular_solve(chol, inner, left_side=True, lower=True, transpose_a=True)
    g_cov = lax.linalg.triangular_solve(chol, left, left_side=False, lower=True)
    g_cov = symmetrise(g_cov)
    # d |L^{-1} R|^2 / dR = 2 S^{-1} R = 2 L^{-T} (L^{-1} R).
    g_columns = (
        2.0
        * g_trace
        * lax.linalg.triangular_solve(
            chol, white[..., n_fixed:], left_side=True, lower=True, transpose_a=True
        )
    )
    return g_cov, jnp.zeros_like(fixed), g_columns


logdet_and_factored_trace.defvjp(_factored_fwd, _factored_bwd)


def moment_nll(
    cov: Float[Array, "... N N"],
    second_moment: Float[Array, "... N N"],
    weight: Float[Array, "..."],
    n_real: Float[Array, "..."],
    constant: bool = True,
) -> Float[Array, "..."]:
    """Expected NLL ``0.5 [w (log|S| + n log 2 pi) + tr(S^{-1} M)]`` from a second moment.

    ``E_q[-log N(y; mu, S)] = 0.5 [log|S| + tr(S^{-1} E[(y-mu)(y-mu)^T]) + n log 2pi]``;
    ``weight`` multiplies the terms that do not depend on the data (a responsibility when
    the second moment is already weighted by it). ``cov`` is the identity-masked,
    jittered covariance (:func:`factorable_cov`); ``M`` is zero on padding.
    """
    logdet, trace = logdet_and_trace(cov, second_moment)
    out = weight * logdet + trace
    if constant:
        out = out + weight * n_real * LOG_2PI
    return 0.5 * out
