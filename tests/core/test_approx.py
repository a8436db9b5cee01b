"""Approximate grid on inducing inputs (:mod:`mimosa_sklearn.core.approx`) against numpy.

``tests/test_approx_grid.py`` checks that a one-hot projection reproduces the exact
path. Proven here, on continuous task inputs, padded rows, holes and padded inducing
inputs:

* ``projection_kernel`` averages the log hyperparameters over the sharing axes (the
  geometric mean of the variances and length scales);
* ``projection_matrix`` is ``A_i = c(t_i, u) (c(u, u) + eps I)^{-1}`` computed in numpy
  (``eps = jitter * max(mean diag, 1)``), zero on rows without an observation and on
  padded inducing inputs, and interpolates (one-hot rows) at the inducing inputs;
* ``with_projection`` replaces the mappings and nothing else;
* ``prior_offsets`` is ``m_k(t_i) - A_i m_k(u)`` per output, zero where an output is
  not observed, and None on the exact grid.
"""

from __future__ import annotations

import core_reference as ref
import equinox as eqx
import jax
import jax.numpy as jnp
import kernax
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import approx, runtime
from mimosa_sklearn.core.compile import jit
from mimosa_sklearn.core.params import TaskBatch, stack_module

T, N, NOUT, K = 3, 5, 2, 2
INDUCING = np.linspace(0.0, 4.0, 5)[:, None]
M = INDUCING.shape[0]
PAD = 2  # padded inducing inputs

projection_matrix = jit(approx.projection_matrix)
prior_offsets = jit(approx.prior_offsets)

# Mean-kernel values per cluster (not shared): the projection uses their geometric mean.
MEAN_VAR = np.array([[0.5], [2.0]])
MEAN_LS = np.array([[0.9], [1.6]])


@pytest.fixture(scope="module")
def setup():
    with runtime.jax_scope():  # module fixtures run outside the per-test float64 context
        return _setup()


def _setup():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 4.0, size=(T, N, 1))
    x[0, 1] = INDUCING[3]  # one input on an inducing input: A interpolates there
    row = np.ones((T, N), bool)
    row[1, 4] = row[2, 0] = False  # padded rows, not trailing
    x[~row] = INDUCING[0]
    mask = row[..., None] & (rng.random((T, N, NOUT)) > 0.3)
    mask[0, 1] = True
    mask[0, 2] = [True, False]  # a row observed for one output only keeps its projection
    y = np.where(mask, rng.normal(size=(T, N, NOUT)), 0.0)
    grid = np.concatenate([INDUCING, np.repeat(INDUCING[:1], PAD, axis=0)])
    batch = TaskBatch(
        x=jnp.asarray(x),
        y=jnp.asarray(y),
        mask=jnp.asarray(mask),
        mappings=jnp.zeros((T, N), jnp.int32),  # integer: the exact grid
        grid=jnp.asarray(grid),
        grid_mask=jnp.asarray(np.arange(M + PAD) < M),
        task_weight=jnp.ones(T),
    )
    layout = SharingLayout.from_flags(T, K, NOUT, shared_cluster_hps=False)
    vals = ref.NpParams(
        mean_var=MEAN_VAR,
        mean_ls=MEAN_LS,
        prior=np.zeros(layout.prior),
        task_var=np.ones(layout.task),
        task_ls=np.ones(layout.task),
        noise=np.ones(layout.task),
    )
    params = ref.params_from_values(layout, vals)
    # An input-dependent prior mean: the offsets do not vanish.
    slope, intercept = rng.normal(size=(K, 1)), rng.normal(size=(K, 1))
    prior = stack_module(kernax.AffineMean(0.0, 0.0), layout.prior)
    prior = eqx.tree_at(lambda m: (m.slope, m.intercept), prior, (slope, intercept))
    params = eqx.tree_at(lambda p: p.prior_mean, params, prior)
    return batch, params, x, mask, slope, intercept


