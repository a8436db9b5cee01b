"""Correlated outputs as one GP on *stacked* inputs (ALGORITHM.md §6.2).

An observation of output ``p`` at input ``x`` becomes one row with the augmented input
``(x, p)``: the output index is the last input column. A multi-output kernel then
gives ``k((x, p), (x', q))``, e.g. the ICM ``B[p, q] k(x, x')``, so the whole core
(padding, masks, grid, hyperposterior, M-step) runs unchanged with one output channel,
and an output missing at an input is simply a row that does not exist.

The modules below adapt kernax's multi-output kernels (which take the output indices as
``output_ids`` keywords) and any single-output kernax mean to that stacked layout.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

__all__ = ["output_ids", "StackedOutputKernel", "PerOutputMean"]


def output_ids(x: Float[Array, "N I1"], n_outputs: int) -> Int[Array, " N"]:
    """Output index held in the last column of stacked inputs (clipped to be valid)."""
    # Rounded, then clipped: placeholders on padded rows are real grid points, but a
    # stray value must never index out of the coregionalisation matrix.
    return jnp.clip(jnp.round(x[:, -1]), 0, n_outputs - 1).astype(jnp.int32)


class StackedOutputKernel(eqx.Module):
    """A kernax multi-output kernel evaluated on stacked inputs ``(x, p)``.

    Parameters
    ----------
    kernel : eqx.Module
        A kernax multi-output kernel called as ``kernel(x1, x2, output_ids=...,
        output_ids2=...)``: :class:`kernax.ICMKernel`, :class:`kernax.LCMKernel` or
        :class:`kernax.ConvolutionKernel`. It sees the input columns only, so ARD
        length scales never include the output index.
    n_outputs : int
        Number of outputs ``P`` (static).
    """

    kernel: eqx.Module
    n_outputs: int = eqx.field(static=True)

    def __call__(
        self, x1: Float[Array, "N I1"], x2: Float[Array, "M I1"] | None = None
    ) -> Float[Array, "N M"]:
        x2 = x1 if x2 is None else x2
        return self.kernel(
            x1[:, :-1],
            x2[:, :-1],
            output_ids=output_ids(x1, self.n_outputs),
            output_ids2=output_ids(x2, self.n_outputs),
        )


class PerOutputMean(eqx.Module):
    """One copy of a single-output kernax mean per output, on stacked inputs.

    Parameters
    ----------
    mean : eqx.Module
        A kernax mean whose array leaves carry a leading axis of size ``n_outputs``
        (output ``p`` uses slice ``p``), e.g. a :class:`kernax.ConstantMean` with
        ``constant`` of shape ``(P,)``: one learned level per output.
    n_outputs : int
        Number of outputs ``P`` (static).
    """

    mean: eqx.Module
    n_outputs: int = eqx.field(static=True)

    def __call__(self, x: Float[Array, "N I1"]) -> Float[Array, " N"]:
        inputs = x[:, :-1]
        dynamic, static = eqx.partition(self.mean, eqx.is_inexact_array)

        def one(dyn):
            return jnp.broadcast_to(eqx.combine(dyn, static)(inputs), (x.shape[0],))

        # (P, N) is cheap next to the cubic costs; pick each row's own output.
        values = jax.vmap(one)(dynamic)
        return values[output_ids(x, self.n_outputs), jnp.arange(x.shape[0])]
