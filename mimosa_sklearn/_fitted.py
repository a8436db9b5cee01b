"""A fitted model as the estimator sees it: numpy arrays in, numpy arrays out.

:class:`FittedMagma` wraps the fitted :class:`~mimosa_sklearn.core.model.Model` (one
pytree) with what the host needs around it: the numbers of real tasks and grid points,
the sharing layout, the fit's history and, for correlated outputs, the stacked output
layout (:mod:`._outputs`). Its methods take padded tasks (:mod:`._padded`), call the
compiled programs of :mod:`.core.predict` inside :func:`.core.runtime.jax_scope` and
return float64 numpy arrays, so the user's global JAX configuration is never changed.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._distinct import InputGroup, group_by_inputs
from ._kernels import SharingLayout, count_trainable, kernel_hyperparameters
from ._outputs import FullCov, stack_inputs, stack_observed, stack_rows, unstack_spread
from ._padded import Padded, concat, empty, take, task_bucket
from .core import predict as core_predict
from .core import runtime
from .core.clusters import pad_memberships, pad_model
from .core.compile import to_device
from .core.em import EMResult
from .core.model import Model
from .core.params import TaskBatch

__all__ = ["Context", "FittedMagma"]

# The grid extension of each fitted model (core.predict.GridExtension), computed on first
# use and reused by every later call; kept out of the model's attributes so that it is
# not saved with it (a loaded model computes it again).
_EXTENSIONS: weakref.WeakKeyDictionary[FittedMagma, core_predict.GridExtension] = (
    weakref.WeakKeyDictionary()
)
# Likewise the view of each fitted model that programs on new tasks take.
_NEW_TASK_MODELS: weakref.WeakKeyDictionary[FittedMagma, Model] = weakref.WeakKeyDictionary()
# Fewest distinct inputs a group of tasks may hold (_distinct.group_by_inputs); the cap
# is otherwise the padded grid size, so that a group's arrays are no larger than the
# extension's.
_MIN_GROUP_INPUTS = 256


@dataclasses.dataclass
class Context:
    """Observed points of new tasks and what conditioning learned about them.

    ``tasks`` are the observations (stacked ``(x, output)`` pairs with correlated
    outputs); ``tau`` (P, K) are the memberships and ``task_params`` the task
    hyperparameters (array leaves with one leading row per task).
    """

    tasks: Padded
    tau: np.ndarray
    task_params: object

    def task(self, i: int) -> Context:
        """The ``i``-th task alone."""
        n_ctx = self.tasks.n_tasks
        params = jax.tree.map(
            lambda leaf: leaf[i : i + 1] if _leading(leaf) == n_ctx else leaf, self.task_params
        )
        return Context(
            tasks=take(self.tasks, np.array([i])),
            tau=np.asarray(self.tau)[i : i + 1],
            task_params=params,
        )

    @staticmethod
    def stack(contexts: list[Context]) -> Context:
        """One context for several."""
        params = contexts[0].task_params
        if len(contexts) > 1:
            params = jax.tree.map(_concat_leaves, *(c.task_params for c in contexts))
        return Context(
            tasks=concat([c.tasks for c in contexts]),
            tau=np.concatenate([np.asarray(c.tau) for c in contexts]),
            task_params=params,
        )


def _leading(leaf) -> int | None:
    shape = getattr(leaf, "shape", ())
    return shape[0] if len(shape) else None


def _concat_leaves(*leaves):
    """Concatenate per-task array leaves along the task axis; keep other leaves.

    Leaves stay numpy arrays: :meth:`FittedMagma.predict_new_tasks` fills numpy leaves
    up to its task slots.
    """
    if _leading(leaves[0]) is None:
        return leaves[0]
    return np.concatenate([np.asarray(leaf) for leaf in leaves], axis=0)


def _host(leaf):
    """A device array leaf as a numpy array (other leaves as they are)."""
    return np.asarray(leaf) if isinstance(leaf, jax.Array) else leaf


def _task_rows(tree, n_slots: int, slots: np.ndarray):
    """Rows ``slots`` of the per-task leaves (leading axis ``n_slots``) of ``tree``, on
    the device; other leaves as they are."""
    return jax.tree.map(
        lambda a: to_device(np.asarray(a)[slots]) if _leading(a) == n_slots else a, tree
    )


def _fill_slots(a: np.ndarray, size: int) -> np.ndarray:
    """Leading axis grown to ``size`` with copies of the first row (any finite
    hyperparameters do for empty task slots)."""
    if a.shape[0] >= size:
        return a
    return np.concatenate([a, np.repeat(a[:1], size - a.shape[0], axis=0)], axis=0)


class FittedMagma:
    """A fitted MagmaClust model: numpy in, numpy out.

    Parameters
    ----------
    result : EMResult
        The EM's result.
    tasks : TaskBatch
        The padded training tasks (one part) and the grid.
    n_tasks, n_grid : int
        Real training tasks and grid points.
    layout : SharingLayout
        Leading axes of the hyperparameters.
    config : object
        The fit's settings (``_fit.FitConfig``).
    joint_outputs : int, default=1
        Outputs modelled jointly on stacked ``(x, output)`` inputs (correlated outputs);
        1 for independent outputs.
    input_grid : array of shape (G, I), optional
        With ``joint_outputs > 1``: the training inputs (the model's own grid holds
        stacked pairs).
    padded_clusters : int, optional
        Clusters, padded ones included, that programs on new tasks run with
        (:func:`.core.clusters.pad_model`): the bucket the EM of a small fit ran with
        (:mod:`.core.clusters`), so that fits of nearby ``n_clusters`` share those
        programs too. None: exactly ``n_clusters``.
    """

    def __init__(
        self,
        result: EMResult,
        tasks: TaskBatch,
        n_tasks: int,
        n_grid: int,
        layout: SharingLayout,
        config: object,
        *,
        joint_outputs: int = 1,
        input_grid: np.ndarray | None = None,
        padded_clusters: int | None = None,
    ):
        self.model = Model(
            params=result.params,
            post=result.post,
            grid=tasks.grid,
            grid_mask=tasks.grid_mask,
            weights=to_device(result.weights),
            jitter=to_device(result.jitter),
            tasks=tasks,
            tau=to_device(result.tau),
        )
        self.n_tasks = n_tasks
        self.n_grid = n_grid
        self.layout = layout
        self.config = config
        self.n_clusters = int(result.tau.shape[1])
        self.tau = np.asarray(result.tau)[:n_tasks]
        self.weights = np.asarray(result.weights)
        self.jitter = result.jitter
        self.elbo = result.elbo
        self.elbo_history = result.elbo_history
        self.n_iter = result.n_iter
        self.converged = result.converged
        self.n_joint_outputs = int(joint_outputs)
        self.input_grid = None if input_grid is None else np.asarray(input_grid, np.float64)
        self.n_outputs = int(tasks.y.shape[-1])
        self.padded_clusters = padded_clusters

    # -- views
    @property
    def params(self):
        """The trained hyperparameters (:class:`~mimosa_sklearn.core.params.Params`)."""
        return self.model.params

    @property
    def post(self):
        """The hyperposterior of the mean processes on the grid."""
        return self.model.post

    @property
    def batch(self) -> TaskBatch:
        """The padded training tasks and the grid."""
        return self.model.tasks

    @property
    def grid(self) -> np.ndarray:
        """(G, I) training grid (the training inputs with correlated outputs)."""
        if self.n_joint_outputs > 1:
            return self.input_grid
        return np.asarray(self.model.grid)[: self.n_grid]

    def _typical_task_params(self, n: int):
        """Task hyperparameters for ``n`` new tasks (:func:`.core.predict.typical_task_params`)."""
        params = self._new_task_model().params
        real = np.arange(params.log_noise.shape[0]) < self.n_tasks
        return core_predict.typical_task_params(params, to_device(real), n)

    def _new_task_model(self) -> Model:
        """The model as programs on new tasks take it: without the training tasks, so
        that they do not depend on their shapes, and with the padded clusters of a small
        fit (``padded_clusters``), so that they do not depend on ``n_clusters``."""
        model = _NEW_TASK_MODELS.get(self)
        if model is None:
            model = dataclasses.replace(self.model, tasks=None, tau=None)
            # Saved before padded_clusters existed: exactly n_clusters.
            k_b = getattr(self, "padded_clusters", None)
            if k_b is not None:
                with runtime.jax_scope():  # float64 on the device
                    model = pad_model(model, k_b)
            _NEW_TASK_MODELS[self] = model
        return model

    def _training_model(self) -> Model:
        """The model with its training tasks, in the clusters of :meth:`_new_task_model`
        (whose grid extension the programs on training tasks take too)."""
        model, tau = self._new_task_model(), self.model.tau
        if model.weights.shape[0] != tau.shape[1]:
            tau = to_device(pad_memberships(tau, model.weights.shape[0]))
        return dataclasses.replace(model, tasks=self.model.tasks, tau=tau)

    def _extension(self) -> core_predict.GridExtension:
        """The hyperposterior's grid extension, computed once per fitted model."""
        extension = _EXTENSIONS.get(self)
        if extension is None:
            extension = core_predict.extension_of(self._new_task_model())
            _EXTENSIONS[self] = extension
        return extension

    def _over_groups(self, parts: list[np.ndarray], run: Callable) -> list[np.ndarray]:
        """``run(group, slots)`` for every group of tasks sharing their distinct inputs
        (:func:`._distinct.group_by_inputs` of ``parts``), results concatenated over
        the tasks.

        ``slots`` are the group's task slots, padded to a bucketed count with copies of
        its last task; ``run`` returns device arrays with one leading row per slot.
        """
        cap = max(int(self.model.grid.shape[0]), _MIN_GROUP_INPUTS)
        outs = []
        for group in group_by_inputs(parts, cap):
            n = group.tasks.stop - group.tasks.start
            slots = group.tasks.start + np.minimum(np.arange(task_bucket(n)), n - 1)
            pad = slots.size - n
            if pad:
                group = dataclasses.replace(
                    group, index=[np.concatenate([i, i[-1:].repeat(pad, 0)]) for i in group.index]
                )
            outs.append([np.asarray(a)[:n] for a in run(group, slots)])
        return [np.concatenate(arrays) for arrays in zip(*outs, strict=True)]

    # -- inspection
    def mean_processes(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hyperposterior mean and variance of every mean process at ``x``: ``(K, O, M)``."""
        x = np.asarray(x, np.float64)
        o, m = self.n_joint_outputs, x.shape[0]
        xs = stack_inputs(x, o) if o > 1 else x
        with runtime.jax_scope():
            # Exactly n_clusters: one mean process per real cluster.
            model = dataclasses.replace(self.model, tasks=None, tau=None)
            mean, cov = core_predict.mean_processes(model, to_device(xs))
            mean = np.asarray(mean)
            var = np.maximum(np.asarray(jnp.diagonal(cov, axis1=-2, axis2=-1)), 0.0)
        if o == 1:
            return mean, var
        k = mean.shape[0]
        return (
            np.swapaxes(mean.reshape(k, m, o), 1, 2),
            np.swapaxes(var.reshape(k, m, o), 1, 2),
        )

    def hyperparameters(self, task_order: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Readable hyperparameter values (float64 arrays) keyed ``"<group>.<name>"``.

        Shapes: mean kernel ``(K*, O*)``, prior mean ``(K, O*)``, task kernel and noise
        ``(T*, K*, O*)`` (size-1 axes are shared values). With correlated outputs, also
        the coregionalisation matrices ``B = W W^T + diag(kappa)`` of ICM kernels
        (``"<group>.coregionalisation"``). ``task_order`` (model rows) reorders the
        values of task-specific hyperparameters.
        """
        out: dict[str, np.ndarray] = {}
        p = self.params
        for group, mod in (
            ("mean_kernel", p.mean_kernel),
            ("prior_mean", p.prior_mean),
            ("task_kernel", p.task_kernel),
        ):
            for name, val in kernel_hyperparameters(mod).items():
                out[f"{group}.{name}"] = val
        noise = np.exp(np.asarray(p.log_noise))
        out["noise"] = noise[: self.n_tasks] if noise.shape[0] > 1 else noise
        if out["task_kernel.variance" if "task_kernel.variance" in out else "noise"].shape[0] > 1:
            for key in [k for k in out if k.startswith("task_kernel.")]:
                out[key] = out[key][: self.n_tasks]
        for group in ("mean_kernel", "task_kernel"):
            w, kappa = out.get(f"{group}.kernel.W"), out.get(f"{group}.kernel.kappa")
            if w is not None and kappa is not None:
                b = np.einsum("...pr,...qr->...pq", w, w)
                out[f"{group}.coregionalisation"] = b + kappa[..., None] * np.eye(w.shape[-2])
        out = {key: np.array(value, dtype=np.float64) for key, value in out.items()}
        if task_order is not None and p.log_noise.shape[0] > 1 and task_order.size > 1:
            for key, value in out.items():
                per_task = key == "noise" or key.startswith("task_kernel.")
                if per_task and value.ndim and value.shape[0] == task_order.size:
                    out[key] = value[task_order]
        return out

    def n_parameters(self) -> int:
        """Free parameters for VBIC (ALGORITHM.md §5), counted on real tasks only."""
        p = self.params
        task = count_trainable(p.task_kernel) + int(np.size(p.log_noise))
        if p.log_noise.shape[0] > 1:
            task = task * self.n_tasks // p.log_noise.shape[0]
        return (
            count_trainable(p.mean_kernel)
            + count_trainable(p.prior_mean)
            + task
            + self.n_clusters
            - 1
        )

    def vbic(self) -> float:
        """Variational BIC: ``ELBO - n_parameters / 2 * log(T)``."""
        return self.elbo - 0.5 * self.n_parameters() * math.log(max(self.n_tasks, 1))

    # -- prediction
    def _pad_pred(self, x_pred: Padded):
        """Prediction inputs (stacked with correlated outputs), their mask for the real
        tasks, and the task slots."""
        if self.n_joint_outputs > 1:
            x_pred = stack_rows(x_pred, self.n_joint_outputs)
        return x_pred.x, x_pred.rows[: x_pred.n_tasks], x_pred.n_slots

    @staticmethod
    def _pad_obs(obs: Padded, n_slots: int) -> Padded:
        """Observations in ``n_slots`` task slots."""
        if obs.n_slots != n_slots:
            obs = take(obs, np.arange(obs.n_tasks), n_slots=n_slots)
        return obs

    def _finish(self, mean, cov, tau, real: np.ndarray, full_cov: FullCov):
        """Device results -> the caller's layout, zero on empty row slots."""
        p, m = real.shape
        mean = np.swapaxes(np.asarray(mean), 1, 2)[:p, :m]  # (P, M, O)
        cov = np.asarray(cov)[:p, :, :m, :m]
        mean = np.where(real[..., None], mean, 0.0)
        both = real[:, None, :, None] & real[:, None, None, :]
        cov = np.where(both, cov, 0.0)
        tau = np.asarray(tau)[:p, : self.n_clusters]  # padded clusters dropped
        if full_cov:
            spread = cov
        else:
            var = np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 0.0)  # (P, O, M)
            spread = np.swapaxes(var, 1, 2)
        o = self.n_joint_outputs
        if o > 1:
            return mean.reshape(p, -1, o), unstack_spread(spread, o, full_cov), tau
        return mean, spread, tau

    def predict_training_tasks(
        self,
        task_index: np.ndarray,
        x_pred: Padded,
        *,
        include_noise: bool = True,
        full_cov: FullCov = False,
    ):
        """Predictive of training tasks ``task_index`` (model rows) at the rows of
        ``x_pred`` (one task each).

        Returns ``(mean (P, N, O), var (P, N, O) or cov, tau (P, K))`` for the ``P``
        tasks and ``N`` row slots of ``x_pred``, zero on empty slots: ``cov`` is ``(P, O,
        N, N)`` (``full_cov=True``), or ``(P, N, O, N, O)`` with correlated outputs and
        ``full_cov="joint"``.
        """
        task_index = np.asarray(task_index, dtype=np.int64)
        with runtime.jax_scope():
            xp, real, pb = self._pad_pred(x_pred)
            idx = np.zeros(pb, dtype=np.int32)
            idx[: task_index.size] = task_index
            xo = np.asarray(self.model.tasks.x)[idx]
            extension = self._extension()
            model = self._training_model()

            def run(group: InputGroup, slots: np.ndarray):
                io, ip = group.index
                return core_predict.predict_training_tasks(
                    model,
                    extension,
                    to_device(group.inputs),
                    group.shared,
                    to_device(idx[slots]),
                    to_device(io),
                    to_device(ip),
                    include_noise,
                )

            mean, cov = self._over_groups([xo, xp], run)
            return self._finish(mean, cov, self.tau[idx], real, full_cov)

    def condition(self, obs: Padded) -> Context:
        """Memberships (and own hyperparameters when task hyperparameters are not
        shared) of new tasks observed as ``obs``."""
        if self.n_joint_outputs > 1:
            obs = stack_observed(obs)
        p, slots_all = obs.n_tasks, obs.n_slots
        model = self._new_task_model()
        own_params = model.params.log_noise.shape[0] > 1
        with runtime.jax_scope():
            extension = self._extension()
            start = jax.tree.map(_host, self._typical_task_params(slots_all))
            leaves, treedef = jax.tree.flatten(start)
            rows = [i for i, leaf in enumerate(leaves) if _leading(leaf) == slots_all]

            def run(group: InputGroup, slots: np.ndarray):
                (io,) = group.index
                u, io, shared = to_device(group.inputs), to_device(io), group.shared
                yo, mo = to_device(obs.y[slots]), to_device(obs.observed[slots])
                params = _task_rows(start, slots_all, slots)
                if own_params:
                    params = core_predict.fit_new_tasks_params(
                        model, extension, u, shared, params, io, yo, mo, self.config.max_steps
                    )
                tau = core_predict.new_task_memberships(
                    model, extension, u, shared, params, io, yo, mo
                )
                fitted = jax.tree.leaves(params)
                return [tau, *(fitted[i] for i in rows)]

            tau, *fitted = self._over_groups([obs.x], run)
            for i, leaf in zip(rows, fitted, strict=True):
                leaves[i] = leaf[:p]
            params_np = jax.tree.unflatten(treedef, leaves)
            return Context(tasks=obs, tau=tau[:p, : self.n_clusters], task_params=params_np)

    def predict_new_tasks(
        self,
        context: Context | list[Context] | None,
        x_pred: Padded,
        *,
        include_noise: bool = True,
        full_cov: FullCov = False,
    ):
        """Predictive of new tasks from their context (one per task of ``x_pred``, or a
        list of single-task contexts; None: tasks with no data at all); same shapes as
        :meth:`predict_training_tasks`."""
        if isinstance(context, list):
            context = Context.stack(context)
        model = self._new_task_model()
        with runtime.jax_scope():
            xp, real, pb = self._pad_pred(x_pred)
            if context is None:
                inputs = np.asarray(self.model.grid[0])
                obs = empty(x_pred.n_tasks, inputs, self.n_outputs)
                task_params = jax.tree.map(_host, self._typical_task_params(pb))
            else:
                obs = context.tasks
                task_params = jax.tree.map(
                    lambda a: _fill_slots(a, pb) if isinstance(a, np.ndarray) else a,
                    context.task_params,
                )
            obs = self._pad_obs(obs, pb)
            extension = self._extension()

            def run(group: InputGroup, slots: np.ndarray):
                io, ip = group.index
                return core_predict.predict_new_tasks(
                    model,
                    extension,
                    to_device(group.inputs),
                    group.shared,
                    _task_rows(task_params, pb, slots),
                    to_device(io),
                    to_device(obs.y[slots]),
                    to_device(obs.observed[slots]),
                    to_device(ip),
                    include_noise,
                )

            mean, cov, tau = self._over_groups([obs.x, xp], run)
            return self._finish(mean, cov, tau, real, full_cov)

    def predict_tasks(
        self,
        x_pred: Padded,
        train_rows: np.ndarray,
        contexts: list[Context | None],
        *,
        include_noise: bool = True,
        full_cov: FullCov = False,
    ):
        """Predictive of any tasks at the rows of ``x_pred``.

        Task ``p`` is the training task of model row ``train_rows[p]`` when that is at
        least 0, else the new task of ``contexts[p]``, else a task never seen (the
        cluster mixture). Returns ``(mean, var or cov, tau)`` as
        :meth:`predict_training_tasks`.
        """
        p, m = x_pred.n_tasks, x_pred.n_rows
        o = self.n_joint_outputs if self.n_joint_outputs > 1 else self.n_outputs
        mean = np.zeros((p, m, o))
        if full_cov == "joint":
            spread = np.zeros((p, m, o, m, o))
        elif full_cov:
            spread = np.zeros((p, o, m, m))
        else:
            spread = np.zeros((p, m, o))
        tau = np.zeros((p, self.n_clusters))
        known = np.array([c is not None for c in contexts], dtype=bool)
        kw = {"include_noise": include_noise, "full_cov": full_cov}

        def rows_of(t: np.ndarray) -> Padded:
            return take(x_pred, np.flatnonzero(t))

        groups = [
            (
                train_rows >= 0,
                lambda t: self.predict_training_tasks(train_rows[t], rows_of(t), **kw),
            ),
            (
                (train_rows < 0) & known,
                lambda t: self.predict_new_tasks(
                    [contexts[i] for i in np.flatnonzero(t)], rows_of(t), **kw
                ),
            ),
            (
                (train_rows < 0) & ~known,
                lambda t: self.predict_new_tasks(None, rows_of(t), **kw),
            ),
        ]
        for rows, run in groups:
            if rows.any():
                mean[rows], spread[rows], tau[rows] = run(rows)
        return mean, spread, tau

    def sample(self, mean: np.ndarray, cov: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
        """Draws from ``N(mean, cov)`` per task and output: ``(P, Np, O, n_samples)``.

        ``mean`` is (P, Np, O) and ``cov`` (P, O, Np, Np), or (P, Np, O, Np, O) with
        correlated outputs (the outputs are then drawn jointly); padded rows (zero
        variance) give the mean. The factorisation is an eigendecomposition so that
        singular covariances (noise-free predictions at repeated inputs) still sample.
        """
        if cov.ndim == 5:
            p, m, o = mean.shape
            flat = cov.reshape(p, 1, m * o, m * o)
            return self.sample(mean.reshape(p, m * o, 1), flat, n_samples, seed).reshape(
                p, m, o, -1
            )
        rng = np.random.default_rng(seed)
        p, m, o = mean.shape
        vals, vecs = np.linalg.eigh(cov)
        root = vecs * np.sqrt(np.maximum(vals, 0.0))[..., None, :]
        z = rng.standard_normal((p, o, m, n_samples))
        draws = root @ z  # (P, O, M, S)
        return np.swapaxes(draws, 1, 2) + mean[..., None]
