"""L-BFGS over a pytree (:mod:`mimosa_sklearn.core.optimise`) on known minima.

Proven here:

* ``minimise`` reaches the minimiser and minimum of a coupled, ill-scaled quadratic
  whose variables are split over pytree leaves of different shapes (so the raveling
  and unraveling keep every leaf in place), and of Rosenbrock's function;
* ``args`` reach the objective; the returned value is the objective at the returned
  pytree and never above the start, also when ``max_steps`` stops the run early;
* a non-finite objective gives back the starting pytree and a non-finite value.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from mimosa_sklearn.core.compile import jit
from mimosa_sklearn.core.optimise import minimise

minimise_jit = jit(minimise)

# A coupled quadratic on 5 variables, condition number ~100: 0.5 (v - c)^T A (v - c) + 3.
_RNG = np.random.default_rng(0)
_Q = np.linalg.qr(_RNG.normal(size=(5, 5)))[0]
A = _Q @ np.diag([100.0, 20.0, 5.0, 1.0, 1.0]) @ _Q.T
C = np.array([1.0, -2.0, 0.5, 3.0, -1.0])


def _start():
    # Built inside the test: module-level arrays would be float32 (x64 is per test).
    return {"scale": jnp.zeros(()), "weights": jnp.zeros((2, 2))}


def _quadratic(tree, target):
    v = ravel_pytree(tree)[0] - target
    return 0.5 * v @ jnp.asarray(A) @ v + 3.0


def _rosenbrock(tree, _):
    x, y = tree
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def test_minimise_reaches_the_minimum_of_a_quadratic_over_a_pytree():
    new, value, steps = minimise_jit(_quadratic, _start(), jnp.asarray(C), 200, 1e-10)
    # ravel_pytree orders the leaves by key: "scale" first, then "weights" row-major.
    np.testing.assert_allclose(float(new["scale"]), C[0], rtol=1e-7)
    np.testing.assert_allclose(np.asarray(new["weights"]), C[1:].reshape(2, 2), rtol=1e-7)
    assert new["weights"].shape == (2, 2)
    np.testing.assert_allclose(float(value), 3.0, rtol=1e-12)
    assert 0 < int(steps) < 200
    # The target comes in through args: another target, another minimiser.
    other, _, _ = minimise_jit(_quadratic, _start(), jnp.asarray(-C), 200, 1e-10)
    np.testing.assert_allclose(float(other["scale"]), -C[0], rtol=1e-7)


def test_minimise_reaches_the_minimum_of_rosenbrock():
    # optimistix's backtracking L-BFGS needs ~700 steps (counting rejected trial
    # steps) along the curved valley from the classic start.
    start = (jnp.asarray(-1.2), jnp.asarray(1.0))
    (x, y), value, steps = minimise_jit(_rosenbrock, start, None, 2000, 1e-10)
    np.testing.assert_allclose([float(x), float(y)], [1.0, 1.0], atol=1e-6)
    assert float(value) < 1e-12 and int(steps) < 2000


@pytest.mark.parametrize("max_steps", [1, 3])
def test_a_capped_run_returns_its_value_and_never_rises(max_steps):
    start = (jnp.asarray(-1.2), jnp.asarray(1.0))
    new, value, steps = minimise_jit(_rosenbrock, start, None, max_steps, 1e-12)
    assert int(steps) == max_steps
    np.testing.assert_allclose(float(value), float(_rosenbrock(new, None)), rtol=1e-12)
    assert float(value) < float(_rosenbrock(start, None))


def test_a_non_finite_objective_falls_back_to_the_start():
    start = {"a": jnp.asarray([0.5, -1.0]), "b": jnp.asarray(2.0)}

    def broken(tree, _):
        return jnp.sum(tree["a"] ** 2) + jnp.log(-tree["b"])  # NaN everywhere near b = 2

    new, value, _ = minimise_jit(broken, start, None, 20, 1e-8)
    assert not np.isfinite(float(value))
    np.testing.assert_array_equal(np.asarray(new["a"]), [0.5, -1.0])
    assert float(new["b"]) == 2.0
