"""Hyperparameter containers and batched kernels of :mod:`mimosa_sklearn.core.params`.

Proven against numpy loops and closed forms:

* ``to_float64``/``stack_module`` cast and broadcast the floating leaves only, and
  ``batch_shape``/``index_module`` read and index their leading (sharing) axes;
* ``eval_kernel``/``eval_mean`` evaluate one kernel or mean per index of the leading
  axes, each with its own values (squared exponential and affine mean by hand);
* ``task_covariance_one``, ``per_task_params`` and ``task_covariances`` give
  ``s_theta(x_i, x_i) + sigma^2 I`` of every task, shared (``T* = 1``) or per task;
* ``prior_on_grid`` jitters the real block by ``jitter * max(mean diag, 1)``, puts the
  identity on padded grid points and factorises; ``prior_means_on_grid`` is 0 there;
* ``shared_fast_path`` needs both shared inputs and ``T* = 1``; the two ``TaskBatch``
  flags are static (part of the tree structure, never leaves).
"""

from __future__ import annotations

import dataclasses

import core_reference as ref
import equinox as eqx
import jax
import jax.numpy as jnp
import kernax
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import params as pm
from mimosa_sklearn.core.compile import jit

T, N, K, NOUT = 3, 4, 2, 2

eval_kernel = jit(pm.eval_kernel)
eval_mean = jit(pm.eval_mean)
task_covariances = jit(pm.task_covariances)
task_covariance_one = jit(pm.task_covariance_one)
prior_on_grid = jit(pm.prior_on_grid)


class _Mixed(eqx.Module):
    """A module with a float array, an integer array and a Python float."""

    weights: jax.Array
    index: jax.Array
    scale: float


def _se_kernel(rng, shape):
    """``variance * SE`` stacked to ``shape`` with distinct random values per index."""
    var, ls = rng.uniform(0.5, 2.0, shape), rng.uniform(0.5, 2.0, shape)
    kernel = pm.stack_module(kernax.VarianceKernel(1.0) * kernax.SEKernel(1.0), shape)
    kernel = eqx.tree_at(
        lambda k: (k.left._variance, k.right._length_scale),
        kernel,
        (jnp.log(var), jnp.log(ls)),
    )
    return kernel, var, ls


# --------------------------------------------------------------------------- modules


def test_to_float64_casts_floating_leaves_and_nothing_else():
    with jax.enable_x64(False):  # a kernel built without x64 holds float32
        kernel = kernax.VarianceKernel(2.0) * kernax.SEKernel(1.5)
    assert kernel.left._variance.dtype == jnp.float32
    cast = pm.to_float64(kernel)
    for a, b in zip(jax.tree.leaves(cast), jax.tree.leaves(kernel), strict=True):
        assert a.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b, np.float64))
    mixed = pm.to_float64(_Mixed(np.ones(2, np.float32), np.arange(3), 0.5))
    assert mixed.weights.dtype == jnp.float64
    assert mixed.index.dtype == np.arange(3).dtype and mixed.scale == 0.5


def test_stack_module_broadcasts_floating_leaves_to_the_leading_shape():
    mixed = _Mixed(np.array([1.0, 2.0], np.float32), np.arange(3), 0.5)
    stacked = pm.stack_module(mixed, (2, 3))
    assert stacked.weights.shape == (2, 3, 2) and stacked.weights.dtype == jnp.float64
    np.testing.assert_array_equal(
        np.asarray(stacked.weights), np.broadcast_to([1.0, 2.0], (2, 3, 2))
    )
    assert stacked.index.shape == (3,) and stacked.scale == 0.5
    assert pm.batch_shape(stacked, 2) == (2, 3)
    assert pm.batch_shape(stacked, 1) == (2,)
    # A module without floating leaves is shared along every axis.
    assert pm.batch_shape(kernax.ZeroMean(), 2) == (1, 1)


def test_index_module_indexes_the_floating_leaves():
    rng = np.random.default_rng(0)
    kernel, var, ls = _se_kernel(rng, (2, 3))
    one = pm.index_module(kernel, (1, 2))
    np.testing.assert_allclose(float(one.left.variance), var[1, 2], rtol=1e-14)
    np.testing.assert_allclose(float(one.right.length_scale), ls[1, 2], rtol=1e-14)
    row = pm.index_module(kernel, 0)
    np.testing.assert_allclose(np.asarray(row.right.length_scale), ls[0], rtol=1e-14)


# --------------------------------------------------------------------------- evaluation


def test_eval_kernel_evaluates_every_stacked_kernel_with_its_own_values():
    rng = np.random.default_rng(1)
    kernel, var, ls = _se_kernel(rng, (2, 3))
    x1, x2 = rng.normal(size=(4, 2)), rng.normal(size=(5, 2))
    got = np.asarray(eval_kernel(kernel, 2, jnp.asarray(x1), jnp.asarray(x2)))
    assert got.shape == (2, 3, 4, 5)
    for k in range(2):
        for o in range(3):
            np.testing.assert_allclose(got[k, o], ref.se(x1, x2, var[k, o], ls[k, o]), rtol=1e-12)


def test_eval_mean_evaluates_every_stacked_mean_with_its_own_values():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 2))
    slope, intercept = rng.normal(size=(K, NOUT, 2)), rng.normal(size=(K, NOUT))
    affine = pm.stack_module(kernax.AffineMean(np.zeros(2), 0.0), (K, NOUT))
    affine = eqx.tree_at(lambda m: (m.slope, m.intercept), affine, (slope, intercept))
    got = np.asarray(eval_mean(affine, 2, jnp.asarray(x)))
    np.testing.assert_allclose(got, slope @ x.T + intercept[..., None], rtol=1e-12)
    # A constant is broadcast to every input.
    const = pm.stack_module(kernax.ConstantMean(0.0), (K, 1))
    const = eqx.tree_at(lambda m: m.constant, const, jnp.asarray([[1.5], [-2.0]]))
    got = np.asarray(eval_mean(const, 2, jnp.asarray(x)))
    np.testing.assert_array_equal(got, np.broadcast_to([[[1.5]], [[-2.0]]], (K, 1, 5)))


