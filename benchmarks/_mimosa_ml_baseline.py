"""Adapter running the ``mimosa-ml`` package (import name ``mimosa``) for benchmarks/speed.py.

``mimosa-ml`` is an independent JAX implementation of MagmaClust. It is an optional,
benchmark-only dependency, never a dependency of ``mimosa_sklearn``::

    pip install --pre --no-deps mimosa-ml==0.5.0a0
    pip install beartype jax-tqdm polars matplotlib   # its remaining requirements

This module only *calls* mimosa-ml's public API (``mimosa`` and ``mimosa.pipelines``).

Settings (chosen to match ``MagmaClusterRegressor(n_clusters=3, max_iter=iters, tol=0)``
with its defaults, as speed.py runs it):

- Model: ``mimosa.pipelines.TrainTestPipeline``, mimosa-ml's own "most common setting"
  layer over ``mimosa.BasicModel``, with its defaults: K = 3 clusters; zero prior mean;
  ``variance * SE`` cluster and task kernels plus white observation noise (initial guess
  variance 1 / 0.5, length scale 0.2, noise 0.1, on scaled data); every hyperparameter
  shared across tasks, clusters and channels, no cluster-specific task hyperparameters
  (``mimosa.pipelines.DEFAULT_MODEL_CONFIG``); heterotopic tasks. Ours, by default:
  the same sharing, a learned constant prior mean per cluster, a data-driven
  ``variance * SE`` initial guess.
- Scaling: inputs min-max scaled to [0, 1] and outputs standardised on the training
  data (``mimosa.Scaler``); ours standardises the outputs (``normalize_y=True``).
- Grid: the exact union of the training inputs (``mimosa.UnionGrid``), like ours with
  ``grid=None``: G = 201 here.
- Initialisation: soft k-means of per-task (min, max, mean, std) summaries, 64 restarts
  (``mimosa.KMeansMixtureInitialiser`` defaults), seeded with ``jax.random.PRNGKey(seed)``;
  ours: k-means, ``n_init=1``.
- Iterations: ``BasicModel.fit`` runs a ``jax.lax.fori_loop`` of exactly ``n_iter``
  VEM iterations (M-step: two L-BFGS solves, atol = rtol = 1e-3; E-step: hyperposterior
  and responsibilities), with no convergence test at all, so ``iters`` iterations are
  always run (``mimosa.EarlyStoppingModel`` is the variant that stops early; not used).
  mimosa-ml does not compute the ELBO in this loop.
- Precision: run under ``jax.enable_x64(True)`` (float64, like ours). mimosa-ml itself
  follows JAX's global setting, float32 by default.
- Device/threads: whatever backend the process already has. Import ``mimosa_sklearn``
  first: this module calls its CPU-thread guard before importing ``mimosa`` (whose
  import creates the JAX backend), so both packages run on the same backend.
- Blocking: ``fit_mimosa_ml`` waits (``jax.block_until_ready``) for the fitted
  hyperposterior, mixture and hyperparameters; ``predict_mimosa_ml`` returns numpy.
- Progress bar: mimosa-ml's ``fit`` always draws a ``jax_tqdm`` bar on stderr (there is
  no switch for it); it is left on, as mimosa-ml ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from mimosa_sklearn.core.runtime import ensure_safe_cpu_backend

__all__ = ["MimosaMLFit", "fit_mimosa_ml", "predict_mimosa_ml"]

TASK_COL = "ID"
INPUT_COLS = ("Input",)


def _mimosa():
    """Import mimosa-ml after the CPU guard: its import creates the JAX backend."""
    ensure_safe_cpu_backend()
    import mimosa
    import mimosa.pipelines

    return mimosa


def _padded_arrays(
    X: pd.DataFrame, y: pd.Series | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long format -> (task ids, inputs (T, N, I), outputs (T, N, 1)), NaN-padded.

    Tasks keep their order of first appearance; rows keep their order inside a task.
    """
    inputs_long = X[list(INPUT_COLS)].to_numpy(dtype=np.float64)
    outputs_long = np.full(len(X), np.nan) if y is None else np.asarray(y, dtype=np.float64).ravel()
    codes, ids = pd.factorize(X[TASK_COL], sort=False)
    position = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    n_tasks, n_max = len(ids), int(position.max()) + 1
    inputs = np.full((n_tasks, n_max, len(INPUT_COLS)), np.nan)
    outputs = np.full((n_tasks, n_max, 1), np.nan)
    inputs[codes, position] = inputs_long
    outputs[codes, position, 0] = outputs_long
    return np.asarray(ids), inputs, outputs


def _dataset(mimosa, inputs: np.ndarray, outputs: np.ndarray):
    return mimosa.Dataset(inputs=jnp.asarray(inputs), outputs=jnp.asarray(outputs))


@dataclass
class MimosaMLFit:
    """A fitted mimosa-ml pipeline and the training task ids, in its task order."""

    pipeline: Any
    task_ids: np.ndarray


