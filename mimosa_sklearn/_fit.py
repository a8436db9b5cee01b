"""The fit: padded numpy tasks -> the variational EM -> a :class:`._fitted.FittedMagma`.

One path for every configuration. :func:`fit_magma` lays the problem out once
(:class:`_Problem`): independent outputs on the exact or the approximate grid, or
correlated outputs stacked into ``(x, output)`` pairs (:mod:`._outputs`) with
multi-output kernels; tasks of very different lengths split into parts
(:mod:`._parts`, :mod:`.core.parts`); the task axis sharded across devices. Then the
same loop runs the EM from ``n_init`` initialisations and keeps the best ELBO.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _parts
from ._batching import make_batch, padded_grid_size
from ._data import build_grid, map_to_grid
from ._fitted import FittedMagma
from ._kernels import SharingLayout, correlated_params, default_params
from ._outputs import stack_observed
from ._padded import Padded, row_bucket, take
from .core import approx as core_approx
from .core import runtime
from .core.clusters import cluster_bucket, drop_padded_clusters, pad_clusters
from .core.compile import jit, to_device
from .core.em import EMResult, NumericalFailure, run_em
from .core.init import init_responsibilities
from .core.parallel import auto_task_chunk, shard_tasks, task_mesh, to_host
from .core.params import TASK_AXIS_FIELDS, Params, TaskBatch

__all__ = ["FitConfig", "NumericalFailure", "Start", "fit_magma", "make_parts", "warm_start"]


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Everything :func:`fit_magma` needs besides the data.

    Kernels are kernax modules (or ``None`` for data-driven defaults); ``seed`` drives
    every random choice.
    """

    n_clusters: int = 3
    mean_kernel: object | None = None
    task_kernel: object | None = None
    prior_mean: object | None = None
    shared_task_hps: bool = True
    shared_cluster_hps: bool = True
    cluster_specific_task_hps: bool = False
    shared_output_hps: bool = True
    correlated_outputs: bool = False
    max_iter: int = 100
    tol: float = 1e-4
    n_init: int = 1
    init: str = "kmeans"
    jitter: float = 1e-6
    max_steps: int = 50
    optimiser_tol: float = 1e-3
    seed: int = 0
    # Tasks per chunk of the per-task N x N work (None: sized to keep each chunked
    # intermediate under 32 MiB; 0: never chunk).
    task_chunk: int | None = None
    # Shard the task axis across jax.devices() when there are several (not on CPU
    # devices of jaxlib 0.10.x, see _device_mesh; "force" skips that check).
    shard_tasks: bool | str = True
    # Most parts of different padded task lengths the EM may split the tasks into
    # (None: up to _parts.MAX_PARTS from _parts.MIN_TASKS tasks on, else 1; 1: every
    # task padded to the longest). Not with sharded tasks.
    task_parts: int | None = None
    # SQUAREM extrapolation of the EM iterations (core.accelerate); False: plain EM.
    accelerate: bool = True

    @classmethod
    def from_params(cls, params: dict, *, seed: int) -> FitConfig:
        """The settings among an estimator's ``get_params()``, cast to the types of
        their defaults (a grid search may pass numpy scalars), with ``seed``."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        values = {}
        for name, value in params.items():
            if name not in defaults:
                continue
            kind = type(defaults[name])
            values[name] = kind(value) if kind in (bool, int, float, str) else value
        return cls(**values, seed=int(seed))


# ---------------------------------------------------------------------- devices


def _device_mesh(shard: bool | str):
    """Mesh over all devices for sharding the task axis, or None for one device.

    jaxlib 0.10.x runs every CPU device's program on one intra-op pool with one thread
    per device (whatever :mod:`.core.runtime` does), and its batched LAPACK kernels block
    pool threads waiting for chunks scheduled on that same pool: with two CPU devices
    both threads block and the fit hangs (seen in our EM: both in
    ``jax::ParallelBatchMap`` under ``lapack_dtrsm_ffi``). Several CPU devices on such
    a jaxlib therefore run on one device, with a warning.
    """
    devices = jax.devices()
    if not shard or len(devices) < 2:
        return None
    # Each process of a multi-process fit has its own pool: only several CPU devices in
    # one process share one.
    shared_pool = len(jax.local_devices()) > 1
    if (
        shard != "force"
        and shared_pool
        and devices[0].platform == "cpu"
        and runtime.jaxlib_is_exposed()
    ):
        import jaxlib

        warnings.warn(
            f"Not sharding tasks across {len(devices)} CPU devices: jaxlib "
            f"{jaxlib.__version__} can deadlock in batched linear algebra there. Fitting "
            "on one device; upgrade jaxlib to shard.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return task_mesh(devices)


def _shard_batch(batch: TaskBatch, mesh) -> TaskBatch:
    """Split the task-axis arrays of ``batch`` across ``mesh``; replicate the grid."""
    tb = batch.x.shape[0]
    tasks = shard_tasks(tuple(getattr(batch, f) for f in TASK_AXIS_FIELDS), mesh, tb)
    grid = shard_tasks((batch.grid, batch.grid_mask), mesh, -1)
    batch = dataclasses.replace(batch, task_shards=mesh.size)
    return eqx.tree_at(
        lambda b: tuple(getattr(b, f) for f in TASK_AXIS_FIELDS) + (b.grid, b.grid_mask),
        batch,
        tasks + grid,
    )


def _spans_processes(mesh) -> bool:
    """Whether ``mesh`` holds devices of other processes (a multi-process fit)."""
    return mesh is not None and mesh.devices.size > len(jax.local_devices())


def _on_this_process(result: EMResult) -> EMResult:
    """``result`` of a multi-process EM with every array whole on this process's device.

    The fitted model is the same on every process, and predictions run on each
    process alone, with no collective: arrays split across processes are gathered,
    replicated ones copied to the local device.
    """

    def local(tree):
        return jax.tree.map(
            lambda a: to_device(to_host(a)) if isinstance(a, jax.Array) else a, tree
        )

    return dataclasses.replace(result, params=local(result.params), post=local(result.post))


# ---------------------------------------------------------------------- parts


def _max_parts(config: FitConfig, n_tasks: int) -> int:
    if config.task_parts is not None:
        return max(1, int(config.task_parts))
    return _parts.MAX_PARTS if n_tasks >= _parts.MIN_TASKS else 1


def make_parts(
    tasks: Padded,
    grid: np.ndarray,
    config: FitConfig,
    max_parts: int,
    grid_size: int | None = None,
    run_clusters: int | None = None,
) -> tuple[tuple[TaskBatch, ...], np.ndarray] | None:
    """A batch in parts (:mod:`.core.parts`) of tasks grouped by length, or None when one
    part is best (:func:`._parts.length_parts`). All parts pad the grid to
    ``grid_size`` (see :func:`._batching.make_batch`); ``run_clusters``: the clusters
    the EM runs with, padded ones included (default ``config.n_clusters``), which set
    the chunk sizes.

    Returns the parts and ``src``: the index in ``tasks`` of every stacked task slot (-1
    on empty slots).
    """
    lengths = tasks.n_points
    candidates = np.array([row_bucket(n) for n in lengths])
    sizes = _parts.length_parts(lengths, candidates, max_parts)
    if len(sizes) == 1:
        return None
    parts, src = [], []
    for part, index in _parts.split_by_length(tasks, sizes):
        chunk = config.task_chunk
        if chunk is None:
            k = run_clusters or config.n_clusters
            chunk = auto_task_chunk(part.n_rows, k, part.y.shape[-1])
        parts.append(make_batch(part, grid, task_chunk=chunk, grid_size=grid_size))
        slots = np.full(part.n_slots, -1, dtype=np.int64)
        slots[: index.size] = index
        src.append(slots)
    return tuple(parts), np.concatenate(src)


def _unstack_result(result: EMResult, src: np.ndarray, n_rows: int) -> EMResult:
    """``result`` of an EM on parts with its task axes (tau, task-specific hyperparameters)
    back in the caller's task order, padded to ``n_rows`` rows."""
    real = np.flatnonzero(src >= 0)
    rows = np.empty(n_rows, dtype=np.int64)
    rows[:] = np.flatnonzero(src < 0)[0] if real.size < src.size else 0
    rows[src[real]] = real
    tau = np.asarray(result.tau)[rows]
    params = result.params
    if params.log_noise.shape[0] > 1:
        params = _take_task_rows(params, rows)
    return dataclasses.replace(result, tau=tau, params=params)


