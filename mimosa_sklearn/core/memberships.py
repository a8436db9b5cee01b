"""E-step for the task-to-cluster responsibilities, always in log space."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["log_weights", "responsibilities", "log_responsibilities", "entropy_term"]

# Floor for mixture weights: a weight of exactly 0 would pin log(pi) at -inf and make an
# emptied cluster unrecoverable and its gradients NaN.
_MIN_WEIGHT = 1e-12


def log_weights(weights: Float[Array, " K"], mask: Array | None = None) -> Float[Array, " K"]:
    """``log(pi)`` with a floor so an empty cluster stays finite, and ``-inf`` on padded
    clusters (``mask`` False, :attr:`.params.Params.cluster_mask`): the floor alone
    would leave them a share of every task."""
    logw = jnp.log(jnp.maximum(weights, _MIN_WEIGHT))
    return logw if mask is None else jnp.where(mask, logw, -jnp.inf)


def log_responsibilities(
    weights: Float[Array, " K"], nll: Float[Array, "T K"], mask: Array | None = None
) -> Float[Array, "T K"]:
    """``log tau_ik = log pi_k - nll_ik - logsumexp_l(log pi_l - nll_il)``.

    ``nll`` is a per-(task, cluster) negative log-likelihood (already summed over
    outputs, since every output of a task shares its cluster). ``mask`` (K,) is False
    on padded clusters, whose ``log tau`` is ``-inf`` (:func:`log_weights`).
    """
    logits = log_weights(weights, mask)[None, :] - nll
    return jax.nn.log_softmax(logits, axis=-1)


def responsibilities(
    weights: Float[Array, " K"], nll: Float[Array, "T K"], mask: Array | None = None
) -> Float[Array, "T K"]:
    """Responsibilities ``tau`` (rows sum to one) from per-cluster NLLs, 0 on padded
    clusters (``mask``, see :func:`log_responsibilities`)."""
    tau = jnp.exp(log_responsibilities(weights, nll, mask))
    # Renormalise so rows sum to one to machine precision after exponentiation.
    return tau / jnp.sum(tau, axis=-1, keepdims=True)


def entropy_term(tau: Float[Array, "T K"], weights: Float[Array, " K"]) -> Float[Array, ""]:
    """``sum_ik tau_ik log(pi_k / tau_ik)`` with the convention ``0 log(pi/0) = 0``."""
    safe_tau = jnp.where(tau > 0, tau, 1.0)
    terms = jnp.where(tau > 0, tau * (log_weights(weights)[None, :] - jnp.log(safe_tau)), 0.0)
    return jnp.sum(terms)
