"""SQUAREM extrapolation of the EM map (core.accelerate) and its use in run_em."""

from __future__ import annotations

import core_reference as ref
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import em
from mimosa_sklearn.core.accelerate import squarem_point

T, K, N = 7, 3, 6
GRID = np.linspace(0.0, 7.0, 8)[:, None]


def _flat(params) -> np.ndarray:
    return np.asarray(ravel_pytree(eqx.filter(params, eqx.is_inexact_array))[0])


def _with_flat(params, flat: np.ndarray):
    dyn, static = eqx.partition(params, eqx.is_inexact_array)
    _, unravel = ravel_pytree(dyn)
    return eqx.combine(unravel(jnp.asarray(flat)), static)


def _three_states(seed: int):
    rng = np.random.default_rng(seed)
    layout = SharingLayout.from_flags(T, K, 1, shared_task_hps=False)
    states = []
    for _ in range(3):
        params, _ = ref.random_params(rng, layout)
        states.append((params, jnp.asarray(rng.dirichlet(np.ones(K), size=T))))
    return states


def _step(r: np.ndarray, v: np.ndarray, max_step: float) -> float:
    return float(np.clip(-np.sqrt(r @ r / (v @ v)), -max_step, -1.0))


@pytest.mark.parametrize("max_step", [1.5, 1e6])
def test_squarem_point_matches_numpy(max_step):
    states = _three_states(0)
    weight = np.r_[np.ones(T - 1), 0.0]  # the last task is padding
    params, weights, tau, step = squarem_point(tuple(states), jnp.asarray(weight), max_step)
    xs = [np.r_[_flat(p), np.log(np.asarray(t)).ravel()] for p, t in states]
    r, v = xs[1] - xs[0], xs[2] - 2 * xs[1] + xs[0]
    a = _step(r, v, max_step)
    x = xs[0] - 2 * a * r + a**2 * v
    n = _flat(states[0][0]).size
    log_tau = x[n:].reshape(T, K)
    tau_np = np.exp(log_tau) / np.exp(log_tau).sum(1, keepdims=True)
    np.testing.assert_allclose(float(step), a, rtol=1e-12)
    np.testing.assert_allclose(_flat(params), x[:n], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(tau), tau_np, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(
        np.asarray(weights), (weight[:, None] * tau_np).sum(0) / weight.sum(), rtol=1e-10
    )
    # The structure (kernels, static fields) is that of the inputs.
    assert jax.tree.structure(params) == jax.tree.structure(states[2][0])


def test_squarem_point_solves_a_linear_contraction_in_one_step():
    # x_{n+1} = x* + lam (x_n - x*): r = (lam - 1) e, v = (lam - 1)^2 e and the step
    # -|r|/|v| = -1/(1 - lam) lands exactly on x* (unclipped: lam = 0.6 gives -2.5).
    (p0, tau), (target, _), _ = _three_states(1)
    lam, e0, star = 0.6, _flat(p0) - _flat(target), _flat(target)
    states = tuple((_with_flat(p0, star + lam**n * e0), tau) for n in range(3))
    params, _, new_tau, step = squarem_point(states, jnp.ones(T), 10.0)
    np.testing.assert_allclose(float(step), -1.0 / (1.0 - lam), rtol=1e-12)
    np.testing.assert_allclose(_flat(params), star, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(new_tau), np.asarray(tau), rtol=1e-12)
    # Clipped at 2 it only goes part of the way: x0 - 2a r + a^2 v with a = -2.
    params, _, _, step = squarem_point(states, jnp.ones(T), 2.0)
    e = e0 * (1 + 2 * 2 * (lam - 1) + 4 * (lam - 1) ** 2)
    assert float(step) == -2.0
    np.testing.assert_allclose(_flat(params), star + e, rtol=1e-10, atol=1e-12)


def _slow_problem(seed: int = 0):
    """Two overlapping groups of tasks: plain EM creeps to its fixed point."""
    rng = np.random.default_rng(seed)
    t = 12
    offsets = np.where(np.arange(t) % 2 == 0, -0.6, 0.6) + 0.3 * rng.standard_normal(t)
    tasks = ref.make_tasks(rng, t, N, GRID, 3, N, n_outputs=1, hole_prob=0.0, offsets=offsets)
    params, _ = ref.random_params(rng, SharingLayout.from_flags(t, 2, 1))
    tau0 = jnp.asarray(np.where((np.arange(t) % 3 == 0)[:, None], [0.6, 0.4], [0.4, 0.6]))
    return params, tau0, ref.to_batch(tasks)


def test_dropped_extrapolations_leave_plain_em_unchanged(monkeypatch):
    """A proposal whose EM iteration is not finite is dropped and not counted: the fit is
    then the plain one, iteration for iteration."""
    params, tau0, batch = _slow_problem()
    kwargs = dict(max_iter=8, tol=0.0, max_steps=20)
    plain = em.run_em(params, tau0, batch, accelerate=False, **kwargs)
    calls = []

    def poisoned(states, task_weight, max_step):
        p, w, t, _ = squarem_point(states, task_weight, max_step)
        calls.append(float(max_step))
        nan = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), eqx.filter(p, eqx.is_inexact_array))
        return eqx.combine(nan, p), w, t, jnp.asarray(-3.0)

    monkeypatch.setattr(em, "squarem_point", poisoned)
    with np.errstate(invalid="ignore"):
        result = em.run_em(params, tau0, batch, accelerate=True, **kwargs)
    assert len(calls) >= 2
    assert calls[1] == 1.0  # a dropped step of 3 shrinks the bound to max(1, 3/4)
    assert result.n_iter == plain.n_iter == 8
    np.testing.assert_allclose(result.elbo_history, plain.elbo_history, rtol=1e-12)
    np.testing.assert_allclose(result.tau, plain.tau, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(_flat(result.params), _flat(plain.params), rtol=1e-10)


def test_accelerated_em_reaches_the_same_fixed_point_in_far_fewer_iterations():
    # Measured: plain EM needs 102 iterations to tol=1e-7 here, SQUAREM 55 (181 and 61
    # when one L-BFGS run optimised all hyperparameters together: the two runs of
    # mstep.m_step already take the plain EM there in fewer iterations).
    params, tau0, batch = _slow_problem()
    kwargs = dict(max_iter=250, tol=1e-7, max_steps=50)
    plain = em.run_em(params, tau0, batch, accelerate=False, **kwargs)
    fast = em.run_em(params, tau0, batch, accelerate=True, **kwargs)
    assert plain.converged and fast.converged
    assert fast.n_iter < 0.6 * plain.n_iter, (fast.n_iter, plain.n_iter)
    np.testing.assert_allclose(fast.elbo, plain.elbo, rtol=1e-5)
    np.testing.assert_allclose(fast.tau, plain.tau, atol=1e-3)
    hist = fast.elbo_history
    assert np.all(np.diff(hist) >= -1e-9 * np.abs(hist[1:])), hist
    # The same first three (plain) iterations before the first extrapolation.
    np.testing.assert_allclose(hist[:3], plain.elbo_history[:3], rtol=1e-12)
