"""The fitted model as one pytree.

:class:`Model` holds what predictions need from a fit: the hyperparameters, the mean
processes' hyperposterior on the (padded) grid, the mixture weights, the jitter, and the
training tasks with their memberships. The compiled programs of :mod:`.predict` take it
as one argument, so that a call passes one pytree instead of a dozen arrays; programs on
new tasks receive it without its ``tasks`` and ``tau``, so that they do not depend on
the training tasks' shapes (a cross-validation fold with other training tasks reuses
them).
"""

from __future__ import annotations

import equinox as eqx
from jaxtyping import Array, Bool, Float

from .hyperposterior import Hyperposterior
from .params import Params, TaskBatch

__all__ = ["Model"]


class Model(eqx.Module):
    """A fitted MagmaClust model: what predictions need, as one pytree.

    Attributes
    ----------
    params : Params
        Trained hyperparameters.
    post : Hyperposterior
        Hyperposterior of the mean processes on the grid.
    grid : (G, I) array
        Grid of the mean processes (padded; see ``grid_mask``).
    grid_mask : (G,) bool array
        Real grid points.
    weights : (K,) array
        Mixture weights of the clusters.
    jitter : () array
        Diagonal added before factorisations.
    tasks : TaskBatch or None
        The padded training tasks (None in the view passed to programs on new tasks,
        which then do not depend on the training tasks' shapes).
    tau : (T, K) array or None
        Memberships of the padded training tasks (None with ``tasks``).
    """

    params: Params
    post: Hyperposterior
    grid: Float[Array, "G I"]
    grid_mask: Bool[Array, " G"]
    weights: Float[Array, " K"]
    jitter: Float[Array, ""]
    tasks: TaskBatch | None = None
    tau: Float[Array, "T K"] | None = None
