"""Fast paths give the general path's results: shared inputs, chunked task maps, sharding.

Shapes are tiny and few (JAX compile time dominates); every comparison is against the
general code path on the same data, to about 1e-8.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from padded_tasks import from_nan

from mimosa_sklearn import _batching, _fit, _fitted
from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import em, mstep, runtime
from mimosa_sklearn.core.compile import jit
from mimosa_sklearn.core.parallel import chunk_for, map_tasks
from mimosa_sklearn.core.params import TaskBatch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "core"))
import core_reference as ref  # noqa: E402

RTOL, ATOL = 1e-8, 1e-10
GRID = np.linspace(0.0, 5.0, 7)[:, None]


@pytest.fixture(autouse=True)
def _float64():
    with runtime.jax_scope():
        yield


@jit
def _core(params, weights, tau, batch, jitter):
    """E-step, ELBO, VM-step objective and its gradient: everything the fast paths touch."""
    post, new_tau, _ = em.e_step(params, weights, tau, batch, jitter, True)
    value = em.elbo(params, weights, new_tau, post, batch, jitter)
    shared = params.log_noise.shape[0] == 1 and batch.shared_inputs
    moments, mw = mstep.task_moments(batch, new_tau, post, params.log_noise.shape[1], shared)

    def objective(p):
        return mstep.total_objective(p, post, batch, moments, mw, jitter)

    obj, grad = eqx.filter_value_and_grad(objective)(params)
    return post.mean, post.cov, new_tau, value, obj, grad


def _shared_batch(rng, n_real: int, n_pad: int, n_outputs: int) -> TaskBatch:
    """``n_real`` tasks on the same 5 inputs (slots shuffled, one padded row, one hole
    in output 0), plus ``n_pad`` padded tasks as the fit's bucketing makes them."""
    g, n = GRID.shape[0], 6
    slots = rng.permutation(n)
    gidx = rng.choice(g, n - 1, replace=False)
    x1 = np.repeat(GRID[:1], n, axis=0)
    map1 = np.full(n, g)
    x1[slots[:-1]], map1[slots[:-1]] = GRID[gidx], gidx
    mask1 = np.repeat((map1 < g)[:, None], n_outputs, axis=1)
    mask1[slots[0], 0] = False
    t = n_real + n_pad
    real = np.arange(t) < n_real
    x = np.repeat(x1[None], t, axis=0)
    mask = real[:, None, None] & mask1[None]
    y = np.where(mask, np.sin(x) + rng.normal(size=(t, 1, n_outputs)), 0.0)
    return TaskBatch(
        x=jnp.asarray(x),
        y=jnp.asarray(y),
        mask=jnp.asarray(mask),
        mappings=jnp.asarray(np.where(real[:, None], map1[None], g), jnp.int32),
        grid=jnp.asarray(GRID),
        grid_mask=jnp.ones(g, bool),
        task_weight=jnp.asarray(real, jnp.float64),
        shared_inputs=True,
    )


def _assert_same(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=RTOL, atol=ATOL)


def test_shared_input_fast_path_equals_general_path():
    # Cluster-specific task covariances (Kt = K): the per-cluster weights of the summed
    # moments; the shared Kt = 1 case is covered by the full fit below.
    cluster_specific = True
    rng = np.random.default_rng(0)
    k, n_out = 2, 2
    batch = _shared_batch(rng, 5, 3, n_out)
    layout = SharingLayout.from_flags(
        1, k, n_out, cluster_specific_task_hps=cluster_specific, shared_output_hps=False
    )
    params, _ = ref.random_params(rng, layout)
    tau = jnp.asarray(rng.dirichlet(np.ones(k), size=batch.x.shape[0]))
    weights = jnp.asarray([0.4, 0.6])
    fast = _core(params, weights, tau, batch, 1e-6)
    general = _core(params, weights, tau, dataclasses.replace(batch, shared_inputs=False), 1e-6)
    _assert_same(fast, general)


def test_chunked_task_maps_equal_one_vmap():
    # Task-specific hyperparameters: the chunks also carry the per-task kernels.
    rng = np.random.default_rng(1)
    t, k = 8, 2
    tasks = ref.make_tasks(rng, t, 6, GRID, 2, 6, n_outputs=2, hole_prob=0.3)
    batch = ref.to_batch(tasks, task_weight=(np.arange(t) < 6).astype(float))
    layout = SharingLayout.from_flags(t, k, 2, shared_task_hps=False, shared_output_hps=False)
    params, _ = ref.random_params(rng, layout)
    tau = jnp.asarray(rng.dirichlet(np.ones(k), size=t))
    weights = jnp.asarray([0.5, 0.5])
    whole = _core(params, weights, tau, batch, 1e-6)
    chunked = _core(params, weights, tau, dataclasses.replace(batch, task_chunk=4), 1e-6)
    _assert_same(whole, chunked)