def _take_task_rows(params: Params, rows: np.ndarray) -> Params:
    """``params`` with the task-hyperparameter rows ``rows`` (task-specific ones)."""
    idx = to_device(rows)
    return eqx.tree_at(
        lambda p: (p.task_kernel, p.log_noise),
        params,
        jax.tree.map(
            lambda a: a[idx] if eqx.is_inexact_array(a) else a,
            (params.task_kernel, params.log_noise),
        ),
    )


def _fill_rows(a: np.ndarray, size: int, fill) -> np.ndarray:
    """``a`` with its leading axis grown to ``size`` rows of ``fill``."""
    out = np.full((size,) + a.shape[1:], fill, dtype=np.asarray(a).dtype)
    out[: a.shape[0]] = a
    return out


# ---------------------------------------------------------------------- warm start


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a warm-started EM begins: ``params`` (task-specific rows, if any, one per
    real task) and memberships ``tau`` (T, K) of the real tasks."""

    params: Params
    tau: np.ndarray


def warm_start(previous: FittedMagma, tasks: Padded, previous_rows: np.ndarray) -> Start:
    """Start a fit of ``tasks`` where ``previous`` ended.

    ``previous_rows`` (T,) is the model row in ``previous`` of every real task, or -1 for
    a task it did not fit. Known tasks keep their memberships (and task-specific
    hyperparameters); the others get those that conditioning on their data gives under
    ``previous`` (:meth:`FittedMagma.condition`). Hyperparameters are kept; the mean
    processes follow from them and the memberships at the first E-step.
    """
    known = previous_rows >= 0
    tau = np.empty((tasks.n_tasks, previous.n_clusters))
    tau[known] = previous.tau[previous_rows[known]]
    new = np.flatnonzero(~known)
    context = previous.condition(take(tasks, new)) if new.size else None
    if context is not None:
        tau[new] = context.tau
    params = previous.params
    if params.log_noise.shape[0] > 1:
        rows = np.maximum(previous_rows, 0)
        task = jax.tree.map(
            lambda a: np.asarray(a)[rows] if eqx.is_inexact_array(a) else a,
            (params.task_kernel, params.log_noise),
        )
        if context is not None:

            def put(mine, theirs):
                if isinstance(mine, np.ndarray):
                    mine[new] = np.asarray(theirs)
                return mine

            task = jax.tree.map(put, task, context.task_params)
        with runtime.jax_scope():  # float64 on the device whatever the user's JAX flags
            task = jax.tree.map(lambda a: to_device(a) if isinstance(a, np.ndarray) else a, task)
        params = eqx.tree_at(lambda p: (p.task_kernel, p.log_noise), params, task)
    return Start(params=params, tau=tau)


@jit
def _with_projection(params, batch, jitter):
    return core_approx.with_projection(params, batch, jitter)


# ---------------------------------------------------------------------- the fit


@dataclasses.dataclass(frozen=True)
class _Problem:
    """A data set laid out for the EM (see :func:`_lay_out`)."""

    batch: TaskBatch  # one part: what predictions use
    em_batch: TaskBatch | tuple[TaskBatch, ...]  # the EM's (the parts, if any)
    src: np.ndarray | None  # parts: caller's task of every stacked row
    mesh: object  # device mesh of a sharded task axis, or None
    layout: SharingLayout  # of the fitted model
    em_layout: SharingLayout  # of the EM (task-specific rows of the parts)
    start_params: Callable[[np.ndarray], Params]  # initial memberships -> parameters
    n_grid: int
    joint_outputs: int = 1
    input_grid: np.ndarray | None = None


def _layout(config: FitConfig, n_rows: int, n_outputs: int) -> SharingLayout:
    """The sharing layout: ``n_rows`` task-hyperparameter rows when they are not shared."""
    return SharingLayout.from_flags(
        n_rows,
        config.n_clusters,
        n_outputs,
        shared_task_hps=config.shared_task_hps,
        shared_cluster_hps=config.shared_cluster_hps,
        cluster_specific_task_hps=config.cluster_specific_task_hps,
        shared_output_hps=config.shared_output_hps,
    )


#: A fit with at most this much per-task work ``T N^2 O`` (task slots x padded points
#: per task squared x outputs) and at most ``SMALL_FIT_GRID`` grid points is *small*:
#: one compilation of its EM (seconds) costs more than many fits, so its shapes are
#: coarsened to share programs with nearby fits. Its clusters are padded
#: (:mod:`.core.clusters`; 2-4 clusters run as 4, 5-8 as 8), so a search over
#: ``n_clusters`` compiles once per bucket instead of once per value, and its grid
#: keeps some spare room (:data:`._batching.GRID_HEADROOM`), so the folds of a
#: cross-validation share one program. Larger fits run with exact shapes.
SMALL_FIT_WORK = 1 << 19
SMALL_FIT_GRID = 256


def _small_fit(config: FitConfig, tasks: Padded, grid: np.ndarray) -> bool:
    """Whether shapes are coarsened for this fit (see :data:`SMALL_FIT_WORK`)."""
    work = tasks.n_slots * tasks.n_rows**2 * tasks.y.shape[-1]
    small = work <= SMALL_FIT_WORK and grid.shape[0] <= SMALL_FIT_GRID
    # A task axis split across devices keeps exact shapes (large fits, and the
    # multi-process gather of the result would see padded clusters).
    return small and (not config.shard_tasks or jax.device_count() < 2)


def _lay_out(
    tasks: Padded, grid: np.ndarray, config: FitConfig, run_clusters: int, small: bool = False
) -> _Problem:
    """The EM's view of ``tasks`` on ``grid``; the EM runs with ``run_clusters``, and
    a ``small`` fit's grid keeps spare room (:func:`._batching.padded_grid_size`)."""
    t, o = tasks.n_tasks, tasks.y.shape[-1]
    kernels = {
        "mean_kernel": config.mean_kernel,
        "task_kernel": config.task_kernel,
        "prior_mean": config.prior_mean,
    }
    if config.correlated_outputs and o > 1:
        # One channel of observed (x, output) pairs, on a grid of such pairs.
        stacked = stack_observed(tasks)
        grid_s = build_grid(stacked.x[stacked.rows])
        maps = np.zeros(stacked.rows.shape, dtype=np.int64)
        maps[stacked.rows] = map_to_grid(stacked.x[stacked.rows], grid_s)
        shapes = (stacked.n_slots, stacked.n_rows, stacked.x.shape[-1], "joint")
        batch = make_batch(
            dataclasses.replace(stacked, mappings=maps),
            grid_s,
            grid_size=padded_grid_size(grid_s.shape[0], shapes, small),
        )
        layout = _layout(config, batch.x.shape[0], 1)
        return _Problem(
            batch=batch,
            em_batch=batch,
            src=None,
            mesh=None,
            layout=layout,
            em_layout=layout,
            start_params=lambda tau: correlated_params(layout, tasks, tau[:t], **kernels),
            n_grid=grid_s.shape[0],
            joint_outputs=o,
            input_grid=np.asarray(grid, np.float64),
        )
    mesh = _device_mesh(config.shard_tasks)
    chunk = config.task_chunk
    if chunk is None:
        chunk = auto_task_chunk(tasks.n_rows, run_clusters, o)
    shapes = (tasks.n_slots, tasks.n_rows, tasks.x.shape[-1], o, tasks.mappings is None)
    grid_size = padded_grid_size(grid.shape[0], shapes, small)
    batch = make_batch(
        tasks,
        grid,
        task_chunk=chunk,
        task_multiple=1 if mesh is None else mesh.size,
        grid_size=grid_size,
    )
    tb = batch.x.shape[0]
    split = None
    if mesh is None:
        split = make_parts(tasks, grid, config, _max_parts(config, t), grid_size, run_clusters)
    em_batch, src = (batch, None) if split is None else split
    # Task-specific hyperparameters: one row per stacked task during the EM, one per
    # task slot of the one-part batch afterwards.
    em_layout = _layout(config, tb if src is None else src.size, o)
    return _Problem(
        batch=batch,
        em_batch=em_batch,
        src=src,
        mesh=mesh,
        layout=_layout(config, tb, o),
        em_layout=em_layout,
        start_params=lambda tau: default_params(em_layout, tasks, tau[:t], **kernels),
        n_grid=grid.shape[0],
    )


