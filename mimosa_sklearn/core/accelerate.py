"""SQUAREM extrapolation of the EM map (Varadhan and Roland, 2008).

Variational EM converges linearly, and on large data sets its slowest direction is the
coupling between the responsibilities and the mean processes: the swimmers' ELBO rose
by about 10 per iteration for 25 iterations while the hyperparameters barely moved.
From three states reached by plain iterations, ``x0 -> x1 = F(x0) -> x2 = F(x1)``,
SQUAREM proposes ``x0 - 2 a r + a^2 v`` with ``r = x1 - x0``, ``v = x2 - 2 x1 + x0``
and the step length ``a = -|r| / |v|``; the caller then applies one EM iteration to
the proposal and keeps it only if its ELBO is at least that of ``x2``, so the ELBO
history stays monotone.

The state is the trainable hyperparameters (already unconstrained reals) and the
logarithms of the responsibilities, renormalised after the step; the mixture weights
follow from the responsibilities as in the VM-step.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .compile import jit
from .mstep import mixture_weights
from .params import Params

__all__ = ["squarem_point"]

# Responsibilities below this are treated as this in log space (exact zeros would make
# the differences infinite).
_TINY = 1e-300


def _state(params: Params, tau: Float[Array, "T K"]):
    return eqx.filter(params, eqx.is_inexact_array), jnp.log(jnp.maximum(tau, _TINY))


def _dot(a, b) -> Float[Array, ""]:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@jit
def squarem_point(
    states: tuple[tuple[Params, Array], tuple[Params, Array], tuple[Params, Array]],
    task_weight: Float[Array, " T"],
    max_step: Float[Array, ""],
) -> tuple[Params, Float[Array, " K"], Float[Array, "T K"], Float[Array, ""]]:
    """The extrapolated ``(params, weights, tau)`` and the step length ``a``.

    ``states``: three ``(params, tau)`` pairs, each reached from the previous one by
    a plain EM iteration. ``a`` is clipped to ``[-max_step, -1]``; at ``a = -1`` the
    proposal is ``x2`` itself.
    """
    (p0, t0), (p1, t1), (p2, t2) = states
    x0, x1, x2 = _state(p0, t0), _state(p1, t1), _state(p2, t2)
    r = jax.tree.map(jnp.subtract, x1, x0)
    v = jax.tree.map(lambda a, b, c: c - 2.0 * b + a, x0, x1, x2)
    rr, vv = _dot(r, r), _dot(v, v)
    step = -jnp.sqrt(rr / jnp.maximum(vv, _TINY))
    step = jnp.clip(jnp.where(jnp.isfinite(step), step, -1.0), -max_step, -1.0)
    dyn, log_tau = jax.tree.map(lambda a, dr, dv: a - 2.0 * step * dr + step**2 * dv, x0, r, v)
    if p2.cluster_mask is not None:
        # Padded clusters stay empty (their log tau is the floor, not -inf, above).
        log_tau = jnp.where(p2.cluster_mask[None, :], log_tau, -jnp.inf)
    tau = jax.nn.softmax(log_tau, axis=-1)
    params = eqx.combine(dyn, eqx.filter(p2, eqx.is_inexact_array, inverse=True))
    return params, mixture_weights(tau, task_weight), tau, step
