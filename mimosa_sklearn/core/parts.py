"""Tasks of very different lengths: a batch split into parts padded to their own ``N``.

Padding every task to the longest one wastes ``O(N^3)`` per short task in every
factorisation. The EM therefore accepts, wherever it takes a :class:`.params.TaskBatch`,
a *batch in parts*: a tuple of ``TaskBatch`` parts (same grid, different ``N`` and
``T``), whose tasks are stacked part after part on every task axis (``tau``, task NLLs,
task-specific hyperparameters). Per-task work runs part by part; the sums over tasks
(hyperposterior, VM-step objective, ELBO) add the parts. A plain ``TaskBatch`` is the
one-part case.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .compile import jit, to_device
from .params import TASK_AXIS_FIELDS, Params, TaskBatch

__all__ = [
    "Batch",
    "as_parts",
    "part_sizes",
    "split_tasks",
    "part_params",
    "task_weights",
    "first",
    "spread_tasks",
    "subsample_tasks",
]


# A one-part batch or the parts of a ragged one.
Batch = TaskBatch | tuple[TaskBatch, ...]


def as_parts(batch: Batch) -> tuple[TaskBatch, ...]:
    """The parts of a batch (a lone ``TaskBatch`` is one part)."""
    return batch if isinstance(batch, tuple) else (batch,)


def first(batch: Batch) -> TaskBatch:
    """The first part: what every part shares (grid, grid mask, approximate or not)."""
    return as_parts(batch)[0]


def part_sizes(batch: Batch) -> tuple[int, ...]:
    """Number of (padded) tasks in each part, in stacking order."""
    return tuple(int(b.x.shape[0]) for b in as_parts(batch))


def split_tasks(a: Array, batch: Batch) -> tuple[Array, ...]:
    """Split the leading (stacked) task axis of ``a`` into the parts' slices."""
    out, start = [], 0
    for size in part_sizes(batch):
        out.append(a[start : start + size])
        start += size
    return tuple(out)


def part_params(params: Params, batch: Batch) -> tuple[Params, ...]:
    """The hyperparameters each part sees: task-specific leaves (``T* > 1``) sliced to
    the part's tasks, everything else as is."""
    parts = as_parts(batch)
    if params.log_noise.shape[0] == 1 or len(parts) == 1:
        return (params,) * len(parts)
    dynamic, static = eqx.partition((params.task_kernel, params.log_noise), eqx.is_inexact_array)
    out, start = [], 0
    for size in part_sizes(parts):
        sliced = eqx.combine(jax.tree.map(lambda a, s=start, n=size: a[s : s + n], dynamic), static)
        out.append(eqx.tree_at(lambda p: (p.task_kernel, p.log_noise), params, sliced))
        start += size
    return tuple(out)


def task_weights(batch: Batch) -> Array:
    """Stacked ``task_weight`` of all parts: 1 on real tasks, 0 on padding."""
    parts = as_parts(batch)
    if len(parts) == 1:
        return parts[0].task_weight
    return jnp.concatenate([b.task_weight for b in parts])


def spread_tasks(batch: Batch, n: int) -> tuple[np.ndarray, ...]:
    """About ``n`` task indices spread evenly over every part, for :func:`subsample_tasks`.

    Each part gets its share of ``n`` (by its task count) rounded up to a multiple of 8,
    so that the subsample's chunks stay even (:func:`.parallel.chunk_for`), at most all
    of its tasks; the indices are evenly spaced over the part's task axis.
    """
    sizes = part_sizes(batch)
    total = sum(sizes)
    out = []
    for size in sizes:
        m = min(size, -(-n * size // (8 * total)) * 8)
        out.append((np.arange(m) * size) // m)
    return tuple(out)


@jit
def _take_tasks(batch: Batch, tau: Float[Array, "T K"], index: tuple[Int[Array, " S"], ...]):
    parts, taus = [], []
    for b, tau_p, idx in zip(as_parts(batch), split_tasks(tau, batch), index, strict=True):
        rows = {f: getattr(b, f)[idx] for f in TASK_AXIS_FIELDS}
        parts.append(dataclasses.replace(b, task_shards=1, **rows))
        taus.append(tau_p[idx])
    sub = parts[0] if isinstance(batch, TaskBatch) else tuple(parts)
    return sub, jnp.concatenate(taus)


def subsample_tasks(batch: Batch, tau: Float[Array, "T K"], n: int) -> tuple[Batch, Array]:
    """A batch of about ``n`` of the tasks (:func:`spread_tasks`) and their rows of ``tau``.

    The grid, the layout in parts and the chunk size are kept; the subsample's task
    axis is not split across devices (``task_shards`` = 1).
    """
    index = tuple(to_device(i, np.int32) for i in spread_tasks(batch, n))
    return _take_tasks(batch, tau, index)