def fit_magma(
    tasks: Padded,
    grid: np.ndarray,
    config: FitConfig,
    callback: Callable[[int, float], None] | None = None,
    *,
    approximate: bool = False,
    start: Start | None = None,
) -> FittedMagma:
    """Fit MagmaClust by variational EM on padded tasks.

    Parameters
    ----------
    tasks : Padded
        The training tasks with their outputs (already normalised if wanted) and the
        grid index of every row (no grid indices with the approximate grid).
    grid : array of shape (G, I)
        Sorted unique training inputs, or the ``M`` inducing inputs when
        ``approximate``.
    config : FitConfig
        Model and optimisation settings.
    callback : callable, optional
        ``callback(iteration, elbo)`` after every EM iteration.
    approximate : bool, default=False
        Approximate grid (:mod:`.core.approx`): the mean processes live on the inducing
        inputs ``grid`` and reach task inputs through ``A = c(x, u) c(u, u)^{-1}``,
        recomputed from the current mean kernel before every EM iteration.
    start : Start, optional
        Where the EM starts (a warm start, :func:`warm_start`) instead of
        ``config.n_init`` k-means or random initialisations.

    Returns
    -------
    FittedMagma
        The best of ``config.n_init`` runs (highest final ELBO).
    """
    grid = np.asarray(grid, np.float64)
    t = tasks.n_tasks
    o = tasks.y.shape[-1]
    if approximate and config.correlated_outputs and o > 1:
        raise NotImplementedError("An approximate grid with correlated outputs is not available.")
    rng = np.random.default_rng(config.seed)
    best: FittedMagma | None = None
    with runtime.jax_scope():
        small = _small_fit(config, tasks, grid)
        # Padded clusters (None: exactly n_clusters). Every count of a bucket runs
        # masked, the bucket's own size too: the mask is part of the program.
        k_run = cluster_bucket(config.n_clusters) if small else None
        problem = _lay_out(tasks, grid, config, k_run or config.n_clusters, small)
        batch, tb = problem.batch, problem.batch.x.shape[0]
        # k-means on the caller's outputs, each separately (with correlated outputs the
        # stacked channel would pool them), one row per task slot of the batch.
        init = tasks if tasks.n_slots == tb else take(tasks, np.arange(t), n_slots=tb)
        em_light = problem.em_batch
        # The fitted model keeps the unsharded batch: it predicts without collectives.
        across_processes = _spans_processes(problem.mesh)
        if problem.mesh is not None:
            # Tasks split across devices, hyperparameters replicated.
            batch = em_light = _shard_batch(batch, problem.mesh)
        # The projection (T, N, M) is only needed by the EM: the fitted model keeps the
        # light batch (predictions condition on the inducing inputs directly).
        refresh = None
        if approximate:
            # Always rebuilt from the light batch: one compiled program.
            def refresh(p, _b, j, light=em_light):
                j = jnp.asarray(j, jnp.float64)
                if isinstance(light, tuple):
                    return tuple(_with_projection(p, b, j) for b in light)
                return _with_projection(p, light, j)

        for _ in range(1 if start is not None else max(1, config.n_init)):
            if start is None:
                tau0 = init_responsibilities(
                    init.y,
                    init.observed,
                    config.n_clusters,
                    rng,
                    config.init,
                    np.asarray(problem.batch.task_weight),
                )
                params = problem.start_params(tau0)
            else:
                tau0, params = _fill_rows(start.tau, tb, 1.0 / config.n_clusters), start.params
                if params.log_noise.shape[0] > 1:
                    # One row per task slot of the EM (empty slots: any finite row).
                    slots = np.arange(tb) if problem.src is None else problem.src
                    params = _take_task_rows(params, np.where((slots >= 0) & (slots < t), slots, 0))
            if problem.src is not None:
                src = problem.src
                uniform = np.full((src.size, config.n_clusters), 1.0 / config.n_clusters)
                tau0 = np.where((src >= 0)[:, None], tau0[np.maximum(src, 0)], uniform)
            if k_run is not None:
                params, tau0 = pad_clusters(params, tau0, k_run)
            if problem.mesh is not None:
                tau0 = shard_tasks(tau0, problem.mesh, tb)
                params = shard_tasks(params, problem.mesh, -1)
            em_batch = em_light if refresh is None else refresh(params, em_light, config.jitter)
            result = run_em(
                params,
                to_device(tau0),
                em_batch,
                max_iter=config.max_iter,
                tol=config.tol,
                jitter=config.jitter,
                max_steps=config.max_steps,
                optimiser_tol=config.optimiser_tol,
                callback=callback,
                refresh=refresh,
                accelerate=config.accelerate,
                subsample=start is None,
            )
            if k_run is not None:
                result = drop_padded_clusters(result, config.n_clusters)
            if problem.src is not None:
                # Predictions use the one-part batch, in the caller's task order.
                result = _unstack_result(result, problem.src, tb)
            if across_processes:
                result = _on_this_process(result)
            fitted = FittedMagma(
                result,
                problem.batch if across_processes else batch,
                t,
                problem.n_grid,
                problem.layout,
                config,
                joint_outputs=problem.joint_outputs,
                input_grid=problem.input_grid,
                # New tasks' own hyperparameters would carry the padded clusters when
                # they are cluster-specific: those predict with exactly n_clusters.
                padded_clusters=k_run if problem.layout.task[1] == 1 else None,
            )
            if best is None or fitted.elbo > best.elbo:
                best = fitted
    assert best is not None
    return best
