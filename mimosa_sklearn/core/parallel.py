"""Memory-bounded maps over tasks and sharding of the task axis across devices.

Per-task ``N x N`` work (task covariances, their factors, gathered hyperposterior
blocks) is embarrassingly parallel over tasks. A plain ``vmap`` materialises all
``T`` blocks at once (memory ``O(T N^2)`` per intermediate); :func:`map_tasks` runs
it in chunks of a fixed number of tasks with ``jax.lax.map`` so memory stays
``O(chunk N^2)`` whatever ``T`` is.

Chunks are *strided* (chunk ``c`` holds tasks ``c, c + n_chunks, c + 2 n_chunks,
...``) rather than contiguous: when the task axis is sharded in contiguous blocks
across devices (:func:`shard_tasks`), every chunk then holds the same number of
tasks from every device, so all devices work on every step of the loop.

Sums over tasks split across ``shards`` devices run one loop per device (a ``vmap``
over a leading shard axis): each device adds its own chunks into its own partial sum,
and the partial sums are added once, after the loop. Summing each chunk across devices
inside the loop instead made XLA put a collective in every step: two processes on two
CPU cores spent most of their time waiting in thousands of all-reduces per EM iteration.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "chunk_for",
    "auto_task_chunk",
    "chunk_under_budget",
    "map_tasks",
    "map_chunks",
    "sum_over_chunks",
    "sum_with_gradient",
    "task_mesh",
    "shard_tasks",
    "to_host",
]

# Elements of one chunked (chunk, K, O, N, N) intermediate: 2**22 float64 = 32 MiB.
_CHUNK_BUDGET = 1 << 22


def chunk_for(n_tasks: int, chunk: int) -> int:
    """Number of tasks per chunk actually used: a divisor of ``n_tasks`` <= ``chunk``.

    Divisors that are multiples of 8 are preferred (bucketed task counts are, and so
    are usual device counts), so that chunks split evenly across devices. ``chunk <= 0``
    or ``chunk >= n_tasks`` means one chunk (a plain ``vmap``).
    """
    if chunk <= 0 or chunk >= n_tasks:
        return n_tasks
    divisors = [d for d in range(chunk, 0, -1) if n_tasks % d == 0]
    return next((d for d in divisors if d % 8 == 0), divisors[0])


def chunk_under_budget(per_task: int, budget: int) -> int:
    """Largest power of two (at least 8) of tasks whose ``per_task`` elements each stay
    within ``budget`` elements in all."""
    per_task = max(1, per_task)
    return max(8, 1 << int(np.floor(np.log2(max(budget // per_task, 1)))))


def auto_task_chunk(n_points: int, n_clusters: int, n_outputs: int) -> int:
    """Default chunk: a power of two (>= 8) keeping one ``(chunk, K, O, N, N)``
    intermediate under 32 MiB."""
    return chunk_under_budget(n_clusters * n_outputs * n_points * n_points, _CHUNK_BUDGET)


def _strided_chunks(a, c: int, n_chunks: int):
    # (T, ...) -> (c, n_chunks, ...) -> (n_chunks, c, ...): chunk j holds tasks
    # j, j + n_chunks, ... (see the module docstring).
    return jnp.swapaxes(a.reshape((c, n_chunks) + a.shape[1:]), 0, 1)


def _task_order(a):
    # (n_chunks, c, ...) outputs of strided chunks -> (T, ...) in task order.
    return jnp.swapaxes(a, 0, 1).reshape((-1,) + a.shape[2:])


def map_tasks(fn: Callable, xs, chunk: int):
    """``jax.vmap(fn)(xs)`` computed ``chunk`` tasks at a time.

    Parameters
    ----------
    fn : callable
        Function of ONE task's slice of ``xs`` (a pytree); returns a pytree.
    xs : pytree
        Arrays whose leading axis is the task axis ``T``.
    chunk : int
        Tasks per chunk (see :func:`chunk_for`); ``<= 0`` or ``>= T``: one ``vmap``.

    Returns
    -------
    pytree
        Outputs stacked along a leading ``T`` axis, in task order (equal to the plain
        ``vmap`` result).
    """
    return map_chunks(jax.vmap(fn), xs, chunk)


def map_chunks(fn: Callable, xs, chunk: int):
    """:func:`map_tasks` for a ``fn`` of a whole chunk: ``fn`` takes every leaf of ``xs``
    with a leading axis of at most ``chunk`` tasks and returns outputs with the same
    leading axis; they are stacked in task order."""
    laid_out = _loop_chunks(xs, chunk, 1)
    if laid_out is None:
        return fn(xs)
    chunks, _, back = laid_out
    return jax.tree.map(back, jax.lax.map(fn, chunks))


def _shard_chunks(a, shards: int, c: int, n_chunks: int):
    # (T, ...) -> (shards, c, n_chunks, ...) -> (n_chunks, shards, c, ...): the tasks of
    # shard s are the contiguous block s of the task axis (the devices' blocks, see
    # :func:`shard_tasks`), strided into chunks inside it.
    return jnp.moveaxis(a.reshape((shards, c, n_chunks) + a.shape[1:]), 2, 0)


def _unshard_order(a):
    # (n_chunks, shards, c, ...) outputs of _shard_chunks -> (T, ...) in task order.
    return jnp.moveaxis(a, 0, 2).reshape((-1,) + a.shape[3:])


def _chunk_layout(t: int, chunk: int, shards: int) -> tuple[int, int, int]:
    """``(shards, c, n_chunks)``: tasks per shard split into ``n_chunks`` chunks of ``c``;
    one shard when ``shards`` does not divide ``t``."""
    shards = shards if shards > 1 and t % shards == 0 else 1
    per_shard = t // shards
    c = chunk_for(per_shard, max(1, chunk // shards) if chunk > 0 else chunk)
    return shards, c, per_shard // c


def _loop_chunks(xs, chunk: int, shards: int):
    """``xs`` laid out for a loop over chunks: ``(chunks, shards, back)``, where the leaves
    of ``chunks`` lead with the loop axis (then, with several shards, a shard axis that
    the chunk's function is vmapped over) and ``back`` puts per-task outputs of the loop
    in task order again. None when all tasks make one chunk."""
    t = jax.tree.leaves(xs)[0].shape[0]
    shards, c, n_chunks = _chunk_layout(t, chunk, shards)
    if shards == 1 and c == t:
        return None
    if shards == 1:
        return jax.tree.map(lambda a: _strided_chunks(a, c, n_chunks), xs), 1, _task_order
    chunks = jax.tree.map(lambda a: _shard_chunks(a, shards, c, n_chunks), xs)
    return chunks, shards, _unshard_order


def _add_shards(tree, shards: int):
    # The shards' partial sums (leading axis) added: once, after the loop.
    return tree if shards == 1 else jax.tree.map(lambda a: jnp.sum(a, axis=0), tree)


def sum_over_chunks(fn: Callable, xs, chunk: int, shards: int = 1):
    """``sum_c fn(chunk_c of xs)``: a reduction over tasks, ``chunk`` tasks at a time.

    ``fn`` takes a chunk (every leaf of ``xs`` with a leading axis of at most ``chunk``
    tasks) and returns its contribution; the contributions of the (strided, as in
    :func:`map_tasks`) chunks are added into a running sum (a ``lax.scan`` carry), so
    memory holds one chunk's intermediates and one contribution, whatever ``T`` is.
    With the task axis split across ``shards`` devices, each device sums its own
    chunks (``chunk / shards`` tasks each) and the partial sums are added at the end
    (see the module docstring).
    """
    laid_out = _loop_chunks(xs, chunk, shards)
    if laid_out is None:
        return fn(xs)
    chunks, shards, _ = laid_out
    step_fn = fn if shards == 1 else jax.vmap(fn)
    shape = jax.eval_shape(step_fn, jax.tree.map(lambda a: a[0], chunks))
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)

    def add(total, chunk_xs):
        return jax.tree.map(jnp.add, total, step_fn(chunk_xs)), None

    total, _ = jax.lax.scan(add, zero, chunks)
    return _add_shards(total, shards)


def sum_with_gradient(fn: Callable, shared, per_task, consts, xs, chunk: int, shards: int = 1):
    """``sum_c fn(shared, per_task_c, consts, xs_c)`` whose gradient is formed chunk by chunk.

    Reverse-mode autodiff through a loop over chunks keeps every chunk's residuals
    until the backward pass, ``O(T N^2)`` memory for per-task factorisations. Here the
    forward pass takes the value and the gradient of each chunk at once and keeps only
    the gradient (a custom VJP), so memory holds one chunk's intermediates.

    Parameters
    ----------
    fn : callable
        ``fn(shared, per_task_chunk, consts, xs_chunk) -> scalar``, a chunk's sum. It must
        close over no traced value: everything traced goes through the arguments.
    shared : pytree
        Differentiable values common to all tasks; their gradients add up over chunks.
    per_task : pytree or None
        Differentiable values with a leading ``T`` axis, chunked with ``xs``; their
        gradients are per task.
    consts : pytree
        Values common to all tasks that are not differentiated (zero cotangent).
    xs : pytree
        Data with a leading ``T`` axis, not differentiated.
    chunk : int
        Tasks per chunk (:func:`chunk_for`).
    shards : int
        Devices the task axis is split across (:func:`sum_over_chunks`).
    """
    grad_fn = jax.value_and_grad(fn, argnums=(0, 1))

    def value_and_grads(shared, per_task, consts, xs):
        laid_out = _loop_chunks((per_task, xs), chunk, shards)
        if laid_out is None:
            return grad_fn(shared, per_task, consts, xs)
        chunks, n_shards, back = laid_out
        chunk_grad = grad_fn
        if n_shards > 1:
            chunk_grad = jax.vmap(grad_fn, in_axes=(None, 0, None, 0))

        def step(carry, chunk_args):
            value, g_shared = carry
            v, (gs, gp) = chunk_grad(shared, chunk_args[0], consts, chunk_args[1])
            return (value + v, jax.tree.map(jnp.add, g_shared, gs)), gp

        # One partial sum per shard, added after the loop.
        lead = () if n_shards == 1 else (n_shards,)
        zero = jnp.zeros(lead, jnp.result_type(*jax.tree.leaves(xs), float))
        init = (zero, jax.tree.map(lambda a: jnp.zeros(lead + a.shape, a.dtype), shared))
        (value, g_shared), g_per_task = jax.lax.scan(step, init, chunks)
        value, g_shared = _add_shards((value, g_shared), n_shards)
        return value, (g_shared, jax.tree.map(back, g_per_task))

    @jax.custom_vjp
    def total(shared, per_task, consts, xs):
        return sum_over_chunks(
            lambda a: fn(shared, a[0], consts, a[1]), (per_task, xs), chunk, shards
        )

    def fwd(shared, per_task, consts, xs):
        value, grads = value_and_grads(shared, per_task, consts, xs)
        return value, grads

    def bwd(grads, g):
        g_shared, g_per_task = jax.tree.map(lambda a: g * a, grads)
        return g_shared, g_per_task, None, None

    total.defvjp(fwd, bwd)
    return total(shared, per_task, consts, xs)


def task_mesh(devices=None):
    """One-axis ``Mesh`` named ``"tasks"`` over ``devices`` (default: all devices)."""
    from jax.sharding import Mesh

    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("tasks",))


def shard_tasks(tree, mesh, n_tasks: int):
    """Place ``tree`` on ``mesh``: arrays whose leading axis has length ``n_tasks`` are
    split along it across the ``"tasks"`` axis, every other array is replicated.

    ``n_tasks`` must be a multiple of the mesh size (the fit pads with
    zero-weight tasks).
    """
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    split = NamedSharding(mesh, P("tasks"))
    replicated = NamedSharding(mesh, P())

    def put(a):
        if not isinstance(a, jax.Array | np.ndarray):
            return a
        spec = split if a.ndim >= 1 and a.shape[0] == n_tasks else replicated
        return jax.device_put(a, spec)

    return jax.tree.map(put, tree)


def to_host(a) -> np.ndarray:
    """``a`` as a numpy array, gathered from every process when its task axis is split
    across processes' devices (a multi-process fit, :func:`shard_tasks` on a mesh of
    several processes): every process then gets the whole array."""
    if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
        return np.asarray(a)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
