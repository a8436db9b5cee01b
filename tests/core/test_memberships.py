"""Responsibilities in log space (ALGORITHM.md §2.2b, §8.3)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.special import softmax

from mimosa_sklearn.core import memberships as mb
from mimosa_sklearn.core.compile import jit

responsibilities = jit(mb.responsibilities)
log_responsibilities = jit(mb.log_responsibilities)
entropy_term = jit(mb.entropy_term)

T, K = 6, 3


def _problem(seed: int, scale: float = 1.0, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(K))
    nll = offset + scale * rng.standard_normal((T, K))
    return rng, weights, nll


def test_responsibilities_equal_softmax_and_rows_sum_to_one():
    _, weights, nll = _problem(0, scale=3.0)
    tau = np.asarray(responsibilities(jnp.asarray(weights), jnp.asarray(nll)))
    expected = softmax(np.log(weights)[None] - nll, axis=1)
    np.testing.assert_allclose(tau, expected, rtol=1e-12)
    np.testing.assert_allclose(tau.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    log_tau = np.asarray(log_responsibilities(jnp.asarray(weights), jnp.asarray(nll)))
    np.testing.assert_allclose(log_tau, np.log(expected), rtol=1e-12)


def test_no_nan_at_log_likelihoods_around_minus_1e5():
    # exp(-1e5) underflows: a naive normalisation gives 0/0.
    _, weights, nll = _problem(1, scale=50.0, offset=1e5)
    tau = np.asarray(responsibilities(jnp.asarray(weights), jnp.asarray(nll)))
    assert np.all(np.isfinite(tau))
    np.testing.assert_allclose(tau.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    shifted = nll - nll.min(axis=1, keepdims=True)
    np.testing.assert_allclose(tau, softmax(np.log(weights)[None] - shifted, axis=1), atol=1e-12)


def test_invariant_to_per_task_constants():
    rng, weights, nll = _problem(2, scale=2.0)
    base = np.asarray(responsibilities(jnp.asarray(weights), jnp.asarray(nll)))
    shift = rng.uniform(-1e4, 1e4, size=(T, 1))
    moved = np.asarray(responsibilities(jnp.asarray(weights), jnp.asarray(nll + shift)))
    np.testing.assert_allclose(moved, base, rtol=1e-9, atol=1e-12)
    # A per-cluster constant is not a symmetry: it must change tau.
    other = np.asarray(
        responsibilities(jnp.asarray(weights), jnp.asarray(nll + np.array([0.0, 1.0, 2.0])))
    )
    assert not np.allclose(other, base)


def test_hard_assignments_for_separated_clusters():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, K, size=T)
    nll = 1e3 + 800.0 * (np.arange(K)[None] != labels[:, None]) + rng.standard_normal((T, K))
    tau = np.asarray(responsibilities(jnp.ones(K) / K, jnp.asarray(nll)))
    np.testing.assert_array_equal(tau, np.eye(K)[labels])


def test_empty_cluster_weight_stays_finite():
    # pi_k = 0 is floored: log(pi) stays finite and the empty cluster gets ~0 mass.
    weights = np.array([0.5, 0.5, 0.0])
    tau = np.asarray(responsibilities(jnp.asarray(weights), jnp.zeros((T, K))))
    assert np.all(np.isfinite(tau))
    assert np.all(tau[:, 2] < 1e-11)
    np.testing.assert_allclose(tau[:, :2], 0.5, rtol=1e-11)


def test_entropy_term_matches_numpy_with_zero_convention():
    rng = np.random.default_rng(4)
    tau = rng.dirichlet(np.ones(K), size=T)
    tau[0] = [1.0, 0.0, 0.0]  # 0 log(pi / 0) = 0
    weights = tau.mean(axis=0)
    safe = np.where(tau > 0, tau, 1.0)
    expected = np.sum(np.where(tau > 0, tau * (np.log(weights)[None] - np.log(safe)), 0.0))
    got = float(entropy_term(jnp.asarray(tau), jnp.asarray(weights)))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