def test_eval_mean_of_a_mean_without_parameters_is_zero():
    got = pm.eval_mean(kernax.ZeroMean(), 2, jnp.ones((3, 1)))
    assert got.shape == (1, 1, 3)  # size-1 leading axes: shared by every cluster and output
    np.testing.assert_array_equal(np.asarray(got), 0.0)


# --------------------------------------------------------------------------- task covariances


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(3).normal(size=(T, N, 1))


def _task_params(shared_task: bool):
    layout = SharingLayout.from_flags(
        T,
        K,
        NOUT,
        shared_task_hps=shared_task,
        cluster_specific_task_hps=True,
        shared_output_hps=False,
    )
    return ref.random_params(np.random.default_rng(4), layout)


def _np_task_covs(vals: ref.NpParams, x: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            [[vals.task_cov(i, k, o, x[i]) for o in range(NOUT)] for k in range(K)]
            for i in range(x.shape[0])
        ]
    )


@pytest.mark.parametrize("shared_task", [True, False])
def test_task_covariances_are_kernel_plus_noise_of_every_task(inputs, shared_task):
    params, vals = _task_params(shared_task)
    got = np.asarray(task_covariances(params, jnp.asarray(inputs)))
    assert got.shape == (T, K, NOUT, N, N)
    np.testing.assert_allclose(got, _np_task_covs(vals, inputs), rtol=1e-12)
    if not shared_task:  # the test can tell tasks apart
        assert not np.allclose(got[0], got[1])


@pytest.mark.parametrize("shared_task", [True, False])
def test_per_task_params_give_each_task_its_own_covariance(inputs, shared_task):
    params, vals = _task_params(shared_task)
    xs, get = pm.per_task_params(params)
    assert (xs is None) == shared_task
    want = _np_task_covs(vals, inputs)
    for i in range(T):
        xs_i = None if xs is None else jax.tree.map(lambda a, i=i: a[i], xs)
        kernel, log_noise = get(xs_i)
        assert log_noise.shape == (K, NOUT)
        got = np.asarray(task_covariance_one(kernel, log_noise, jnp.asarray(inputs[i])))
        np.testing.assert_allclose(got, want[i], rtol=1e-12)


@pytest.mark.parametrize(
    ("shared_inputs", "tt", "expected"), [(True, 1, True), (True, T, False), (False, 1, False)]
)
def test_shared_fast_path_needs_shared_inputs_and_shared_task_parameters(
    shared_inputs, tt, expected
):
    params, _ = ref.random_params(
        np.random.default_rng(5), SharingLayout((1, 1), (1, 1), (tt, 1, 1))
    )
    grid = np.linspace(0.0, 1.0, N)[:, None]
    tasks = ref.make_tasks(np.random.default_rng(6), T, N, grid, 2, N)
    batch = dataclasses.replace(ref.to_batch(tasks), shared_inputs=shared_inputs)
    assert pm.shared_fast_path(params, batch) is expected


def test_task_batch_flags_are_static():
    grid = np.linspace(0.0, 1.0, N)[:, None]
    batch = ref.to_batch(ref.make_tasks(np.random.default_rng(7), T, N, grid, 2, N))
    flagged = dataclasses.replace(batch, shared_inputs=True, task_chunk=2)
    # Same leaves, different tree structure: jit compiles one program per flag value.
    assert len(jax.tree.leaves(batch)) == len(jax.tree.leaves(flagged)) == 7
    assert jax.tree.structure(batch) != jax.tree.structure(flagged)


# --------------------------------------------------------------------------- prior on the grid


def test_prior_on_grid_jitters_the_real_block_and_masks_padded_points():
    # One cluster with a mean diagonal below 1 (jitter floor) and one above.
    grid = np.linspace(0.0, 3.0, 5)[:, None]
    gmask = np.array([True, True, True, False, True])
    layout = SharingLayout((K, 1), (K, 1), (1, 1, 1))
    vals = ref.NpParams(
        mean_var=np.array([[0.5], [3.0]]),
        mean_ls=np.array([[1.2], [0.8]]),
        prior=np.array([[0.7], [-1.1]]),
        task_var=np.ones((1, 1, 1)),
        task_ls=np.ones((1, 1, 1)),
        noise=np.ones((1, 1, 1)),
    )
    params = ref.params_from_values(layout, vals)
    jitter = 1e-2
    cov, mean, chol = (
        np.asarray(a) for a in prior_on_grid(params, jnp.asarray(grid), jnp.asarray(gmask), jitter)
    )
    real = grid[gmask]
    for k, eps in enumerate([jitter * 1.0, jitter * 3.0]):
        want = np.eye(5)
        want[np.ix_(gmask, gmask)] = vals.mean_cov(k, 0, real, real) + eps * np.eye(4)
        np.testing.assert_allclose(cov[k, 0], want, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(chol[k, 0] @ chol[k, 0].T, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(np.triu(chol[k, 0], 1), 0.0)
        np.testing.assert_allclose(mean[k, 0], np.where(gmask, vals.prior[k, 0], 0.0), rtol=1e-15)
    direct = pm.prior_means_on_grid(params.prior_mean, jnp.asarray(grid), jnp.asarray(gmask))
    np.testing.assert_array_equal(np.asarray(direct), mean)