def test_map_tasks_matches_vmap_with_strided_chunks():
    xs = (jnp.arange(24.0).reshape(12, 2), jnp.arange(12))
    fn = lambda a: (a[0] * a[1], jnp.sum(a[0]))  # noqa: E731
    _assert_same(jax.vmap(fn)(xs), map_tasks(fn, xs, 4))
    _assert_same(jax.vmap(fn)(xs), map_tasks(fn, xs, 5))  # falls back to a divisor (4)
    assert chunk_for(1000, 256) == 200 and chunk_for(12, 5) == 4 and chunk_for(8, 0) == 8


def _shared_data(n_tasks: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x1 = np.linspace(0.0, 5.0, 6)[:, None]
    x = np.repeat(x1[None], n_tasks, axis=0)
    y = np.sin(x) + rng.normal(size=(n_tasks, 1, 1)) + 0.1 * rng.normal(size=x.shape)
    y[:, 2, 0] = np.nan  # same hole in every task
    return x, y, np.repeat(np.arange(6)[None], n_tasks, axis=0), x1


def _fit_summary(model: _fitted.FittedMagma, x):
    x_pred = from_nan(np.repeat(x[:1], 3, axis=0))
    mean, var, tau = model.predict_training_tasks(np.arange(3), x_pred)
    hps = model.hyperparameters()
    return [model.elbo_history, mean, var, tau] + [hps[key] for key in sorted(hps)]


def test_fit_with_shared_inputs_equals_general_fit(monkeypatch):
    x, y, maps, grid = _shared_data(11)
    tasks = from_nan(x, y, maps)
    assert _batching.shared_inputs(tasks)
    config = _fit.FitConfig(n_clusters=2, max_iter=3, tol=0.0, max_steps=10)
    fast = _fit.fit_magma(tasks, grid, config)
    assert fast.batch.shared_inputs and fast.batch.x.shape[0] == 16
    monkeypatch.setattr(_batching, "shared_inputs", lambda *args: False)
    general = _fit.fit_magma(tasks, grid, config)
    assert not general.batch.shared_inputs
    _assert_same(_fit_summary(fast, x), _fit_summary(general, x))


_SNIPPET_SHARDED = textwrap.dedent(
    """
    import warnings
    import numpy as np
    import jax
    from mimosa_sklearn import _fit
    from mimosa_sklearn._padded import scatter
    from mimosa_sklearn.core import runtime
    assert len(jax.devices()) == 2, jax.devices()
    rng = np.random.default_rng(0)
    n = 13
    x = np.sort(rng.uniform(0, 5, size=(n, 5, 1)), axis=1)
    y = np.sin(x) + rng.normal(size=(n, 1, 1)) + 0.1 * rng.normal(size=x.shape)
    grid, maps = np.unique(x.reshape(-1, 1), axis=0, return_inverse=True)
    rows = (np.repeat(np.arange(n), 5), np.tile(np.arange(5), n))
    tasks = scatter(*rows, n, x.reshape(-1, 1), y.reshape(-1, 1), maps.reshape(-1))
    base = dict(max_iter=2, tol=0.0, max_steps=5)
    if runtime.jaxlib_is_exposed():
        # Two CPU devices share one two-thread pool there: batched LAPACK calls on both
        # can deadlock, so the fit refuses to shard by default...
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fit._device_mesh(True)
        assert any("Not sharding" in str(w.message) for w in caught)
        # ...and the forced sharded fit keeps one task per device in every batched
        # factorisation (K = 1, chunks of 2 tasks), which never splits a batch.
        config = dict(base, n_clusters=1, task_chunk=2)
        shard = "force"
    else:
        config = dict(base, n_clusters=2, task_chunk=8)
        shard = True
    out = {}
    for flag in (shard, False):
        model = _fit.fit_magma(tasks, grid, _fit.FitConfig(shard_tasks=flag, **config))
        out[bool(flag)] = (len(model.batch.x.sharding.device_set), model.elbo_history,
                           np.asarray(model.post.mean), model.tau)
    assert out[True][0] == 2 and out[False][0] == 1
    # Sums over tasks run per device, then across: equal up to round-off (seen: 3e-10).
    for a, b in zip(out[True][1:], out[False][1:]):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    print("sharded ok", out[True][1])
    """
)


@pytest.mark.slow
def test_sharded_fit_on_two_cpu_devices_equals_one_device():
    """Task axis split over two CPU devices (a fresh process: the device count is fixed
    when JAX starts; the jaxlib-0.10 CPU guard of ``core.runtime`` is active there too)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run(
        [sys.executable, "-c", _SNIPPET_SHARDED],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sharded ok" in out.stdout