def fit_mimosa_ml(
    X: pd.DataFrame, y: pd.Series, iters: int, *, n_clusters: int = 3, seed: int = 0
) -> MimosaMLFit:
    """Fit mimosa-ml's MagmaClust for exactly ``iters`` EM iterations; block until done.

    ``X`` holds the task column ``"ID"`` and the input column ``"Input"``, ``y`` the
    output, one row per observation (as ``mimosa_sklearn.datasets.make_magma_data``
    returns them). See the module docstring for the settings.
    """
    mimosa = _mimosa()
    with jax.enable_x64(True):
        task_ids, inputs, outputs = _padded_arrays(X, y)
        pipeline = mimosa.pipelines.TrainTestPipeline(
            n_clusters=n_clusters,
            prng_key=jax.random.PRNGKey(seed),
            n_iter=int(iters),
            # Noisy predictions, like MagmaClusterRegressor.predict's include_noise=True.
            predictor=mimosa.ObservationPredictor(),
        )
        pipeline.load_train_data(_dataset(mimosa, inputs, outputs)).fit()
        jax.block_until_ready((pipeline.parameters, pipeline.mixture.responsibilities))
    return MimosaMLFit(pipeline=pipeline, task_ids=task_ids)


@eqx.filter_jit
def _predict_core(model, mixture, parameters, train, test, pool, test_grid, where):
    """Jitted prediction steps (mimosa-ml's own pipeline runs them eagerly)."""
    hyperposterior = model.hyperpost(train, pool, mixture, parameters)
    test_mixture = model.mixture_updater(
        test,
        test_grid,
        parameters.task_kernel + parameters.noise_kernel,
        hyperposterior,
        mixture,
    )
    pred = model.predictor(test, test_grid, hyperposterior, parameters)  # (T, K, 1, P)
    t_idx = jnp.arange(where.shape[0])[:, None]
    mean = pred.mean[:, :, 0, :][t_idx, :, where]  # (T, M, K)
    var = jnp.diagonal(pred.covariance[:, :, 0], axis1=-2, axis2=-1)[t_idx, :, where]
    weights = test_mixture.responsibilities[:, None, :]  # (T, 1, K)
    mix_mean = jnp.sum(weights * mean, axis=-1)
    mix_var = jnp.sum(weights * (var + mean**2), axis=-1) - mix_mean**2
    return mix_mean, mix_var


def predict_mimosa_ml(
    fitted: MimosaMLFit,
    X_obs: pd.DataFrame,
    y_obs: pd.Series,
    X_target: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray]:
    """Condition new tasks on ``(X_obs, y_obs)`` and forecast them at ``X_target``.

    Every task of ``X_target`` must have rows in ``X_obs``. Mirrors
    ``TrainTestPipeline.predict`` without its extra 200-point plotting grid: the fitted
    mean processes are recomputed on the pool of training, observed and target inputs,
    the new tasks' memberships are derived from their observations (fitted mixture
    weights as the prior), and each task is predicted on the whole pool under every
    cluster (mimosa-ml's predictor always returns full pool-by-pool covariances) before
    the target points are picked out.

    Returns the cluster-mixture predictive mean and standard deviation (observation
    noise included) of every row of ``X_target``, in its row order, as numpy arrays.
    """
    mimosa = _mimosa()
    pipe = fitted.pipeline
    scaler = pipe.scaler
    with jax.enable_x64(True):
        obs_ids, obs_inputs, obs_outputs = _padded_arrays(X_obs, y_obs)
        task_pos = {task: t for t, task in enumerate(obs_ids)}
        codes = X_target[TASK_COL].map(task_pos)
        if codes.isna().any():
            raise ValueError("Every target task needs observations in X_obs.")
        codes = codes.to_numpy(dtype=np.int64)
        _, target_inputs, _ = _padded_arrays(X_target.assign(**{TASK_COL: codes}), None)
        # Padded per task in X_target's order of tasks; re-index them onto X_obs's order.
        target_order = pd.unique(codes)
        aligned = np.full((len(obs_ids),) + target_inputs.shape[1:], np.nan)
        aligned[target_order] = target_inputs
        target_rank = pd.Series(codes).groupby(codes).cumcount().to_numpy()

        train = scaler.scale(pipe.train_data)
        test = scaler.scale(_dataset(mimosa, obs_inputs, obs_outputs))
        target = scaler.scale(_dataset(mimosa, aligned, np.full(aligned.shape[:2] + (1,), np.nan)))

        pool = mimosa.MergedGrid(
            mimosa.UnionGrid(train.inputs),
            mimosa.UnionGrid(test.inputs),
            mimosa.UnionGrid(target.inputs),
        )
        mapper = mimosa.ExactInputMapper()
        test_grid = mimosa.Grid(points=pool.points, mappings=mapper(pool.points, test.inputs))
        where = mapper(pool.points, target.inputs)  # (T, M): pool index of each target
        mix_mean, mix_var = _predict_core(
            pipe.model, pipe.mixture, pipe.parameters, train, test, pool, test_grid, where
        )
        mix_mean = np.asarray(mix_mean * scaler.sd[0] + scaler.mu[0])
        mix_std = np.asarray(jnp.sqrt(jnp.maximum(mix_var, 0.0)) * scaler.sd[0])
    return mix_mean[codes, target_rank], mix_std[codes, target_rank]
