"""Default kernels and the sharing layout (:mod:`mimosa_sklearn._kernels`).

Proven against closed forms:

* ``SharingLayout.from_flags`` maps each of the 16 flag combinations to the leading
  shapes of ALGORITHM.md §1.2;
* ``default_kernel`` is ``v exp(-|x - x'|^2 / 2 l^2)`` with one input and the ARD form
  ``v exp(-sum_d (x_d - x'_d)^2 / 2 l_d^2)`` with several, where only ``v`` and the
  ``l_d`` are trainable; ``default_prior_mean`` is the constant;
* ``build_params`` stacks every group to its layout in float64, with the log noise and
  optional per-cluster starting constants;
* ``kernel_hyperparameters`` reads the constrained values by path and
  ``count_trainable`` counts the trainable scalars of stacked modules;
* ``default_params``/``correlated_params`` start from the data: kernel variances and
  noise from the output variances, length scales from the input span, and prior
  constants at the membership-weighted output averages of every cluster (independent
  outputs), or output variances on the diagonal of ``B`` (correlated outputs).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import kernax
import numpy as np
import pytest
from padded_tasks import from_nan

from mimosa_sklearn._kernels import (
    SharingLayout,
    build_params,
    correlated_params,
    count_trainable,
    default_kernel,
    default_params,
    default_prior_mean,
    kernel_hyperparameters,
)
from mimosa_sklearn.core import runtime
from mimosa_sklearn.core.params import index_module

T, K, NOUT = 5, 3, 2


@pytest.fixture(autouse=True)
def _float64():
    with runtime.jax_scope():
        yield


@pytest.mark.parametrize(
    ("shared_task", "shared_cluster", "cluster_specific", "shared_output"),
    list(itertools.product([True, False], repeat=4)),
)
def test_layout_from_flags(shared_task, shared_cluster, cluster_specific, shared_output):
    layout = SharingLayout.from_flags(
        T,
        K,
        NOUT,
        shared_task_hps=shared_task,
        shared_cluster_hps=shared_cluster,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=shared_output,
    )
    o = 1 if shared_output else NOUT
    assert layout.mean == (1 if shared_cluster else K, o)
    assert layout.prior == (K, o)  # one prior mean per cluster, always
    assert layout.task == (1 if shared_task else T, K if cluster_specific else 1, o)


def test_layout_defaults_share_everything_but_the_prior_means():
    assert SharingLayout.from_flags(T, K, NOUT) == SharingLayout((1, 1), (K, 1), (1, 1, 1))


def test_default_kernel_with_one_input_is_a_scaled_squared_exponential():
    kernel = default_kernel(2.5, np.array([0.7]), 1)
    x1, x2 = np.linspace(-1.0, 2.0, 4)[:, None], np.array([[0.0], [3.0]])
    got = np.asarray(kernel(jnp.asarray(x1), jnp.asarray(x2)))
    np.testing.assert_allclose(got, 2.5 * np.exp(-0.5 * (x1 - x2.T) ** 2 / 0.7**2), rtol=1e-12)
    assert count_trainable(kernel) == 2


def test_default_kernel_with_several_inputs_has_ard_length_scales():
    rng = np.random.default_rng(0)
    scales = np.array([0.5, 2.0, 1.0])
    kernel = default_kernel(1.7, scales, 3)
    x1, x2 = rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    d2 = (((x1[:, None] - x2[None]) / scales) ** 2).sum(-1)
    got = np.asarray(kernel(jnp.asarray(x1), jnp.asarray(x2)))
    np.testing.assert_allclose(got, 1.7 * np.exp(-0.5 * d2), rtol=1e-12)
    # Variance + one length scale per input; the inner unit length scale is fixed.
    assert count_trainable(kernel) == 1 + 3
    # A scalar length scale is used for every input.
    iso = default_kernel(1.0, 0.8, 2)
    np.testing.assert_allclose(
        np.asarray(kernel_hyperparameters(iso)["right.length_scales"]), [0.8, 0.8], rtol=1e-14
    )


def test_default_prior_mean_is_the_constant():
    got = np.asarray(default_prior_mean(-0.4)(jnp.zeros((3, 2))))
    np.testing.assert_array_equal(np.broadcast_to(got, (3,)), -0.4)
    assert count_trainable(default_prior_mean()) == 1


def test_build_params_stacks_every_group_to_its_layout():
    layout = SharingLayout.from_flags(
        T, K, NOUT, shared_task_hps=False, shared_cluster_hps=False, shared_output_hps=False
    )
    kernel = default_kernel(1.5, 0.9, 1)
    noise = np.linspace(0.1, 0.5, T)[:, None, None]  # one noise per task
    prior_values = np.arange(K * NOUT, dtype=float).reshape(K, NOUT)
    params = build_params(layout, kernel, default_prior_mean(0.0), kernel, noise, prior_values)
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == jnp.float64
    for leaf in jax.tree.leaves(params.mean_kernel):
        assert leaf.shape == layout.mean
    for leaf in jax.tree.leaves(params.task_kernel):
        assert leaf.shape == layout.task
    np.testing.assert_allclose(np.asarray(params.mean_kernel.left.variance), 1.5, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(params.task_kernel.right.length_scale), 0.9, rtol=1e-14)
    np.testing.assert_allclose(
        np.asarray(params.log_noise), np.log(np.broadcast_to(noise, layout.task)), rtol=1e-14
    )
    np.testing.assert_array_equal(np.asarray(params.prior_mean.constant), prior_values)
    assert count_trainable(params.mean_kernel) == 2 * K * NOUT
    assert count_trainable(params.task_kernel) == 2 * T * NOUT


def test_build_params_without_prior_values_broadcasts_the_mean():
    layout = SharingLayout.from_flags(T, K, NOUT)
    kernel = default_kernel(1.0, 1.0, 1)
    params = build_params(layout, kernel, default_prior_mean(0.25), kernel, 0.1)
    np.testing.assert_array_equal(np.asarray(params.prior_mean.constant), np.full((K, 1), 0.25))
    np.testing.assert_allclose(np.asarray(params.log_noise), np.full((1, 1, 1), np.log(0.1)))
    # Per-cluster starting values only apply to a constant mean; others are broadcast.
    affine = build_params(
        layout, kernel, kernax.AffineMean(0.5, -1.0), kernel, 0.1, np.ones((K, 1))
    )
    np.testing.assert_array_equal(np.asarray(affine.prior_mean.slope), np.full((K, 1), 0.5))
    np.testing.assert_array_equal(np.asarray(affine.prior_mean.intercept), np.full((K, 1), -1.0))


def test_kernel_hyperparameters_read_constrained_values_by_path():
    kernel = kernax.VarianceKernel(2.0) * kernax.SEKernel(1.5)
    hps = kernel_hyperparameters(kernel)
    assert set(hps) == {"left.variance", "right.length_scale"}
    np.testing.assert_allclose(hps["left.variance"], 2.0, rtol=1e-14)  # not log(2)
    np.testing.assert_allclose(hps["right.length_scale"], 1.5, rtol=1e-14)
    ard = kernel_hyperparameters(default_kernel(3.0, [1.0, 4.0], 2))
    np.testing.assert_allclose(ard["right.length_scales"], [1.0, 4.0], rtol=1e-14)
    np.testing.assert_allclose(ard["left.variance"], 3.0, rtol=1e-14)
    assert kernel_hyperparameters(kernax.ConstantMean(0.3)) == {"constant": np.asarray(0.3)}


# --------------------------------------------------------------------------- starting values


@pytest.fixture(scope="module")
def start_data():
    """Three tasks, one padded (NaN) row, holes, soft memberships over two clusters."""
    x = np.array([[0.0, 1.0, 2.0, np.nan], [0.5, 1.5, 4.0, 3.0], [1.0, 2.0, 3.0, np.nan]])[
        ..., None
    ]
    y = np.array(
        [
            [[1.0, 10.0], [2.0, 11.0], [3.0, 12.0], [0.0, 0.0]],
            [[-1.0, 5.0], [-2.0, 6.0], [0.0, 7.0], [1.0, 8.0]],
            [[4.0, 2.0], [5.0, 3.0], [6.0, 4.0], [0.0, 0.0]],
        ]
    )
    obs = ~np.isnan(x) & np.ones((1, 1, 2), bool)
    obs[1, 0, 1] = obs[2, 2, 0] = False
    y0 = np.where(obs, y, 0.0)
    tau = np.array([[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]])
    # Membership-weighted average of every observed value, per cluster and output.
    levels = np.zeros((2, 2))
    for k in range(2):
        for o in range(2):
            num = sum(tau[i, k] * y0[i, obs[i, :, o], o].sum() for i in range(3))
            den = sum(tau[i, k] * obs[i, :, o].sum() for i in range(3))
            levels[k, o] = num / den
    var = np.array([np.var(y0[..., o][obs[..., o]]) for o in range(2)])
    tasks = from_nan(x, np.where(obs, y, np.nan))
    return tasks, tau, levels, var, 4.0  # input span 0..4


@pytest.mark.parametrize("shared_output", [True, False])
def test_default_params_start_from_the_data(start_data, shared_output):
    tasks, tau, levels, var, span = start_data
    layout = SharingLayout.from_flags(3, 2, 2, shared_output_hps=shared_output)
    params = default_params(layout, tasks, tau)
    v = var.mean()
    np.testing.assert_allclose(np.asarray(params.mean_kernel.left.variance), v, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(params.mean_kernel.right.length_scale), span / 4)
    np.testing.assert_allclose(np.asarray(params.task_kernel.left.variance), v / 4, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(params.task_kernel.right.length_scale), span / 10)
    np.testing.assert_allclose(np.asarray(params.log_noise), np.log(0.05 * v), rtol=1e-12)
    # One constant per cluster: the average of the per-output levels when outputs share it.
    want = levels.mean(1, keepdims=True) if shared_output else levels
    np.testing.assert_allclose(np.asarray(params.prior_mean.constant), want, rtol=1e-12)
    # A kernel given by the user is used as it is.
    own = default_params(
        layout, tasks, tau, mean_kernel=kernax.VarianceKernel(3.0) * kernax.SEKernel(0.5)
    )
    np.testing.assert_allclose(np.asarray(own.mean_kernel.left.variance), 3.0, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(own.mean_kernel.right.length_scale), 0.5, rtol=1e-12)


def test_correlated_params_put_output_variances_on_the_coregionalisation_diagonal(start_data):
    tasks, tau, levels, var, span = start_data
    layout = SharingLayout.from_flags(3, 2, 1)  # one stacked output channel
    params = correlated_params(layout, tasks, tau)
    mean_k = index_module(params.mean_kernel, (0, 0)).kernel
    task_k = index_module(params.task_kernel, (0, 0, 0)).kernel
    np.testing.assert_allclose(np.asarray(mean_k.coregionalisation), np.diag(var), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(task_k.coregionalisation), np.diag(var / 4), rtol=1e-12)
    np.testing.assert_allclose(float(mean_k.inner.length_scale), span / 4, rtol=1e-12)
    np.testing.assert_allclose(float(task_k.inner.length_scale), span / 10, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(params.log_noise), np.log(0.05 * var.mean()), rtol=1e-12)
    # One learned level per cluster and output, at its weighted average.
    np.testing.assert_allclose(
        np.asarray(params.prior_mean.mean.constant)[:, 0], levels, rtol=1e-12
    )
