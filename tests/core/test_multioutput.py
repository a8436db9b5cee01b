"""Correlated outputs on stacked inputs (:mod:`mimosa_sklearn.core.multioutput`).

``tests/test_correlated_outputs.py`` checks one ICM kernel entry-wise on one input set.
Proven here against matrices built by hand:

* ``output_ids`` rounds the last input column and clips it into ``[0, P)``;
* ``StackedOutputKernel`` over output-major stacked inputs is the block matrix
  ``[B_pq k(x, x')]_pq`` (``kron(B, K)``) for ICM and the sum of such blocks for LCM,
  cross-covariances included, and its distance never sees the output column;
* ``PerOutputMean`` gives each row its own output's mean (affine means by hand), also
  when stacked per cluster as the core stacks prior means.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import kernax
import numpy as np
from core_reference import se

from mimosa_sklearn.core import multioutput as mo
from mimosa_sklearn.core.params import eval_mean, stack_module

P = 3


def _stack(x: np.ndarray, n_outputs: int) -> np.ndarray:
    """Output-major stacked inputs: every row of ``x`` once per output, ``(P N, I + 1)``."""
    return np.concatenate([np.c_[x, np.full(len(x), p)] for p in range(n_outputs)])


def _icm(rng, length_scale: float):
    icm = kernax.ICMKernel(kernax.SEKernel(length_scale), P, 2)
    return icm.replace(W=rng.normal(size=(P, 2)), kappa=rng.uniform(0.2, 1.0, P))


def test_output_ids_round_and_clip_the_last_column():
    x = jnp.asarray([[5.0, 0.2], [5.0, 0.9], [5.0, 1.4], [5.0, -3.0], [5.0, 7.6], [5.0, 2.0]])
    ids = mo.output_ids(x, P)
    assert ids.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(ids), [0, 1, 1, 0, 2, 2])


def test_icm_on_stacked_inputs_is_the_kronecker_block_matrix():
    rng = np.random.default_rng(0)
    icm = _icm(rng, 0.8)
    b = np.asarray(icm.coregionalisation)
    x1, x2 = rng.normal(size=(4, 2)), rng.normal(size=(3, 2))
    kernel = mo.StackedOutputKernel(icm, P)
    cross = np.asarray(kernel(jnp.asarray(_stack(x1, P)), jnp.asarray(_stack(x2, P))))
    np.testing.assert_allclose(cross, np.kron(b, se(x1, x2, 1.0, 0.8)), rtol=1e-12)
    # x2 = None: the symmetric block matrix of x1 with itself.
    own = np.asarray(kernel(jnp.asarray(_stack(x1, P))))
    np.testing.assert_allclose(own, np.kron(b, se(x1, x1, 1.0, 0.8)), rtol=1e-12)
    # Row order is free: a permutation of the rows permutes the matrix.
    perm = rng.permutation(4 * P)
    shuffled = np.asarray(kernel(jnp.asarray(_stack(x1, P)[perm])))
    np.testing.assert_allclose(shuffled, own[np.ix_(perm, perm)], rtol=1e-12)


def test_lcm_on_stacked_inputs_is_a_sum_of_kronecker_block_matrices():
    rng = np.random.default_rng(1)
    ws = [rng.normal(size=(P, 1)), rng.normal(size=(P, 2))]
    lcm = kernax.LCMKernel([kernax.SEKernel(0.5), kernax.SEKernel(2.0)], ws, kappas=[0.3, 0.7])
    x1, x2 = rng.normal(size=(3, 1)), rng.normal(size=(2, 1))
    got = np.asarray(
        mo.StackedOutputKernel(lcm, P)(jnp.asarray(_stack(x1, P)), jnp.asarray(_stack(x2, P)))
    )
    want = sum(
        np.kron(w @ w.T + kappa * np.eye(P), se(x1, x2, 1.0, ls))
        for w, kappa, ls in zip(ws, [0.3, 0.7], [0.5, 2.0], strict=True)
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_per_output_mean_gives_each_row_its_own_output_mean():
    rng = np.random.default_rng(2)
    slope, intercept = rng.normal(size=(P, 2)), rng.normal(size=P)
    mean = mo.PerOutputMean(kernax.AffineMean(slope, intercept), P)
    x = rng.normal(size=(4, 2))
    stacked = _stack(x, P)[rng.permutation(4 * P)]
    ids = stacked[:, -1].astype(int)
    got = np.asarray(mean(jnp.asarray(stacked)))
    want = np.sum(slope[ids] * stacked[:, :2], axis=1) + intercept[ids]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_per_output_mean_stacked_per_cluster_as_the_core_evaluates_it():
    # The core stacks prior means to (K, O* = 1) and evaluates them with eval_mean.
    levels = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])  # (K, P)
    mean = stack_module(mo.PerOutputMean(kernax.ConstantMean(np.zeros(P)), P), (2, 1))
    mean = eqx.tree_at(lambda m: m.mean.constant, mean, jnp.asarray(levels[:, None, :]))
    x = jnp.asarray([[0.3, 2.0], [0.3, 0.0], [1.7, 1.0], [4.0, 0.0]])
    got = np.asarray(eval_mean(mean, 2, x))
    assert got.shape == (2, 1, 4)
    np.testing.assert_array_equal(got[:, 0], levels[:, [2, 0, 1, 0]])
