"""Approximate grid: mean processes represented on ``M`` inducing inputs.

With irregular continuous inputs the union grid holds every training input
(``G = T N``) and the hyperposterior costs ``O(G^3)``. The approximate mode represents
each mean process by its values on ``M`` inducing inputs ``u`` and reaches any other
input by GP conditioning on them (the projected-process / DTC form):

    mu_k(x) = m_k(x) + A(x) (mu_k(u) - m_k(u)),    A(x) = c(x, u) c(u, u)^{-1},

with ``c`` the mean-process kernel (jittered exactly as the prior on the grid, so that
:func:`.predict.extend_hyperposterior` interpolates with the same ``A``). The E-step,
ELBO and M-step are the exact-grid formulas with the selection matrices ``P_i`` replaced
by the dense ``A_i = A(t_i)`` (``(N, M)`` per task; see :mod:`.linalg`), plus the
*prior-mean offsets* ``d_ik = m_k(t_i) - A_i m_k(u)`` in the task means. Integer
mappings are the one-hot special case (``A_i = P_i``, ``d_ik = 0``). Cost per EM
iteration: ``O(T N M^2 + K M^3)`` instead of ``O(K G^3)``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .likelihood import jitter_amount
from .linalg import cho_solve, cholesky, identity_on_padding, is_projection
from .params import Params, TaskBatch, eval_mean

__all__ = ["projection_kernel", "projection_matrix", "prior_offsets", "with_projection"]


def projection_kernel(params: Params):
    """One mean-process kernel for the projection: the average of the unconstrained
    leaves over the ``(K*, O*)`` axes (the kernel itself when it is shared)."""
    return jax.tree.map(
        lambda a: jnp.mean(a, axis=(0, 1)) if eqx.is_inexact_array(a) else a, params.mean_kernel
    )


def projection_matrix(params: Params, batch: TaskBatch, jitter: float) -> Float[Array, "T N G"]:
    """``A_i = c(t_i, u) c(u, u)^{-1}`` for every task (zero on padded rows and on padded
    grid columns), with the jitter of :func:`.params.prior_on_grid`."""
    kernel = projection_kernel(params)
    grid, gmask = batch.grid, batch.grid_mask
    cuu = kernel(grid, grid)
    eps = jitter_amount(cuu, jitter, gmask)
    chol = cholesky(identity_on_padding(cuu, gmask, eps))
    t, n, i = batch.x.shape
    cross = kernel(grid, batch.x.reshape(t * n, i))  # (G, T N)
    cross = jnp.where(gmask[:, None], cross, 0.0)
    proj = jnp.swapaxes(cho_solve(chol, cross), 0, 1).reshape(t, n, -1)
    row = jnp.any(batch.mask, axis=-1)  # rows with at least one observed output
    return jnp.where(row[..., None] & gmask, proj, 0.0)


def with_projection(params: Params, batch: TaskBatch, jitter: float) -> TaskBatch:
    """``batch`` with its projection recomputed from the current mean kernel."""
    return eqx.tree_at(lambda b: b.mappings, batch, projection_matrix(params, batch, jitter))


def prior_offsets(params: Params, batch: TaskBatch) -> Float[Array, "T K O N"] | None:
    """``d_ik = m_k(t_i) - A_i m_k(u)`` per output (0 where not observed); ``None`` on
    the exact grid, where they vanish identically."""
    if not is_projection(batch.mappings):
        return None
    o = batch.mask.shape[-1]
    m_u = jnp.where(batch.grid_mask, eval_mean(params.prior_mean, 2, batch.grid), 0.0)
    k = m_u.shape[0]
    m_u = jnp.broadcast_to(m_u, (k, o, m_u.shape[-1]))
    m_x = jax.vmap(lambda x_i: eval_mean(params.prior_mean, 2, x_i))(batch.x)  # (T, K, O*, N)
    m_x = jnp.broadcast_to(m_x, (batch.x.shape[0], k, o, batch.x.shape[1]))
    d = m_x - jnp.einsum("tng,kog->tkon", batch.mappings, m_u)
    mask_t = jnp.swapaxes(batch.mask, 1, 2)[:, None]  # (T, 1, O, N)
    return jnp.where(mask_t, d, 0.0)
