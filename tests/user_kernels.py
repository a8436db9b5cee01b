"""A kernel class of a user's own (outside kernax), for the persistence tests.

It holds a plain function as a static field, as kernax's stationary kernels hold their
jitted distance: saved models refer to both by reference (skops lists them as types to
trust).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array


def squared_distances(x1: Array, x2: Array) -> Array:
    """(N, M) squared Euclidean distances between the rows of ``x1`` and ``x2``."""
    return jnp.sum((x1[:, None, :] - x2[None, :, :]) ** 2, axis=-1)


class UserSEKernel(eqx.Module):
    """``variance * exp(-d / (2 length_scale^2))`` with log-parametrised values."""

    log_variance: Array
    log_length_scale: Array
    distances: Callable = eqx.field(static=True)

    def __init__(self, variance: float, length_scale: float, distances=squared_distances):
        self.log_variance = jnp.log(jnp.asarray(variance))
        self.log_length_scale = jnp.log(jnp.asarray(length_scale))
        self.distances = distances

    def __call__(self, x1: Array, x2: Array | None = None) -> Array:
        x2 = x1 if x2 is None else x2
        scale = jnp.exp(2.0 * self.log_length_scale)
        return jnp.exp(self.log_variance) * jnp.exp(-0.5 * self.distances(x1, x2) / scale)
