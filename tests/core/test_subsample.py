"""The start of large fits from one EM iteration on a subsample of the tasks."""

from __future__ import annotations

import dataclasses

import core_reference as ref
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import em
from mimosa_sklearn.core.parts import spread_tasks, subsample_tasks

T, N, K = 48, 6, 2
GRID = np.linspace(0.0, 7.0, 8)[:, None]


def _problem(seed: int = 0, shared_task_hps: bool = True):
    rng = np.random.default_rng(seed)
    offsets = np.where(np.arange(T) % 2 == 0, -2.0, 2.0) + 0.1 * rng.standard_normal(T)
    tasks = ref.make_tasks(rng, T, N, GRID, 3, N, hole_prob=0.0, offsets=offsets)
    layout = SharingLayout.from_flags(T, K, 1, shared_task_hps=shared_task_hps)
    params, _ = ref.random_params(rng, layout)
    tau = np.where((np.arange(T) % 2 == 0)[:, None], [0.7, 0.3], [0.3, 0.7])
    return tasks, params, tau


def _rows(tasks: ref.Tasks, index: np.ndarray) -> ref.Tasks:
    return dataclasses.replace(
        tasks, **{f: getattr(tasks, f)[index] for f in ("x", "y", "mask", "row", "mappings")}
    )


def _flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(eqx.filter(params, eqx.is_array))])


@pytest.fixture
def small_threshold(monkeypatch):
    # 16 of the 48 tasks, on fits of at least 32 task slots.
    monkeypatch.setattr(em, "SUBSAMPLE_TASKS", 16)
    monkeypatch.setattr(em, "SUBSAMPLE_MIN_TASKS", 32)


def test_spread_tasks_spaces_multiples_of_8_over_every_part():
    tasks, _, _ = _problem()
    one = ref.to_batch(tasks)
    (index,) = spread_tasks(one, 16)
    np.testing.assert_array_equal(index, 3 * np.arange(16))
    # Parts of 40 and 8 tasks: shares of 16 rounded up to multiples of 8, at most all.
    parts = (
        ref.to_batch(_rows(tasks, np.arange(40))),
        ref.to_batch(_rows(tasks, np.arange(40, 48))),
    )
    a, b = spread_tasks(parts, 16)
    np.testing.assert_array_equal(a, (np.arange(16) * 40) // 16)
    np.testing.assert_array_equal(b, np.arange(8))
    # Asking for more than there is gives every task once.
    (every,) = spread_tasks(one, 1000)
    np.testing.assert_array_equal(every, np.arange(T))


def test_subsample_tasks_takes_the_spread_rows_of_every_part():
    tasks, _, tau = _problem()
    parts = (
        ref.to_batch(_rows(tasks, np.arange(40))),
        ref.to_batch(_rows(tasks, np.arange(40, 48))),
    )
    sub, sub_tau = subsample_tasks(parts, jnp.asarray(tau), 16)
    a, b = spread_tasks(parts, 16)
    chosen = np.concatenate([a, 40 + b])
    expected = ref.to_batch(_rows(tasks, chosen))
    assert isinstance(sub, tuple) and [s.x.shape[0] for s in sub] == [16, 8]
    for field in ("x", "y", "mask", "mappings", "task_weight"):
        got = np.concatenate([np.asarray(getattr(s, field)) for s in sub])
        np.testing.assert_array_equal(got, np.asarray(getattr(expected, field)), err_msg=field)
    np.testing.assert_array_equal(np.asarray(sub[0].grid), np.asarray(parts[0].grid))
    np.testing.assert_array_equal(np.asarray(sub_tau), tau[chosen])


def test_subsample_start_is_one_em_iteration_on_the_subsample(small_threshold):
    tasks, params, tau = _problem()
    weights = jnp.asarray([0.5, 0.5])
    start = em.subsample_start(
        params, weights, jnp.asarray(tau), ref.to_batch(tasks), 1e-6, 20, 1e-3
    )
    # The same iteration on a batch built from the chosen tasks alone (tasks 0, 3, 6, ...).
    chosen = 3 * np.arange(16)
    sub = ref.to_batch(_rows(tasks, chosen))
    yes, no, jitter = jnp.asarray(True), jnp.asarray(False), jnp.asarray(1e-6)
    expected = em.em_iteration(
        params, weights, jnp.asarray(tau[chosen]), sub, jitter, no, 20, 1e-3, yes
    )[0]
    np.testing.assert_allclose(_flat(start), _flat(expected), rtol=1e-12)
    assert not np.allclose(_flat(start), _flat(params))  # it moved


@pytest.mark.parametrize("case", ["few tasks", "task-specific hps"])
def test_subsample_start_leaves_other_fits_alone(small_threshold, monkeypatch, case):
    tasks, params, tau = _problem(shared_task_hps=case != "task-specific hps")
    if case == "few tasks":
        monkeypatch.setattr(em, "SUBSAMPLE_MIN_TASKS", T + 1)
    batch, weights = ref.to_batch(tasks), jnp.asarray([0.5, 0.5])
    start = em.subsample_start(params, weights, jnp.asarray(tau), batch, 1e-6, 20, 1e-3)
    assert start is params


def test_run_em_from_the_subsample_start_reaches_the_same_fit(small_threshold):
    tasks, params, tau = _problem()
    batch = ref.to_batch(tasks)
    kwargs = dict(max_iter=300, tol=1e-9, max_steps=100)
    full = em.run_em(params, jnp.asarray(tau), batch, subsample=False, **kwargs)
    started = em.run_em(params, jnp.asarray(tau), batch, **kwargs)
    assert full.converged and started.converged
    # A different path (the first iterations differ) to the same optimum. (The task
    # lengthscale is not: these tasks are noise around their cluster's mean, so it
    # drifts along a flat direction of the ELBO.)
    assert abs(started.elbo_history[0] - full.elbo_history[0]) > 1e-6 * abs(full.elbo)
    np.testing.assert_allclose(started.elbo, full.elbo, rtol=1e-6)
    np.testing.assert_allclose(started.tau, full.tau, atol=1e-6)
    np.testing.assert_allclose(np.asarray(started.post.mean), np.asarray(full.post.mean), atol=1e-4)


def _fit_history(X, y, **kwargs):
    from mimosa_sklearn import MagmaClusterRegressor

    model = MagmaClusterRegressor(n_clusters=2, random_state=0, tol=1e-9, max_iter=300, **kwargs)
    return model.fit(X, y)


@pytest.mark.slow  # three whole fits to tol=1e-9 (9 s)
def test_the_approximate_grid_starts_from_the_subsample_too(small_threshold, monkeypatch):
    from mimosa_sklearn.datasets import make_magma_data

    X, y, _ = make_magma_data(n_tasks=T, n_points=6, n_clusters=2, random_state=0)
    started = _fit_history(X, y, grid=12)
    monkeypatch.setattr(em, "SUBSAMPLE_MIN_TASKS", 10**9)
    plain = _fit_history(X, y, grid=12)
    assert started.grid_choice_.kind == plain.grid_choice_.kind == "inducing"
    assert abs(started.elbo_[0] - plain.elbo_[0]) > 1e-6 * abs(plain.elbo_[-1])
    np.testing.assert_allclose(started.elbo_[-1], plain.elbo_[-1], rtol=1e-6)
    # A warm start already starts near the optimum: no subsample.
    monkeypatch.setattr(em, "SUBSAMPLE_MIN_TASKS", 32)
    calls = []
    monkeypatch.setattr(em, "subsample_tasks", lambda *a: calls.append(1) or ())
    started.set_params(warm_start=True).fit(X, y)
    assert not calls