def _np_projection(x: np.ndarray, row: np.ndarray, jitter: float) -> np.ndarray:
    """``c(t_i, u) (c(u, u) + eps I)^{-1}`` with the geometric-mean kernel, (T, N, M + PAD)."""
    var, ls = np.exp(np.log(MEAN_VAR).mean()), np.exp(np.log(MEAN_LS).mean())
    cuu = ref.se(INDUCING, INDUCING, var, ls)
    cuu += jitter * max(var, 1.0) * np.eye(M)
    out = np.zeros((T, N, M + PAD))
    for i in range(T):
        out[i, :, :M] = ref.se(x[i], INDUCING, var, ls) @ np.linalg.inv(cuu)
    return np.where(row[..., None], out, 0.0)


def test_projection_kernel_is_the_geometric_mean_kernel(setup):
    _, params, *_ = setup
    kernel = approx.projection_kernel(params)
    assert all(np.ndim(a) == 0 for a in jax.tree.leaves(kernel))
    np.testing.assert_allclose(float(kernel.left.variance), 1.0, rtol=1e-14)  # sqrt(0.5 * 2)
    np.testing.assert_allclose(float(kernel.right.length_scale), np.sqrt(0.9 * 1.6), rtol=1e-14)
    # A shared kernel is itself.
    layout = SharingLayout.from_flags(T, K, NOUT)
    ones = np.ones(layout.task)
    vals = ref.NpParams(
        np.full(layout.mean, 0.7),
        np.full(layout.mean, 1.3),
        np.zeros(layout.prior),
        ones,
        ones,
        ones,
    )
    shared = ref.params_from_values(layout, vals)
    one = approx.projection_kernel(shared)
    np.testing.assert_allclose(float(one.left.variance), 0.7, rtol=1e-14)
    np.testing.assert_allclose(float(one.right.length_scale), 1.3, rtol=1e-14)


@pytest.mark.parametrize("jitter", [1e-2, 0.0])
def test_projection_matrix_equals_numpy(setup, jitter):
    batch, params, x, mask, *_ = setup
    got = np.asarray(projection_matrix(params, batch, jitter))
    row = mask.any(-1)
    assert got.shape == (T, N, M + PAD)
    np.testing.assert_allclose(got, _np_projection(x, row, jitter), rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(got[~row], 0.0)
    np.testing.assert_array_equal(got[..., M:], 0.0)
    assert np.abs(got[0, 2]).max() > 0.1  # observed for one output only
    if jitter == 0.0:  # without jitter the projection interpolates the inducing values
        np.testing.assert_allclose(got[0, 1], np.eye(M + PAD)[3], atol=1e-8)


def test_with_projection_replaces_the_mappings_only(setup):
    batch, params, *_ = setup
    new = approx.with_projection(params, batch, 1e-2)
    np.testing.assert_array_equal(
        np.asarray(new.mappings), np.asarray(projection_matrix(params, batch, 1e-2))
    )
    for name in ("x", "y", "mask", "grid", "grid_mask", "task_weight"):
        assert getattr(new, name) is getattr(batch, name), name


def test_prior_offsets_are_the_prior_mean_minus_its_projection(setup):
    batch, params, x, mask, slope, intercept = setup
    assert approx.prior_offsets(params, batch) is None  # integer mappings: the exact grid
    proj = approx.with_projection(params, batch, 1e-2)
    a = np.asarray(proj.mappings)
    got = np.asarray(prior_offsets(params, proj))
    assert got.shape == (T, K, NOUT, N)
    want = np.zeros((T, K, NOUT, N))
    for i in range(T):
        for k in range(K):
            m_t = slope[k, 0] * x[i, :, 0] + intercept[k, 0]
            m_u = slope[k, 0] * INDUCING[:, 0] + intercept[k, 0]
            d = m_t - a[i, :, :M] @ m_u
            for o in range(NOUT):
                want[i, k, o] = np.where(mask[i, :, o], d, 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.abs(want).max() > 0.1  # the offsets do not vanish
